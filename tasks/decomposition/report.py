"""The Markdown a person reads in the Prefect UI after a decomposition run."""

from __future__ import annotations

from tasks.decomposition.agent import DecompositionResult


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def decomposition_markdown(result: DecompositionResult, model: str, host: str) -> str:
    rows = [*result.subtasks, *result.synthesis]
    header = ["part", "kind", "section", "tokens in", "tokens out", "seconds", "attempts", "status"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(_cell(v) for v in r.as_row().values()) + " |" for r in rows]
    gaps = ""
    if result.missing_sections:
        gaps = f"\n> **Partial answer** — not covered: {', '.join(result.missing_sections)}\n"
    r = result
    return f"""# Answer
{gaps}
{result.final_response}

## How it was answered

- model `{model}` on {host}, num_ctx {result.num_ctx}
- prompt: {r.prompt_tokens} tokens (cl100k_base estimate); mode **{r.mode}**, strategy **{r.strategy}**
- {len(r.subtasks)} part(s), {len(r.synthesis)} synthesis call(s), {r.total_tokens_used} tokens in total
- {result.total_duration_seconds:.1f} s

{chr(10).join(table)}
"""
