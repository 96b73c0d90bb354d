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
from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID

from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.concurrency.sync import concurrency
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.hashing import hash_objects
from pydantic import Field

from blocks.ollama import OllamaServer, host_limit_name
from flows.audit_hooks import AUDITED
from flows.concurrency_limits import ensure_limit
from flows.parameters import BlockName
from tasks.decomposition.agent import answer_part, inspect_model
from tasks.decomposition.driver import drive, drive_sync, failed_record
from tasks.decomposition.ollama import DEFAULT_HOST, DEFAULT_MODEL, display_host
from tasks.decomposition.plan import AgentConfig, DecompositionResult, Part, Plan, SubTaskRecord, plan_prompt
from tasks.decomposition.report import decomposition_markdown
from tasks.decomposition.tokens import TokenCounter
from tasks.errors import InputError, RunTimeoutError

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


def result_cache_key(context: object, parameters: dict[str, Any]) -> str:
    """Cached answers are keyed by host, model, options and prompt, nothing else."""
    part, config, options = parameters["part"], parameters["config"], parameters["options"]
    messages = [(m.role, m.content) for m in part.messages]
    key = hash_objects(config.host, config.model, options.as_json(), config.think, messages)
    if key is None:
        raise RuntimeError("could not hash the answer cache key")
    return key


# The client retries with backoff and Retry-After itself; Prefect retries on top would multiply attempts.
answer_part_task = task(
    answer_part, name="answer-part", task_run_name="{part.kind}-{part.key}", cache_policy=NO_CACHE
)
inspect_model_task = task(inspect_model, name="inspect-model", cache_policy=NO_CACHE)
plan_prompt_task = task(plan_prompt, name="plan-prompt", cache_policy=NO_CACHE)


def answer_part_task_for(config: AgentConfig) -> Task[..., SubTaskRecord]:
    if not config.enable_result_caching:
        return answer_part_task
    return answer_part_task.with_options(
        cache_policy=CacheKeyFnPolicy(cache_key_fn=result_cache_key),
        cache_expiration=timedelta(seconds=config.result_cache_ttl_seconds),
        persist_result=True,
    )


def run_parts(
    parts: Sequence[Part],
    config: AgentConfig,
    plan: Plan,
    width: int,
    progress: UUID | None,
    deadline: float | None = None,
) -> list[SubTaskRecord]:
    """Run parts as task runs, `width` at a time; a failed run becomes a failed record naming its section."""
    answer = answer_part_task_for(config)
    records: dict[int, SubTaskRecord] = {}
    with ThreadPoolTaskRunner(max_workers=width) as runner:
        futures = [
            runner.submit(
                answer, {"part": p, "config": config, "options": plan.options, "deadline": deadline}
            )
            for p in parts
        ]
        index = {id(f): k for k, f in enumerate(futures)}
        for future in as_completed(futures):
            k = index[id(future)]
            try:
                records[k] = future.result()
            except RunTimeoutError:
                raise  # the whole run is over, not one part
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
    deadline = time.time() + config.run_timeout_seconds
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
        answered = 0

        def answer(parts: Sequence[Part]) -> list[SubTaskRecord]:
            nonlocal answered  # the progress bar follows the sections, not the synthesis rounds
            records = run_parts(parts, config, plan, width, progress if answered == 0 else None, deadline)
            answered += 1
            return records

        result = drive_sync(drive(plan, config, counter, started), answer)
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
