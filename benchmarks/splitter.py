"""Splitter throughput and structure, side by side with semchunk and LangChain, at the same token budget.

For each splitter: MB/s (best of 3 passes over the corpus), chunks, chunks over the budget (counted with
cl100k_base), chunks that cut a fenced block or a table. Target: at least 2x semchunk's MB/s, with zero
chunks over budget and zero broken fences or tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import semchunk
from langchain_text_splitters import RecursiveCharacterTextSplitter

from benchmarks.corpus import load_corpus
from tasks.decomposition.splitting import SplitOptions, split_document
from tasks.decomposition.tokens import TokenCounter, get_encoding
from tests.structure import ends_inside_fence, fence_openings, fence_problem, table_problem, table_rows

BUDGETS = (1000, 4000)
OVERLAP = 200


@dataclass
class Row:
    splitter: str
    budget: int
    mb_per_s: float
    chunks: int
    over_budget: int
    broken_fences: int
    broken_tables: int


def splitters(budget: int) -> dict[str, Callable[[str], list[str]]]:
    encoding = get_encoding()

    def count(text: str) -> int:
        return len(encoding.encode_ordinary(text))

    ours = TokenCounter(enabled=False)  # cold: no cache between passes
    chunker = semchunk.chunkerify(count, budget)
    # What from_tiktoken_encoder builds, with the offline encoding (it would download cl100k_base).
    langchain = RecursiveCharacterTextSplitter(
        chunk_size=budget, chunk_overlap=OVERLAP, length_function=count
    )
    return {
        "gpuflows": lambda text: [c.text for c in split_document(text, SplitOptions(budget, OVERLAP), ours)],
        "semchunk 4.1.1": lambda text: chunker(text, overlap=OVERLAP),
        "LangChain RecursiveCharacterTextSplitter 1.1.3": langchain.split_text,
    }


def measure() -> tuple[str, list[Row]]:
    source, documents = load_corpus()
    size_mb = sum(len(text.encode()) for _, text in documents) / 1e6
    encoding = get_encoding()
    rows: list[Row] = []
    for budget in BUDGETS:
        for name in splitters(budget):
            best = float("inf")
            outputs: list[tuple[str, list[str]]] = []
            for _ in range(3):
                split = splitters(budget)[name]  # fresh each pass: semchunk memoizes token counts
                started = time.perf_counter()
                outputs = [(text, split(text)) for _, text in documents]
                best = min(best, time.perf_counter() - started)
            over = fences = tables = chunks = 0
            for text, pieces in outputs:
                openings, rows_of_tables, open_end = (
                    fence_openings(text),
                    table_rows(text),
                    ends_inside_fence(text),
                )
                for k, piece in enumerate(pieces):
                    chunks += 1
                    over += len(encoding.encode_ordinary(piece)) > budget
                    last = k == len(pieces) - 1
                    fences += fence_problem(piece, openings, may_end_open=open_end and last) is not None
                    tables += table_problem(piece, rows_of_tables) is not None
            rows.append(Row(name, budget, size_mb / best, chunks, over, fences, tables))
    return f"{len(documents)} documents, {size_mb:.2f} MB, from {source}", rows


def report() -> str:
    corpus, rows = measure()
    lines = [
        f"### Splitter throughput ({corpus}; overlap {OVERLAP} tokens)",
        "",
        "| budget (tokens) | splitter | MB/s | chunks | over budget | broken fences | broken tables |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.budget} | {r.splitter} | {r.mb_per_s:.2f} | {r.chunks} | {r.over_budget} | "
            f"{r.broken_fences} | {r.broken_tables} |"
        )
    for budget in BUDGETS:
        ours = next(r for r in rows if r.splitter == "gpuflows" and r.budget == budget)
        peer = next(r for r in rows if r.splitter.startswith("semchunk") and r.budget == budget)
        ok = ours.mb_per_s >= 2 * peer.mb_per_s and not (
            ours.over_budget or ours.broken_fences or ours.broken_tables
        )
        lines.append(
            f"\nbudget {budget}: {ours.mb_per_s / peer.mb_per_s:.2f}x semchunk's MB/s; "
            f"target (>= 2x, zero over budget, zero broken) {'met' if ok else 'NOT met'}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
