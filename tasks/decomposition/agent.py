"""The in-process decomposition agent, and single Ollama calls for the flow's task runs.

`OllamaDecompositionAgent(config).process(prompt)` runs the whole pipeline in-process with asyncio (no
Prefect server needed): plan (tasks/decomposition/plan.py), then the one driver (driver.py) with the calls
made concurrently here. The `decompose` flow (flows/decompose.py) drives the same loop with Prefect task
runs, a per-run worker limit and a global concurrency limit per Ollama host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from tasks.decomposition.driver import drive, drive_async, failed_record
from tasks.decomposition.ollama import DEFAULT_HOST, DEFAULT_MODEL, ChatOptions, ModelInfo, OllamaClient
from tasks.decomposition.plan import (
    AgentConfig,
    DecompositionResult,
    Part,
    SubTaskRecord,
    plan_prompt,
    validate_prompt,
)
from tasks.decomposition.tokens import TokenCounter


async def ask(client: OllamaClient, config: AgentConfig, options: ChatOptions, part: Part) -> SubTaskRecord:
    """One call to Ollama, recorded; raises the client's errors after its retries."""
    started = time.monotonic()
    reply = await client.chat(
        config.model, part.messages, options, think=config.think, estimate_tokens=part.estimate_tokens
    )
    return SubTaskRecord(
        key=part.key,
        kind=part.kind,
        section=part.section,
        tokens_in=reply.prompt_eval_count if reply.prompt_eval_count is not None else part.estimate_tokens,
        tokens_out=reply.eval_count or 0,
        duration_s=time.monotonic() - started,
        attempts=reply.attempts,
        content=reply.content,
        estimate_tokens=part.estimate_tokens,
    )


class OllamaDecompositionAgent:
    """In-process agent: the same plan and aggregation as the flow, executed with asyncio."""

    def __init__(self, config: AgentConfig | None = None, counter: TokenCounter | None = None) -> None:
        self.config = (config or AgentConfig()).with_server(DEFAULT_HOST, DEFAULT_MODEL)
        self.counter = counter or TokenCounter(enabled=self.config.enable_token_count_cache)
        self._cache: dict[tuple[object, ...], tuple[float, SubTaskRecord]] = {}

    def process(
        self, prompt: str, instructions: str | None = None, progress: Callable[[str], None] | None = None
    ) -> DecompositionResult:
        return asyncio.run(self.aprocess(prompt, instructions, progress))

    async def aprocess(
        self, prompt: str, instructions: str | None = None, progress: Callable[[str], None] | None = None
    ) -> DecompositionResult:
        started = time.monotonic()
        say = progress or (lambda line: None)
        validate_prompt(prompt)
        config = self.config
        async with OllamaClient(
            config.host, timeouts=config.timeouts(), retry=config.retry_policy()
        ) as client:
            model = await client.show(config.model)
            plan = plan_prompt(prompt, config, model, self.counter, instructions)
            say(
                f"prompt of {plan.prompt_tokens} tokens: {plan.mode}, {len(plan.subtasks)} part(s), "
                f"num_ctx {plan.num_ctx}, strategy {plan.strategy or 'single'}"
            )
            slots = asyncio.Semaphore(config.max_parallel_tasks)  # the flow uses Prefect limits instead

            async def run(part: Part) -> SubTaskRecord:
                cache_key = (config.host, config.model, plan.options, config.think, part.messages)
                hit = self._cache.get(cache_key) if config.enable_result_caching else None
                if hit is not None and hit[0] > time.monotonic():
                    return hit[1]
                async with slots:
                    try:
                        record = await ask(client, config, plan.options, part)
                    except Exception as error:  # recorded, then raised or marked by section_answers
                        return failed_record(part, error)
                if config.enable_result_caching:
                    self._cache[cache_key] = (time.monotonic() + config.result_cache_ttl_seconds, record)
                say(f"{part.kind} {part.key} done: {record.tokens_in} tokens in, {record.tokens_out} out")
                return record

            async def answer(parts: Sequence[Part]) -> list[SubTaskRecord]:
                return list(await asyncio.gather(*(run(part) for part in parts)))

            return await drive_async(drive(plan, config, self.counter, started), answer)


# ------------------------------------------------------------------------------------ one call, sync


def answer_part(part: Part, config: AgentConfig, options: ChatOptions) -> SubTaskRecord:
    """One call in its own event loop (the flow runs each in a task run; it holds the host's slots)."""

    async def call() -> SubTaskRecord:
        async with OllamaClient(
            config.host, timeouts=config.timeouts(), retry=config.retry_policy()
        ) as client:
            return await ask(client, config, options, part)

    return asyncio.run(call())


def inspect_model(config: AgentConfig) -> ModelInfo:
    """The model's real context (from /api/show); fails naming the host or the model to pull."""

    async def call() -> ModelInfo:
        async with OllamaClient(
            config.host, timeouts=config.timeouts(), retry=config.retry_policy()
        ) as client:
            return await client.show(config.model)

    return asyncio.run(call())
