"""The one decomposition loop, driven here by a scripted executor: what it asks for, in what order, and what
it does with failures. The agent and the flow drive the same generator (tests/flows/test_decompose.py and
tests/tasks/decomposition/test_agent.py run them end to end)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tasks.decomposition.driver import drive, drive_sync, failed_record
from tasks.decomposition.ollama import ModelInfo
from tasks.decomposition.plan import AgentConfig, Part, SubTaskRecord, plan_prompt
from tasks.decomposition.tokens import TokenCounter
from tasks.errors import SubTaskFailedError
from tests.builders import marked_document


def answered(part: Part, text: str | None = None) -> SubTaskRecord:
    return SubTaskRecord(
        part.key, part.kind, part.section, 10, 5, 0.1, 1, content=text or f"answer {part.key}"
    )


def plan_for(prompt: str, counter: TokenCounter, **config: object):  # noqa: ANN201 - (plan, config)
    cfg = AgentConfig(
        max_context_tokens=4096, response_reserve_tokens=1024, single_call_threshold_tokens=2000, **config
    )
    return plan_prompt(prompt, cfg, ModelInfo("m", 32768, ()), counter, None), cfg


def test_one_call_for_a_small_prompt(counter: TokenCounter) -> None:
    plan, cfg = plan_for("Summarise: a short note.", counter)
    batches: list[list[str]] = []

    def answer(parts: Sequence[Part]) -> list[SubTaskRecord]:
        batches.append([p.kind for p in parts])
        return [answered(p, "done") for p in parts]

    result = drive_sync(drive(plan, cfg, counter), answer)
    assert batches == [["single"]] and result.final_response == "done" and result.mode == "single"


def test_sections_then_synthesis_rounds_until_one_answer(counter: TokenCounter) -> None:
    plan, cfg = plan_for(marked_document(40), counter)
    kinds: list[set[str]] = []

    def answer(parts: Sequence[Part]) -> list[SubTaskRecord]:
        kinds.append({p.kind for p in parts})
        return [answered(p) for p in parts]

    result = drive_sync(drive(plan, cfg, counter), answer)
    assert kinds[0] == {"section"} and all(k == {"synthesis"} for k in kinds[1:]) and len(kinds) >= 2
    assert len(result.subtasks) == len(plan.subtasks) and result.missing_sections == []


def test_a_failed_section_fails_the_run_unless_partial_answers_are_allowed(counter: TokenCounter) -> None:
    def failing_first(parts: Sequence[Part]) -> list[SubTaskRecord]:
        return [failed_record(p, RuntimeError("stalled")) if p.key == "1" else answered(p) for p in parts]

    plan, cfg = plan_for(marked_document(40), counter)
    with pytest.raises(SubTaskFailedError, match="part 1 .*stalled"):
        drive_sync(drive(plan, cfg, counter), failing_first)
    plan, cfg = plan_for(marked_document(40), counter, allow_partial=True)
    result = drive_sync(drive(plan, cfg, counter), failing_first)
    assert result.final_response.startswith("**Partial answer: 1 section(s) failed")
    assert result.missing_sections and result.missing_sections[0].startswith("part 1 ")
