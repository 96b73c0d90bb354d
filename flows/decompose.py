"""Flow `decompose`: answer a prompt too large for one call with a local Ollama server.

analyze → decide (one call, or sections) → answer sections concurrently → synthesise → artifact.
Sections run as Prefect task runs, at most `max_parallel_tasks` at once within a run, and each batch
holds that many slots of the host's global concurrency limit, so simultaneous runs never send one Ollama
more than its OLLAMA_NUM_PARALLEL.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from blocks.ollama import OllamaServer, host_limit_name
from flows.audit_hooks import AUDITED
from flows.parameters import BlockName
from tasks.concurrency_limits import ensure_limit
from tasks.decomposition import (
    AgentConfig,
    DecompositionResult,
    Part,
    Plan,
    SubTaskRecord,
    answer_part_task_for,
    build_result,
    failed_record,
    inspect_model_task,
    new_aggregator,
    plan_prompt_task,
    section_answers,
    synthesis_answers,
)
from tasks.decomposition_report import decomposition_markdown
from tasks.errors import InputError, SubTaskFailedError
from tasks.ollama import DEFAULT_HOST, DEFAULT_MODEL, display_host
from tasks.tokens import TokenCounter

DEFAULT_NUM_PARALLEL = 3  # matches the Ollama Deployment's OLLAMA_NUM_PARALLEL in k8s/


@dataclass(frozen=True, slots=True)
class HostLimit:
    """The global concurrency limit shared by every run that calls one Ollama host."""

    name: str
    slots: int


def resolve_server(config: AgentConfig, server: str | None) -> tuple[AgentConfig, HostLimit]:
    """Fill the host and model from the named OllamaServer block; create the host's global limit."""
    block: OllamaServer | None = None
    if server:
        try:
            block = OllamaServer.load(server)
        except ValueError as exc:
            if not config.ollama_host:
                raise InputError(
                    f"no OllamaServer block named {server!r} and no ollama_host given; "
                    "run `make up` (it registers 'default') or pass config.ollama_host"
                ) from exc
    if block is not None:
        config = config.with_server(block.host, block.model)
    config = config.with_server(DEFAULT_HOST, DEFAULT_MODEL)
    name = host_limit_name(config.host)
    wanted = DEFAULT_NUM_PARALLEL
    if block is not None and host_limit_name(block.host) == name:
        wanted = block.num_parallel  # the block describes this very host
    slots = ensure_limit(name, wanted)
    return config, HostLimit(name, slots)


resolve_server_task = task(resolve_server, name="resolve-server", cache_policy=NO_CACHE)


def run_parts(
    parts: Sequence[Part], config: AgentConfig, plan: Plan, width: int, progress: UUID | None
) -> list[SubTaskRecord]:
    """Run parts as task runs, `width` at a time; a failed run becomes a failed record naming its section."""
    answer = answer_part_task_for(config)
    records: dict[int, SubTaskRecord] = {}
    with ThreadPoolTaskRunner(max_workers=width) as runner:
        futures = [
            runner.submit(answer, {"part": p, "config": config, "options": plan.options}) for p in parts
        ]
        index = {id(f): k for k, f in enumerate(futures)}
        for future in as_completed(futures):
            k = index[id(future)]
            try:
                records[k] = future.result()
            except Exception as error:  # the task run shows as Failed; the record names the section
                records[k] = failed_record(parts[k], error)
            if progress:
                update_progress_artifact(progress, 100.0 * len(records) / len(parts))
    return [records[k] for k in range(len(parts))]


MAX_PROMPT_CHARS = 50_000_000  # ~12 M tokens; Prefect's own parameter size limit is what usually bites first


@flow(
    name="decompose",
    flow_run_name="decompose-{server}",
    validate_parameters=True,
    **AUDITED,
)
def decompose(
    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)],
    config: AgentConfig = AgentConfig(),  # noqa: B008 - pydantic model defaults are immutable (frozen)
    server: BlockName | None = "default",
    instructions: Annotated[str, Field(max_length=200_000)] | None = None,
) -> DecompositionResult:
    """Answer a very large prompt with Ollama: split at semantic boundaries, answer sections concurrently
    (limit 3 per run and per host), and synthesise one answer. Leaves a Markdown artifact with the answer
    and a table of sub-tasks.

    Args:
        prompt: The full prompt: instructions first, then the material (Markdown works best).
        config: Token budgets, concurrency, aggregation strategy, timeouts, caching, think, allow_partial.
        server: Name of the OllamaServer block giving host, model and the host's parallel limit.
        instructions: What every section must see; unset: the prompt's preamble before its first heading.
    """
    logger = get_run_logger()
    started = time.monotonic()
    config, host = resolve_server_task(config, server)
    counter = TokenCounter(enabled=config.enable_token_count_cache)
    model = inspect_model_task(config)
    plan = plan_prompt_task(prompt, config, model, counter, instructions)
    logger.info(
        "prompt of %d tokens: %s, %d part(s), num_ctx %d, strategy %s, host %s",
        plan.prompt_tokens,
        plan.mode,
        len(plan.subtasks),
        plan.num_ctx,
        plan.strategy or "single",
        display_host(config.host),
    )
    progress = create_progress_artifact(0.0, description="Sections answered")
    width = min(config.max_parallel_tasks, len(plan.subtasks), host.slots)
    # One lease of `width` of the host's slots for the whole run (strict: a missing limit fails the run).
    # Never more than the host's limit in flight across runs, without an acquire and release per call.
    with concurrency(host.name, occupy=width, strict=True):
        if plan.mode == "single":
            [record] = run_parts([Part.of_subtask(plan.subtasks[0], "single")], config, plan, width, progress)
            if record.status == "failed":
                raise SubTaskFailedError(f"the prompt (one call) failed: {record.error}")
            result = build_result(plan, record.content, [record], [], [], started)
        else:
            parts = [Part.of_subtask(s, "section") for s in plan.subtasks]
            sections = run_parts(parts, config, plan, width, progress)
            answers, missing = section_answers(sections, config.allow_partial)
            aggregator = new_aggregator(plan, answers, config, counter)
            synthesis: list[SubTaskRecord] = []
            while batch := aggregator.next_batch():
                done = run_parts([Part.of_synthesis(r) for r in batch], config, plan, width, None)
                synthesis.extend(done)
                aggregator.feed(synthesis_answers(done))
            result = build_result(plan, aggregator.final, sections, synthesis, missing, started)
    create_markdown_artifact(
        key="decompose-answer",
        markdown=decomposition_markdown(result, config.model, display_host(config.host)),
        description=f"{result.mode}, {len(result.subtasks)} part(s), {result.total_tokens_used} tokens",
    )
    logger.info(
        "answered in %.1f s with %d tokens (%d sections, %d synthesis calls)",
        result.total_duration_seconds,
        result.total_tokens_used,
        len(result.subtasks),
        len(result.synthesis),
    )
    return result
