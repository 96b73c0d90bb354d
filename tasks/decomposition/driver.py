"""The decomposition loop, written once: one call, or sections then synthesis rounds until one answer.

`drive()` is a generator, a pure state machine like `Aggregator`: it yields each batch of parts to answer
and is sent back their records (in order; a failed call is a failed record), and returns the result. Both
executors drive it: the in-process agent answers a batch with asyncio (`drive_async`), the `decompose` flow
with Prefect task runs (`drive_sync`). Neither decides anything of its own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator, Sequence

from tasks.decomposition.plan import AgentConfig, DecompositionResult, Part, Plan, SubTaskRecord
from tasks.decomposition.synthesis import Aggregator
from tasks.decomposition.tokens import TokenCounter
from tasks.errors import SubTaskFailedError

Batch = list[Part]


def new_aggregator(
    plan: Plan, answers: Sequence[str], config: AgentConfig, counter: TokenCounter
) -> Aggregator:
    assert plan.strategy is not None
    return Aggregator(
        answers,
        strategy=plan.strategy,
        instructions=plan.shared_context,
        input_budget=plan.input_budget,
        counter=counter,
        max_depth=config.max_synthesis_depth,
    )


def failed_record(part: Part, error: BaseException) -> SubTaskRecord:
    return SubTaskRecord(
        part.key,
        part.kind,
        part.section,
        0,
        0,
        0.0,
        0,
        "failed",
        str(error) or type(error).__name__,
        estimate_tokens=part.estimate_tokens,
    )


def section_answers(records: Sequence[SubTaskRecord], allow_partial: bool) -> tuple[list[str], list[str]]:
    """The answers to synthesise, and the sections that failed; raises unless partial answers are allowed."""
    failed = [r for r in records if r.status == "failed"]
    missing = [f"part {r.key} '{r.section}'" for r in failed]
    if failed and not allow_partial:
        details = "; ".join(f"part {r.key} '{r.section}': {r.error}" for r in failed)
        raise SubTaskFailedError(f"{len(failed)} of {len(records)} sections failed after retries: {details}")
    if failed and len(failed) == len(records):
        raise SubTaskFailedError(f"all {len(records)} sections failed; first error: {failed[0].error}")
    answers = [
        r.content if r.status == "ok" else f"[MISSING: part {r.key} '{r.section}' failed: {r.error}]"
        for r in records
    ]
    return answers, missing


def synthesis_answers(records: Sequence[SubTaskRecord]) -> list[str]:
    """A synthesis step that failed cannot be marked as a gap: its inputs would be lost, so the run fails."""
    failed = [r for r in records if r.status == "failed"]
    if failed:
        raise SubTaskFailedError(
            f"synthesis of {failed[0].section} ({failed[0].key}) failed: {failed[0].error}"
        )
    return [r.content for r in records]


def build_result(
    plan: Plan,
    final: str,
    sections: list[SubTaskRecord],
    synthesis: list[SubTaskRecord],
    missing: list[str],
    started: float,
) -> DecompositionResult:
    calls = [r for r in [*sections, *synthesis] if r.status == "ok"]
    if missing:
        final = (
            f"**Partial answer: {len(missing)} section(s) failed and are not covered: "
            f"{', '.join(missing)}.**\n\n{final}"
        )
    return DecompositionResult(
        final_response=final,
        mode=plan.mode,
        strategy=plan.strategy or "single",
        total_tokens_used=sum(r.tokens_in + r.tokens_out for r in calls),
        total_duration_seconds=time.monotonic() - started,
        prompt_tokens=plan.prompt_tokens,
        num_ctx=plan.num_ctx,
        subtasks=sections,
        synthesis=synthesis,
        missing_sections=missing,
    )


Driver = Generator[Batch, list[SubTaskRecord], DecompositionResult]


def drive(plan: Plan, config: AgentConfig, counter: TokenCounter, started: float | None = None) -> Driver:
    started = time.monotonic() if started is None else started
    if plan.mode == "single":
        [record] = yield [Part.of_subtask(plan.subtasks[0], "single")]
        if record.status == "failed":
            raise SubTaskFailedError(f"the prompt (one call) failed: {record.error}")
        return build_result(plan, record.content, [record], [], [], started)
    sections = yield [Part.of_subtask(s, "section") for s in plan.subtasks]
    answers, missing = section_answers(sections, config.allow_partial)
    aggregator = new_aggregator(plan, answers, config, counter)
    synthesis: list[SubTaskRecord] = []
    while batch := aggregator.next_batch():
        done = yield [Part.of_synthesis(request) for request in batch]
        synthesis.extend(done)
        aggregator.feed(synthesis_answers(done))
    return build_result(plan, aggregator.final, sections, synthesis, missing, started)


def drive_sync(
    driver: Driver, answer: Callable[[Sequence[Part]], list[SubTaskRecord]]
) -> DecompositionResult:
    try:
        batch = next(driver)
        while True:
            batch = driver.send(answer(batch))
    except StopIteration as done:
        return done.value


async def drive_async(
    driver: Driver, answer: Callable[[Sequence[Part]], Awaitable[list[SubTaskRecord]]]
) -> DecompositionResult:
    try:
        batch = next(driver)
        while True:
            batch = driver.send(await answer(batch))
    except StopIteration as done:
        return done.value
