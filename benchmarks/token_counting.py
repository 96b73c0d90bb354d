"""Token counting: raw tiktoken, the counter cold (first sight of a text), and cached (seen before)."""

from __future__ import annotations

import time

from benchmarks.corpus import load_corpus
from tasks.decomposition.tokens import TokenCounter, get_encoding


def measure() -> tuple[str, list[tuple[str, float, float]]]:
    source, documents = load_corpus()
    texts = [text for _, text in documents]
    size_mb = sum(len(t.encode()) for t in texts) / 1e6
    encoding = get_encoding()

    def timed(run: object) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            run()  # type: ignore[operator]
            best = min(best, time.perf_counter() - started)
        return best

    raw = timed(lambda: [len(encoding.encode_ordinary(t)) for t in texts])
    cold = timed(lambda: [TokenCounter().count(t) for t in texts])  # a new counter: nothing cached
    warm_counter = TokenCounter()
    for text in texts:
        warm_counter.count(text)
    cached = timed(lambda: [warm_counter.count(t) for t in texts])
    rows = [
        ("tiktoken encode_ordinary (no cache)", raw, size_mb / raw),
        ("TokenCounter, cold", cold, size_mb / cold),
        ("TokenCounter, cached (content-hash LRU)", cached, size_mb / cached),
    ]
    return f"{len(texts)} documents, {size_mb:.2f} MB", rows


def report() -> str:
    corpus, rows = measure()
    lines = [
        f"### Token counting ({corpus}, cl100k_base)",
        "",
        "| path | seconds | MB/s |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {seconds:.4f} | {mb_s:,.1f} |" for name, seconds, mb_s in rows]
    lines.append(f"\ncached is {rows[1][1] / rows[2][1]:.0f}x faster than cold")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
