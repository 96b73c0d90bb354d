"""Did a chunk cut a fenced code block or a Markdown table? (tests and the splitter benchmark)"""

from __future__ import annotations

import re

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$")
DELIMITER_ROW = re.compile(r"\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*")


def fence_openings(body: str) -> set[str]:
    return {m.group(0).strip() for m in re.finditer(r"(?m)^[ \t]*(?:`{3,}|~{3,}).*$", body)}


def table_rows(body: str) -> set[str]:
    """The body rows of the input's tables: lines after a header and delimiter row, up to a blank line."""
    rows: set[str] = set()
    lines = body.splitlines()
    for k in range(1, len(lines)):
        if "|" in lines[k - 1] and "|" in lines[k] and DELIMITER_ROW.fullmatch(lines[k]):
            j = k + 1
            while j < len(lines) and lines[j].strip():
                rows.add(lines[j])
                j += 1
    return rows


def ends_inside_fence(body: str) -> bool:
    """Whether the input itself leaves its last fence unclosed (CommonMark closes it at the end)."""
    return fence_problem(body, fence_openings(body)) == "leaves a fence open"


def fence_problem(text: str, openings: set[str], may_end_open: bool = False) -> str | None:
    """Why a chunk's fences are broken (one left open, or one opened that the input never had), or None.

    `may_end_open`: the chunk ends the document, and the document itself ends inside a fence.
    """
    open_fence: str | None = None
    for line in text.splitlines():
        m = FENCE.match(line)
        if not m:
            continue
        if open_fence is None:
            if line.strip() not in openings:
                return f"opens a fence the input never had: {line!r}"
            open_fence = m.group(1)
        elif m.group(1)[0] == open_fence[0] and len(m.group(1)) >= len(open_fence) and not m.group(2).strip():
            open_fence = None
    return "leaves a fence open" if open_fence is not None and not may_end_open else None


def table_problem(text: str, rows: set[str]) -> str | None:
    """A table row in the chunk that does not sit below a header (a delimiter row with no blank between)."""
    in_table = False
    for line in text.splitlines():
        if not line.strip():
            in_table = False
        elif "|" in line and DELIMITER_ROW.fullmatch(line):
            in_table = True
        elif line in rows and line.startswith("|") and not in_table:
            return f"a table row without its header: {line!r}"
    return None
