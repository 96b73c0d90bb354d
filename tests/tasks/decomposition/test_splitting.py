"""The splitter's guarantees, property-tested on generated Markdown, plus exact examples."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.decomposition.splitting import Chunk, SplitOptions, extract_shared_context, split_document
from tasks.decomposition.tokens import TokenCounter
from tasks.errors import PlanningError
from tests.structure import ends_inside_fence, fence_openings, fence_problem, table_problem, table_rows

CORPUS = Path(__file__).parents[2] / "data" / "corpus"

# ------------------------------------------------------------------------------------------ generators

words = st.sampled_from(
    [
        "GPU",
        "token",
        "the",
        "cluster",
        "node",
        "quota",
        "training",
        "résumé",
        "数据",
        "🚀",
        "<|endoftext|>",
        "a",
        "of",
        "and",
        "model",
        "x" * 300,
    ]
)
sentence = st.lists(words, min_size=1, max_size=30).map(lambda ws: " ".join(ws) + ".")
paragraph = st.lists(sentence, min_size=1, max_size=12).map(" ".join)
heading = st.tuples(st.integers(1, 6), st.lists(words, min_size=1, max_size=5)).map(
    lambda t: "#" * t[0] + " " + " ".join(t[1])
)
list_block = st.lists(sentence, min_size=1, max_size=20).map(lambda items: "\n".join(f"- {i}" for i in items))
code_line = st.lists(
    st.sampled_from(["x = 1", "return y", "for i in range(9):", "    pass", "# note", "{}"]),
    min_size=1,
    max_size=3,
).map("; ".join)
fence = st.tuples(
    st.sampled_from(["```", "~~~", "````"]),
    st.sampled_from(["", "python", 'toml title="cfg"', "bash"]),
    st.lists(code_line, min_size=0, max_size=120),
).map(lambda t: f"{t[0]}{t[1]}\n" + "".join(line + "\n" for line in t[2]) + t[0])
table = st.tuples(
    st.integers(2, 4), st.lists(st.lists(words, min_size=1, max_size=3), min_size=0, max_size=80)
).map(
    lambda t: (
        "| "
        + " | ".join(f"h{k}" for k in range(t[0]))
        + " |\n|"
        + "---|" * t[0]
        + "\n"
        + "\n".join("| " + " | ".join(" ".join(cells) for _ in range(t[0])) + " |" for cells in t[1])
    )
)
block = st.one_of(paragraph, heading, list_block, fence, table)
separator = st.sampled_from(["\n\n", "\n\n\n", "\n\n"])
document = st.tuples(st.lists(st.tuples(block, separator), min_size=1, max_size=25), st.booleans()).map(
    lambda t: "".join(b + s for b, s in t[0]) if t[1] else "".join(b + s for b, s in t[0]).rstrip("\n")
)


# ------------------------------------------------------------------------------------------ checkers


def check_guarantees(body: str, chunks: list[Chunk], options: SplitOptions, counter: TokenCounter) -> None:
    assert "".join(c.own_text for c in chunks) == body, "the chunks minus overlaps must reassemble the input"
    assert [c.start for c in chunks] == [sum(len(p.own_text) for p in chunks[:k]) for k in range(len(chunks))]
    openings, rows, open_end = fence_openings(body), table_rows(body), ends_inside_fence(body)
    for k, chunk in enumerate(chunks):
        assert chunk.tokens == counter.count(chunk.text)
        assert chunk.tokens <= options.chunk_tokens, f"chunk {k} has {chunk.tokens} > {options.chunk_tokens}"
        assert chunk.own_text, "no empty chunks"
        problem = fence_problem(chunk.text, openings, may_end_open=open_end and k == len(chunks) - 1)
        assert problem is None, f"chunk {k}: {problem}"
        assert table_problem(chunk.text, rows) is None, f"chunk {k}: {table_problem(chunk.text, rows)}"
        if chunk.overlap_text:
            previous = "".join(c.own_text for c in chunks[:k])
            assert previous.endswith(chunk.overlap_text), "the overlap repeats the end of what came before"
            assert counter.count(chunk.overlap_text) <= options.overlap_tokens + 2


# ------------------------------------------------------------------------------------------ properties


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(body=document, chunk_tokens=st.integers(96, 1500), overlap=st.sampled_from([0, 20, 200]))
def test_guarantees_hold_on_generated_markdown(
    body: str, chunk_tokens: int, overlap: int, counter: TokenCounter
) -> None:
    options = SplitOptions(chunk_tokens=chunk_tokens, overlap_tokens=overlap)
    check_guarantees(body, split_document(body, options, counter), options, counter)


@settings(max_examples=40, deadline=None)
@given(body=st.text(min_size=1, max_size=3000), chunk_tokens=st.integers(64, 600))
def test_guarantees_hold_on_arbitrary_text(body: str, chunk_tokens: int, counter: TokenCounter) -> None:
    options = SplitOptions(chunk_tokens=chunk_tokens, overlap_tokens=50)
    check_guarantees(body, split_document(body, options, counter), options, counter)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*")), ids=lambda p: p.name)
@pytest.mark.parametrize("chunk_tokens", [300, 2000])
def test_guarantees_hold_on_real_documents(path: Path, chunk_tokens: int, counter: TokenCounter) -> None:
    body = path.read_text(encoding="utf-8")
    options = SplitOptions(chunk_tokens=chunk_tokens, overlap_tokens=200)
    chunks = split_document(body, options, counter)
    check_guarantees(body, chunks, options, counter)
    assert len(chunks) > 1


# ------------------------------------------------------------------------------------------ examples


def test_an_oversized_fence_is_closed_and_reopened_with_its_info_string(counter: TokenCounter) -> None:
    code = "".join(f"value_{i} = compute({i}, retries=3)\n" for i in range(400))
    body = f'Intro paragraph.\n\n```python title="big.py"\n{code}```\n\nAfter the code.\n'
    chunks = split_document(body, SplitOptions(chunk_tokens=400, overlap_tokens=40), counter)
    inside = [c for c in chunks if "value_" in c.own_text]
    assert len(inside) > 3
    for chunk in inside:
        assert chunk.text.count('```python title="big.py"\n') == 1
        assert chunk.text.rstrip("\n").endswith("```") or "After the code" in chunk.text
    for chunk in inside[1:]:
        assert chunk.prefix == '```python title="big.py"\n'
    assert "".join(c.own_text for c in chunks) == body


def test_an_oversized_table_repeats_its_header(counter: TokenCounter) -> None:
    rows = "".join(f"| node-{i:03d} | RTX 5090 | {i % 7} |\n" for i in range(300))
    body = f"# Nodes\n\n| node | gpu | jobs |\n|---|---|---|\n{rows}\nDone.\n"
    chunks = split_document(body, SplitOptions(chunk_tokens=300, overlap_tokens=30), counter)
    continued = [c for c in chunks[1:] if "| node-" in c.own_text]
    assert continued
    for chunk in continued:
        assert chunk.text.startswith("| node | gpu | jobs |\n|---|---|---|\n")
    assert "".join(c.own_text for c in chunks) == body


def test_cuts_fall_on_headings_when_sections_fit(counter: TokenCounter) -> None:
    sections = [f"## Part {i}\n\n" + "A sentence about this part. " * 40 + "\n\n" for i in range(12)]
    body = "".join(sections)
    chunks = split_document(body, SplitOptions(chunk_tokens=800, overlap_tokens=0), counter)
    assert len(chunks) > 2
    assert all(c.own_text.startswith("## Part") for c in chunks)
    assert [c.section for c in chunks][:2] == ["Part 0", chunks[1].own_text.split("\n")[0][3:]]


def test_overlap_repeats_about_the_requested_tokens(counter: TokenCounter) -> None:
    body = " ".join(f"Sentence number {i} says something specific." for i in range(800))
    chunks = split_document(body, SplitOptions(chunk_tokens=1200, overlap_tokens=200), counter)
    assert len(chunks) > 3
    for chunk in chunks[1:]:
        assert 150 <= counter.count(chunk.overlap_text) <= 202  # atom counts overstate joined text
        assert chunk.overlap_text[0].isalnum(), "the overlap starts at a word"
    # An overlap never takes more than a quarter of a chunk's budget.
    small = split_document(body, SplitOptions(chunk_tokens=400, overlap_tokens=200), counter)
    assert all(counter.count(c.overlap_text) <= 100 for c in small)


def test_shared_context_is_the_preamble_before_the_first_heading(counter: TokenCounter) -> None:
    prompt = "Summarise every section in two bullet points.\n\n# One\n\ntext\n\n# Two\n\nmore\n"
    shared, body = extract_shared_context(prompt, 100, counter)
    assert shared == "Summarise every section in two bullet points.\n\n"
    assert shared + body == prompt


def test_a_long_preamble_is_content_not_instructions(counter: TokenCounter) -> None:
    prompt = "word " * 2000 + "\n\n# Heading\n\ntext"
    assert extract_shared_context(prompt, 500, counter) == ("", prompt)
    assert extract_shared_context("no headings at all", 500, counter) == ("", "no headings at all")


def test_a_budget_too_small_is_a_clear_error(counter: TokenCounter) -> None:
    with pytest.raises(PlanningError, match="too small"):
        split_document("text", SplitOptions(chunk_tokens=8), counter)


def test_an_input_that_ends_inside_a_fence_is_kept_as_it_is(counter: TokenCounter) -> None:
    body = "Text.\n\n```\n" + "".join(f"line {i}\n" for i in range(300))  # never closed
    chunks = split_document(body, SplitOptions(chunk_tokens=300, overlap_tokens=0), counter)
    check_guarantees(body, chunks, SplitOptions(chunk_tokens=300, overlap_tokens=0), counter)
    assert all(c.text.count("```") == 2 for c in chunks[1:-1])  # reopened and closed in between


def test_empty_body_gives_no_chunks(counter: TokenCounter) -> None:
    assert split_document("", SplitOptions(chunk_tokens=100), counter) == []
