"""Split a large prompt into chunks at semantic boundaries, with shared context and overlap.

Boundaries, strongest first: Markdown headings, lists, paragraphs (and fenced blocks and tables as whole
units), list items, lines inside an oversized fence or table, sentences, tokens. The packer fills a chunk
up to its token budget and then cuts at the strongest boundary in the chunk's second half.

Guarantees (property-tested in tests/tasks/decomposition/test_splitting.py):
- every chunk's text (overlap and synthetic fence/table lines included) fits the token budget;
- nothing is lost: the chunks' own texts, in order, reassemble the body exactly;
- a fenced code block or table is never cut: one too big for a chunk is split at line boundaries, with
  the fence closed and reopened with the same opening line, or with the table header repeated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tasks.decomposition.tokens import TokenCounter
from tasks.errors import PlanningError

# Strength of the boundary *before* an atom; the packer cuts at the strongest one it can.
HEADING_STRENGTH = {1: 95, 2: 90, 3: 85, 4: 80, 5: 75, 6: 70}
LIST_BOUNDARY = 60
BLOCK_BOUNDARY = 50
LIST_ITEM = 45
STRUCTURE_LINE = 30
SENTENCE = 20
TOKEN = 0

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+|$)(.*)$")
_LIST_ITEM = re.compile(r"^(?P<indent>[ \t]*)(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
_MAYBE_BLOCK = re.compile(r"^[ \t]*[`~#*+\-0-9]")
_TABLE_DELIMITER = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
# A sentence ends at . ! ? (optionally closed by quotes or brackets) followed by whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


@dataclass(frozen=True, slots=True)
class Structure:
    """A fence or table that had to be split: what a continuation chunk repeats and appends."""

    kind: str  # "fence" | "table"
    reopen: str  # the fence's opening line, or the table's header and delimiter rows
    close: str  # the closing fence line ("" for tables)


@dataclass(slots=True)
class Atom:
    """The smallest unit the packer moves: whole blocks where they fit, else their lines or sentences."""

    text: str
    strength: int
    section: str
    tokens: int = 0
    structure: Structure | None = None
    is_opening: bool = False  # the fence's own opening line / the table's own header
    is_closing: bool = False  # the fence's own closing line
    is_whole_structure: bool = False  # a whole fence or table: repeated entirely or not at all


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    section: str  # the heading path where the chunk starts, e.g. "Install > Linux"
    start: int  # offset of own_text in the body
    end: int
    prefix: str  # synthetic: a reopened fence line or a repeated table header
    overlap_text: str  # the end of the previous chunk, repeated for context
    own_text: str
    suffix: str  # synthetic: the closing fence of a fence that continues in the next chunk
    tokens: int  # exact tokens of `text`

    @property
    def text(self) -> str:
        return f"{self.prefix}{self.overlap_text}{self.own_text}{self.suffix}"


@dataclass(slots=True)
class _Block:
    kind: str  # heading | fence | table | list | paragraph
    text: str
    strength: int
    section: str
    lines: list[str] = field(default_factory=list)
    fence_close: str = ""
    fence_closed: bool = False
    table_header_lines: int = 0


# --------------------------------------------------------------------------------------------------- parsing


def _fence_closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def _is_table_start(lines: list[str], i: int) -> bool:
    return (
        i + 1 < len(lines)
        and "|" in lines[i]
        and "|" in lines[i + 1]
        and _TABLE_DELIMITER.match(lines[i + 1].rstrip("\r\n")) is not None
    )


def _starts_block(lines: list[str], i: int) -> bool:
    if not _MAYBE_BLOCK.match(lines[i]) and "|" not in lines[i]:
        return False  # cheap pre-check: most paragraph lines start with a letter
    line = lines[i].rstrip("\r\n")
    return bool(
        _FENCE_OPEN.match(line) or _HEADING.match(line) or _LIST_ITEM.match(line) or _is_table_start(lines, i)
    )


def _parse_blocks(body: str) -> list[_Block]:
    """Line-based Markdown block scan; blank lines stay attached to the block they follow."""
    lines = body.splitlines(keepends=True)
    blocks: list[_Block] = []
    headings: list[tuple[int, str]] = []
    i, n = 0, len(lines)

    def section() -> str:
        return " > ".join(title for _, title in headings)

    def take_blank(j: int) -> int:
        while j < n and not lines[j].strip():
            j += 1
        return j

    leading = take_blank(0)
    prefix_blank = "".join(lines[:leading])
    i = leading
    while i < n:
        line = lines[i].rstrip("\r\n")
        start = i
        if m := _FENCE_OPEN.match(line):
            fence = m.group("fence")
            if fence[0] == "`" and "`" in m.group("info"):
                m = None  # not a fence: CommonMark forbids backticks in a backtick info string
        if m:
            j = i + 1
            while j < n and not _fence_closes(lines[j], fence):
                j += 1
            closed = j < n
            j = j + 1 if closed else j
            end = take_blank(j)
            close_line = m.group("indent") + fence + "\n"
            blocks.append(
                _Block(
                    "fence",
                    "".join(lines[start:end]),
                    BLOCK_BOUNDARY,
                    section(),
                    lines[start:end],
                    close_line,
                    fence_closed=closed,
                )
            )
            i = end
            continue
        if hm := _HEADING.match(line):
            level = len(hm.group(1))
            title = hm.group(2).strip().rstrip("#").strip()
            headings[:] = [h for h in headings if h[0] < level] + [(level, title)]
            end = take_blank(i + 1)
            blocks.append(_Block("heading", "".join(lines[start:end]), HEADING_STRENGTH[level], section()))
            i = end
            continue
        if _is_table_start(lines, i):
            j = i + 2
            while j < n and "|" in lines[j] and lines[j].strip():
                j += 1
            end = take_blank(j)
            blocks.append(
                _Block(
                    "table",
                    "".join(lines[start:end]),
                    BLOCK_BOUNDARY,
                    section(),
                    lines[start:end],
                    table_header_lines=2,
                )
            )
            i = end
            continue
        if _LIST_ITEM.match(line):
            j = i + 1
            while j < n:
                if lines[j].strip():
                    if _FENCE_OPEN.match(lines[j].rstrip("\r\n")) or _HEADING.match(lines[j]):
                        break
                    j += 1
                    continue
                k = take_blank(j)  # a blank run continues the list only if an item or indented text follows
                if (
                    k < n
                    and (_LIST_ITEM.match(lines[k]) or lines[k][:1] in (" ", "\t"))
                    and not _FENCE_OPEN.match(lines[k].rstrip("\r\n"))
                ):
                    j = k
                    continue
                j = k
                break
            blocks.append(_Block("list", "".join(lines[start:j]), LIST_BOUNDARY, section(), lines[start:j]))
            i = j
            continue
        j = i + 1
        while j < n and lines[j].strip() and not _starts_block(lines, j):
            j += 1
        end = take_blank(j)
        blocks.append(
            _Block("paragraph", "".join(lines[start:end]), BLOCK_BOUNDARY, section(), lines[start:end])
        )
        i = end
    if prefix_blank:
        if blocks:
            blocks[0].text = prefix_blank + blocks[0].text
            if blocks[0].lines:
                blocks[0].lines[0] = prefix_blank + blocks[0].lines[0]
        else:
            blocks.append(_Block("paragraph", prefix_blank, BLOCK_BOUNDARY, "", [prefix_blank]))
    # The boundary after a list is as strong as the one before it.
    for prev, block in zip(blocks, blocks[1:], strict=False):
        if prev.kind == "list" and block.strength < LIST_BOUNDARY:
            block.strength = LIST_BOUNDARY
    return blocks


# --------------------------------------------------------------------------------------------------- atoms


def _split_sentences(text: str) -> list[str]:
    pieces, last = [], 0
    for m in _SENTENCE_END.finditer(text):
        pieces.append(text[last : m.end()])
        last = m.end()
    if last < len(text):
        pieces.append(text[last:])
    return [p for p in pieces if p]


def _split_tokens(text: str, limit: int, counter: TokenCounter) -> list[str]:
    """Last resort: cut at token boundaries (offsets from tiktoken, so multi-byte characters stay whole)."""
    tokens = counter.encode(text)
    if len(tokens) <= limit:
        return [text]
    _, offsets = counter.encoding.decode_with_offsets(tokens)
    cuts = sorted({offsets[k] for k in range(limit, len(tokens), limit)} - {0})
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


class _Atomizer:
    def __init__(self, counter: TokenCounter, limit: int) -> None:
        self.counter = counter
        self.limit = limit

    def prose(self, text: str, strength: int, section: str, structure: Structure | None = None) -> list[Atom]:
        """Sentences, then tokens; the first piece keeps the block's boundary strength."""
        atoms: list[Atom] = []
        for sentence in _split_sentences(text) or [text]:
            n = self.counter.count(sentence)
            pieces = [sentence] if n <= self.limit else _split_tokens(sentence, self.limit, self.counter)
            for k, piece in enumerate(pieces):
                level = SENTENCE if k == 0 else TOKEN
                atoms.append(Atom(piece, level, section, structure=structure))
        if atoms:
            atoms[0].strength = strength
        return atoms

    def lines_of(self, block: _Block, structure: Structure) -> list[Atom]:
        head_lines = block.table_header_lines if structure.kind == "table" else 1
        header = "".join(block.lines[:head_lines])
        atoms = [Atom(header, block.strength, block.section, structure=structure, is_opening=True)]
        rest = list(block.lines[head_lines:])
        # Blank lines after the structure ride with its last line, so a cut there never reopens it.
        while len(rest) >= 2 and not rest[-1].strip():
            blank = rest.pop()  # pop first: `rest[-2] += rest.pop()` would store into the wrong slot
            rest[-1] += blank
        for k, line in enumerate(rest):
            is_closing = block.fence_closed and k == len(rest) - 1
            if self.counter.count(line) <= self.limit:
                atoms.append(
                    Atom(line, STRUCTURE_LINE, block.section, structure=structure, is_closing=is_closing)
                )
                continue
            for j, piece in enumerate(_split_tokens(line, self.limit, self.counter)):
                atoms.append(
                    Atom(piece, STRUCTURE_LINE if j == 0 else TOKEN, block.section, structure=structure)
                )
            atoms[-1].is_closing = is_closing
        return atoms

    def block(self, block: _Block, tokens: int) -> list[Atom]:
        if tokens <= self.limit:
            whole = block.kind in ("fence", "table")
            return [Atom(block.text, block.strength, block.section, tokens=tokens, is_whole_structure=whole)]
        if block.kind == "fence":
            opening = block.lines[0]
            # The reopened line must itself end a line even if the opening was the document's last line.
            reopen = opening if opening.endswith("\n") else opening + "\n"
            structure = Structure("fence", reopen, block.fence_close)
            return self.lines_of(block, structure)
        if block.kind == "table":
            header = "".join(block.lines[:2])
            return self.lines_of(block, Structure("table", header, ""))
        if block.kind == "list":
            return self._list_items(block)
        return self.prose(block.text, block.strength, block.section)

    def _list_items(self, block: _Block) -> list[Atom]:
        first_indent = len(_LIST_ITEM.match(block.lines[0]).group("indent"))  # type: ignore[union-attr]
        items: list[str] = []
        for line in block.lines:
            m = _LIST_ITEM.match(line)
            if m and len(m.group("indent")) <= first_indent or not items:
                items.append(line)
            else:
                items[-1] += line
        atoms: list[Atom] = []
        for k, item in enumerate(items):
            strength = block.strength if k == 0 else LIST_ITEM
            if self.counter.count(item) <= self.limit:
                atoms.append(Atom(item, strength, block.section))
            else:
                atoms.extend(self.prose(item, strength, block.section))
        return atoms


# --------------------------------------------------------------------------------------------------- packing


def _prefix_for(atom: Atom) -> str:
    if atom.structure is None or atom.is_opening:
        return ""
    return atom.structure.reopen


def _suffix_for(atom: Atom) -> str:
    if atom.structure is None or atom.structure.kind != "fence" or atom.is_closing:
        return ""
    close = atom.structure.close
    # A fence line must start on its own line even when the cut fell inside a long code line.
    return close if atom.text.endswith("\n") else "\n" + close


def _overlap_atoms(
    atoms: Sequence[Atom], lo: int, end: int, want: int, counter: TokenCounter
) -> tuple[str, int]:
    """The tail of the previous chunk (atoms lo..end) to repeat before atom `end`.

    Only text in the same context as `first` is repeated (plain text before plain text, lines of the same
    fence or table before a continuation), so an overlap never opens or half-copies a structure.
    """
    if want <= 0:
        return "", 0
    first = atoms[end]
    parts: list[str] = []
    used = 0
    k = end - 1
    while k >= lo and used < want:
        atom = atoms[k]
        if atom.structure is not first.structure or atom.is_opening:
            break
        if used + atom.tokens <= want:
            parts.append(atom.text)
            used += atom.tokens
            k -= 1
            continue
        if atom.structure is None and not atom.is_whole_structure:
            tail = _tail_tokens(atom.text, want - used, counter)
            if tail:
                parts.append(tail)
                used += counter.count(tail)
        break
    return "".join(reversed(parts)), used


def _tail_tokens(text: str, n: int, counter: TokenCounter) -> str:
    """The last ~n tokens of text, starting at a word boundary."""
    if n <= 0 or not text:
        return ""
    # Look only at a window of the text's end: a token is rarely more than 8 characters.
    base = max(0, len(text) - 8 * n - 16)
    window = text[base:]
    decoded = counter.encoding.decode(counter.encode(window)[-n:]).lstrip("\ufffd")  # half a character
    if not window.endswith(decoded):
        return ""
    start = len(text) - len(decoded)
    tail = decoded
    space = re.search(r"\s", tail)
    if start > 0 and space is not None and not text[start - 1].isspace():
        tail = tail[space.end() :]
    return tail


def _pack(
    atoms: list[Atom], budget: int, overlap_tokens: int, min_fill: float, counter: TokenCounter
) -> list[tuple[int, int, str]]:
    """Greedy fill, cut at the strongest boundary in the second half; returns (start, end, overlap)."""
    spans: list[tuple[int, int, str]] = []
    prefix_cost: dict[str, int] = {}
    suffix_cost: dict[str, int] = {}

    def cost(text: str, memo: dict[str, int]) -> int:
        if text not in memo:
            memo[text] = counter.count(text) if text else 0
        return memo[text]

    i, n = 0, len(atoms)
    while i < n:
        overlap, overlap_used = ("", 0)
        if spans:
            overlap, overlap_used = _overlap_atoms(atoms, spans[-1][0], i, overlap_tokens, counter)
        head = atoms[i]
        prefix = cost(_prefix_for(head), prefix_cost)
        available = budget - overlap_used - prefix
        total, j = 0, i
        while j < n:
            need = total + atoms[j].tokens + cost(_suffix_for(atoms[j]), suffix_cost)
            if need > available:
                break
            total += atoms[j].tokens
            j += 1
        if j == i:
            if overlap and atoms[i].tokens + cost(_suffix_for(atoms[i]), suffix_cost) <= budget - prefix:
                spans.append((i, i + 1, ""))  # the overlap crowds out the next atom: drop it rather than fail
                i += 1
                continue
            raise PlanningError(
                f"a piece of {atoms[i].tokens} tokens in section '{atoms[i].section}' does not fit a chunk "
                f"budget of {budget} tokens; raise max_context_tokens"
            )
        if j < n:
            floor = min_fill * available
            best_k, best_strength, running = j, -1, 0
            for k in range(i + 1, j + 1):
                running += atoms[k - 1].tokens
                if running >= floor and atoms[k].strength >= best_strength:
                    best_k, best_strength = k, atoms[k].strength
            j = best_k
        spans.append((i, j, overlap))
        i = j
    return spans


@dataclass(frozen=True, slots=True)
class SplitOptions:
    chunk_tokens: int  # budget for each chunk's text, overlap and repeated fence/table lines included
    overlap_tokens: int = 200
    min_fill: float = 0.5  # never cut before the chunk is half full, however strong an earlier boundary


def split_document(body: str, options: SplitOptions, counter: TokenCounter) -> list[Chunk]:
    """Split `body` into chunks whose exact token counts fit `options.chunk_tokens`."""
    if options.chunk_tokens < 32:
        raise PlanningError(f"a chunk budget of {options.chunk_tokens} tokens is too small to split into")
    overlap = min(options.overlap_tokens, options.chunk_tokens // 4)
    budget = options.chunk_tokens
    for _ in range(8):
        chunks = _split_once(body, budget, overlap, options.min_fill, counter)
        worst = max((c.tokens - options.chunk_tokens for c in chunks), default=0)
        if worst <= 0:
            return chunks
        # BPE merges across atom edges can make the whole longer than its parts: tighten and re-pack.
        budget -= worst + 4
    raise PlanningError(f"could not split the prompt into chunks of {options.chunk_tokens} tokens")


def _split_once(body: str, budget: int, overlap: int, min_fill: float, counter: TokenCounter) -> list[Chunk]:
    if not body:
        return []
    blocks = _parse_blocks(body)
    # Largest atom: room for the overlap, a reopened structure line and its closing fence.
    structure_reserve = 0
    for block in blocks:
        if block.kind in ("fence", "table") and block.lines:
            structure_reserve = max(structure_reserve, counter.count("".join(block.lines[:2])) + 4)
    limit = max(8, budget - overlap - structure_reserve)
    atomizer = _Atomizer(counter, limit)
    block_tokens = counter.count_many([b.text for b in blocks])
    atoms: list[Atom] = []
    for block, tokens in zip(blocks, block_tokens, strict=True):
        atoms.extend(atomizer.block(block, tokens))
    missing = [a for a in atoms if a.tokens == 0 and a.text]
    for atom, tokens in zip(missing, counter.count_many([a.text for a in missing]), strict=True):
        atom.tokens = tokens
    spans = _pack(atoms, budget, overlap, min_fill, counter)
    pieces: list[tuple[str, str, str, str, str]] = []
    known: list[int | None] = []
    memo: dict[str, int] = {}
    for i, j, overlap_text in spans:
        prefix, suffix = _prefix_for(atoms[i]), _suffix_for(atoms[j - 1])
        own = "".join(a.text for a in atoms[i:j])
        pieces.append((atoms[i].section, prefix, overlap_text, own, suffix))
        known.append(_additive_count(prefix, overlap_text, atoms[i:j], suffix, counter, memo))
    # Chunks whose count is not known exactly from their parts are counted whole, on both cores.
    unknown = [k for k, n in enumerate(known) if n is None]
    for k, n in zip(unknown, counter.count_many(["".join(pieces[k][1:]) for k in unknown]), strict=True):
        known[k] = n
    chunks: list[Chunk] = []
    offset = 0
    for index, ((section, prefix, overlap_text, own, suffix), tokens) in enumerate(
        zip(pieces, known, strict=True)
    ):
        assert tokens is not None
        chunks.append(
            Chunk(index, section, offset, offset + len(own), prefix, overlap_text, own, suffix, tokens)
        )
        offset += len(own)
    return chunks


def _clean_junction(left: str, right: str) -> bool:
    """cl100k's pre-tokenizer splits `left + right` exactly as it splits each when left ends a line and right
    starts with a non-space character, so their token counts add up exactly."""
    return not left or not right or (left[-1] == "\n" and not right[0].isspace())


def _additive_count(
    prefix: str, overlap: str, atoms: Sequence[Atom], suffix: str, counter: TokenCounter, memo: dict[str, int]
) -> int | None:
    """The chunk's exact token count from its parts' counts, or None where a junction is not clean."""
    parts = [p for p in (prefix, overlap) if p]
    texts = [*parts, *(a.text for a in atoms), *([suffix] if suffix else [])]
    if not all(_clean_junction(a, b) for a, b in zip(texts, texts[1:], strict=False)):
        return None
    total = sum(a.tokens for a in atoms)
    for text in (*parts, suffix):
        if text:
            if text not in memo:
                memo[text] = counter.count(text)
            total += memo[text]
    return total


def extract_shared_context(prompt: str, max_tokens: int, counter: TokenCounter) -> tuple[str, str]:
    """Split off the preamble (instructions before the first heading) that every sub-task must see.

    Returns (shared_context, body) with shared_context + body == prompt. A preamble larger than
    `max_tokens` is content, not instructions, and stays in the body.
    """
    match = re.search(r"(?m)^ {0,3}#{1,6}[ \t]", prompt)
    if match is None or match.start() == 0:
        return "", prompt
    preamble = prompt[: match.start()]
    if not preamble.strip() or counter.count(preamble) > max_tokens:
        return "", prompt
    return preamble, prompt[match.start() :]
