"""Data builders shared by tests."""

from __future__ import annotations


def marked_document(sections: int, sentences: int = 60, preamble: str = "Summarise each section.\n\n") -> str:
    """A Markdown document whose every section carries a MARK-n the stand-in echoes back."""
    body = "\n\n".join(
        f"## Section {i}\n\n"
        + " ".join(f"Fact {j} about topic {i} is stated here." for j in range(sentences))
        + f" MARK-{i}."
        for i in range(1, sections + 1)
    )
    return preamble + body
