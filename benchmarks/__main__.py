"""`python -m benchmarks` (`make bench`): every benchmark; a Markdown report on stdout and in results/."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks import billing, forecast, ingest, orchestration, splitter, token_counting, training
from benchmarks.machine import describe


def main() -> None:
    sections = [f"## Benchmarks, {time.strftime('%Y-%m-%d')}", "", f"Machine: {describe()}", ""]
    for module in (splitter, token_counting, orchestration, training, ingest, billing, forecast):
        sections += [module.report(), ""]
        print("\n".join(sections[-2:]), flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text("\n".join(sections))


if __name__ == "__main__":
    main()
