"""The benchmark corpus: ../shared/corpus when present (the full set), else the committed test slices."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpus"
SLICES = ROOT / "tests" / "data" / "corpus"


def load_corpus() -> tuple[str, list[tuple[str, str]]]:
    """(where it came from, [(name, text)]) for every UTF-8 document: Markdown, code and plain text."""
    if SHARED.is_dir():
        files = sorted(
            p for sub in ("markdown", "code", "text") for p in (SHARED / sub).glob("*") if p.is_file()
        )
        source = str(SHARED)
    else:
        files = sorted(SLICES.glob("*"))
        source = f"{SLICES} (../shared/corpus not found)"
    return source, [(p.name, p.read_text(encoding="utf-8")) for p in files]
