"""The in-process decomposition agent, and single Ollama calls for the flow's task runs.

`OllamaDecompositionAgent(config).process(prompt)` runs the whole pipeline in-process with asyncio (no
Prefect server needed): plan (tasks/decomposition/plan.py), then the one driver (driver.py) with the calls
made concurrently here. The `decompose` flow (flows/decompose.py) drives the same loop with Prefect task
runs, a per-run worker limit and a global concurrency limit per Ollama host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from tasks.decomposition.driver import drive, drive_async, failed_record
from tasks.decomposition.ollama import (
    DEFAULT_HOST,
    DEFAULT_MODEL,
    ChatMessage,
    ChatOptions,
    ChatReply,
    ModelInfo,
    OllamaClient,
)
from tasks.decomposition.plan import (
    AgentConfig,
    DecompositionResult,
    Part,
    SubTaskRecord,
    plan_prompt,
    validate_prompt,
)
from tasks.decomposition.tokens import TokenCounter
from tasks.errors import IncompleteAnswerError, RunTimeoutError

T = TypeVar("T")


CONTINUE = (
    "Your previous answer was cut off at the length limit. Continue it exactly where it stopped: no "
    "repetition, no preamble, no summary of what came before."
)


def was_cut(reply: ChatReply, options: ChatOptions) -> bool:
    """Ollama ends a stream cut at num_predict with done_reason "length"; a server too old to send a reason
    is taken as cut when it produced exactly num_predict tokens."""
    if reply.done_reason is not None:
        return reply.done_reason == "length"
    return reply.eval_count is not None and 0 < options.num_predict <= reply.eval_count


async def ask(
    client: OllamaClient,
    config: AgentConfig,
    options: ChatOptions,
    part: Part,
    deadline: float | None = None,
) -> SubTaskRecord:
    """One part answered completely, recorded. An answer cut at num_predict is continued (the model is shown
    its own partial answer and asked to go on) up to `max_continuations` times; still cut, or empty, it is
    an IncompleteAnswerError naming the part, never a silently shorter answer. `deadline` (time.time()) is
    the whole run's: a call that would outlive it is cut short with RunTimeoutError."""
    started = time.monotonic()
    messages = list(part.messages)
    pieces: list[str] = []
    tokens_in = tokens_out = attempts = 0
    estimate = part.estimate_tokens
    for continuation in range(config.max_continuations + 1):
        reply = await _before(
            deadline,
            client.chat(config.model, messages, options, think=config.think, estimate_tokens=estimate),
        )
        pieces.append(reply.content)
        tokens_in += reply.prompt_eval_count if reply.prompt_eval_count is not None else estimate
        tokens_out += reply.eval_count or 0
        attempts += reply.attempts
        if not was_cut(reply, options):
            break
        if continuation == config.max_continuations:
            raise IncompleteAnswerError(
                f"the answer to {part.kind} {part.key} ({part.section}) was still cut at num_predict "
                f"({options.num_predict} tokens) after {continuation} continuation(s); raise "
                "response_reserve_tokens or max_continuations"
            )
        so_far = "".join(pieces)
        estimate = (
            part.estimate_tokens + (tokens_out or len(so_far) // 4) + 64
        )  # the prompt, the answer so far
        if estimate > options.num_ctx - options.num_predict:
            raise IncompleteAnswerError(
                f"the answer to {part.kind} {part.key} ({part.section}) was cut at num_predict and its "
                f"continuation would not fit num_ctx {options.num_ctx}; raise response_reserve_tokens"
            )
        messages = [*part.messages, ChatMessage("assistant", so_far), ChatMessage("user", CONTINUE)]
    content = "".join(pieces)
    if not content.strip():
        raise IncompleteAnswerError(
            f"ollama at {client.display_host} returned an empty answer to {part.kind} {part.key} "
            f"({part.section})"
        )
    return SubTaskRecord(
        key=part.key,
        kind=part.kind,
        section=part.section,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        duration_s=time.monotonic() - started,
        attempts=attempts,
        content=content,
        estimate_tokens=part.estimate_tokens,
    )


async def _before(deadline: float | None, call: Awaitable[T]) -> T:
    if deadline is None:
        return await call
    left = deadline - time.time()
    try:
        async with asyncio.timeout(max(0.0, left)):
            return await call
    except TimeoutError:
        raise RunTimeoutError("the decomposition ran past its deadline (run_timeout_seconds)") from None


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
        deadline = time.time() + config.run_timeout_seconds
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
                        record = await ask(client, config, plan.options, part, deadline)
                    except RunTimeoutError:
                        raise  # the whole run is over, not one part
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


def answer_part(
    part: Part, config: AgentConfig, options: ChatOptions, deadline: float | None = None
) -> SubTaskRecord:
    """One part in its own event loop (the flow runs each in a task run; it holds the host's slots)."""

    async def call() -> SubTaskRecord:
        async with OllamaClient(
            config.host, timeouts=config.timeouts(), retry=config.retry_policy()
        ) as client:
            return await ask(client, config, options, part, deadline)

    return asyncio.run(call())


def inspect_model(config: AgentConfig) -> ModelInfo:
    """The model's real context (from /api/show); fails naming the host or the model to pull."""

    async def call() -> ModelInfo:
        async with OllamaClient(
            config.host, timeouts=config.timeouts(), retry=config.retry_policy()
        ) as client:
            return await client.show(config.model)

    return asyncio.run(call())
