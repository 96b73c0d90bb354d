"""The decomposition agent: analyze, decide, split, execute, aggregate.

`OllamaDecompositionAgent(config).process(prompt)` runs the whole pipeline in-process with asyncio (no
Prefect server needed). The `decompose` flow (flows/decompose.py) runs the same plan with Prefect task runs,
a per-run worker limit and a global concurrency limit per Ollama host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from prefect import Task, task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.utilities.hashing import hash_objects
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import InputError, PlanningError, SubTaskFailedError
from tasks.ollama import (
    DEFAULT_HOST,
    DEFAULT_MODEL,
    ChatMessage,
    ChatOptions,
    ModelInfo,
    OllamaClient,
    RetryPolicy,
    Timeouts,
)
from tasks.splitting import Chunk, SplitOptions, extract_shared_context, split_document
from tasks.synthesis import (
    MESSAGE_OVERHEAD_TOKENS,
    NO_INSTRUCTIONS,
    Aggregator,
    Strategy,
    SynthesisRequest,
    choose_strategy,
)
from tasks.tokens import TokenCounter

SECTION_SYSTEM = """You answer one part of a prompt that was too large to process at once.
The prompt was split into {total} consecutive parts; this is part {index} of {total}. Follow the
instructions below using only this part; the other parts are answered separately and the answers are
combined afterwards. The part may begin with a few lines repeated from the previous part for context.
If this part holds nothing relevant to the instructions, say so in one sentence.

Instructions shared by all parts:
{instructions}"""


class AgentConfig(BaseModel):
    """Settings of one decomposition run (the names follow the original design)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ollama_host: str | None = Field(
        None, description="Ollama base URL; unset: the server block's or localhost"
    )
    ollama_model: str | None = Field(None, description="Model as in `ollama list`; unset: the server block's")
    max_context_tokens: int = Field(8192, ge=1024, le=1_048_576, description="num_ctx sent with every call")
    response_reserve_tokens: int = Field(2048, ge=64, description="Tokens kept free for each answer")
    chunk_overlap_tokens: int = Field(200, ge=0, le=4096, description="Tokens repeated between neighbours")
    single_call_threshold_tokens: int = Field(6000, ge=0, description="At or below this, one call")
    max_parallel_tasks: int = Field(3, ge=1, le=64, description="Sub-tasks in flight within one run")
    timeout_seconds: float = Field(300, gt=0, le=86_400, description="Per call, once the model is loaded")
    load_timeout_seconds: float = Field(120, ge=0, le=3600, description="Extra wait for a cold model load")
    stall_timeout_seconds: float = Field(60, gt=0, le=3600, description="Longest silence inside a stream")
    max_attempts: int = Field(4, ge=1, le=10, description="Tries per call for transient failures")
    retry_backoff_seconds: float = Field(1.0, ge=0, le=60, description="First backoff; doubles, with jitter")
    aggregation_strategy: Literal["auto", "concatenate", "sequential", "hierarchical"] = "auto"
    max_synthesis_depth: int = Field(4, ge=1, le=10, description="Levels of hierarchical synthesis")
    max_shared_context_tokens: int = Field(1024, ge=0, description="Largest preamble shared by all parts")
    enable_token_count_cache: bool = True
    enable_result_caching: bool = False
    result_cache_ttl_seconds: int = Field(86_400, ge=1, description="Expiry of cached answers")
    think: bool | None = Field(None, description="Reasoning on/off for thinking models; None leaves it")
    allow_partial: bool = Field(False, description="Return an answer that marks failed sections")
    temperature: float = Field(0.2, ge=0, le=2)

    @model_validator(mode="after")
    def _fits(self) -> AgentConfig:
        if self.response_reserve_tokens >= self.max_context_tokens // 2:
            raise ValueError(
                f"response_reserve_tokens ({self.response_reserve_tokens}) must be under half of "
                f"max_context_tokens ({self.max_context_tokens})"
            )
        return self

    def with_server(self, host: str, model: str) -> AgentConfig:
        """A copy whose unset host and model are filled in."""
        return self.model_copy(
            update={"ollama_host": self.ollama_host or host, "ollama_model": self.ollama_model or model}
        )

    @property
    def host(self) -> str:
        if not self.ollama_host:
            raise InputError("no Ollama host configured: set ollama_host or an OllamaServer block")
        return self.ollama_host

    @property
    def model(self) -> str:
        if not self.ollama_model:
            raise InputError("no Ollama model configured: set ollama_model or an OllamaServer block")
        return self.ollama_model

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_initial_s=self.retry_backoff_seconds,
            jitter_s=min(1.0, self.retry_backoff_seconds),
        )

    def timeouts(self) -> Timeouts:
        return Timeouts(
            call_s=self.timeout_seconds, load_s=self.load_timeout_seconds, stall_s=self.stall_timeout_seconds
        )


@dataclass(frozen=True, slots=True)
class SubTask:
    index: int  # 1-based
    total: int
    section: str
    messages: tuple[ChatMessage, ...]
    estimate_tokens: int


@dataclass(frozen=True, slots=True)
class Plan:
    mode: Literal["single", "decompose"]
    prompt_tokens: int
    num_ctx: int
    model_context_tokens: int | None
    input_budget: int
    options: ChatOptions
    shared_context: str
    chunks: tuple[Chunk, ...]
    subtasks: tuple[SubTask, ...]
    strategy: Strategy | None


@dataclass(slots=True)
class SubTaskRecord:
    key: str  # "1".."n" for sections, "L1-G1"/"S2" for synthesis, "single" for one call
    kind: Literal["single", "section", "synthesis"]
    section: str
    tokens_in: int
    tokens_out: int
    duration_s: float
    attempts: int
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    content: str = ""
    estimate_tokens: int = 0

    def as_row(self) -> dict[str, object]:
        return {
            "part": self.key,
            "kind": self.kind,
            "section": self.section,
            "tokens in": self.tokens_in,
            "tokens out": self.tokens_out,
            "seconds": round(self.duration_s, 2),
            "attempts": self.attempts,
            "status": self.status if self.error is None else f"{self.status}: {self.error}",
        }


@dataclass(slots=True)
class DecompositionResult:
    final_response: str
    mode: Literal["single", "decompose"]
    strategy: str
    total_tokens_used: int
    total_duration_seconds: float
    prompt_tokens: int
    num_ctx: int
    subtasks: list[SubTaskRecord] = field(default_factory=list)
    synthesis: list[SubTaskRecord] = field(default_factory=list)
    missing_sections: list[str] = field(default_factory=list)

    @property
    def is_partial(self) -> bool:
        return bool(self.missing_sections)


# ------------------------------------------------------------------------------------------------ plan


def validate_prompt(prompt: str) -> str:
    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty; pass text or @file with content")
    return prompt


def plan_prompt(
    prompt: str,
    config: AgentConfig,
    model: ModelInfo | None,
    counter: TokenCounter,
    instructions: str | None = None,
) -> Plan:
    """Analyze and decide: one call, or sections with shared instructions that each fit the context."""
    validate_prompt(prompt)
    model_context = model.context_length if model else None
    num_ctx = min(config.max_context_tokens, model_context or config.max_context_tokens)
    if config.response_reserve_tokens >= num_ctx // 2:
        raise PlanningError(
            f"model {config.model!r} has a context of {num_ctx} tokens, too small for a response "
            f"reserve of {config.response_reserve_tokens}; lower response_reserve_tokens"
        )
    input_budget = num_ctx - config.response_reserve_tokens
    options = ChatOptions(
        num_ctx=num_ctx, num_predict=config.response_reserve_tokens, temperature=config.temperature
    )
    prompt_tokens = counter.count(prompt)
    single_estimate = prompt_tokens + MESSAGE_OVERHEAD_TOKENS
    if instructions:
        single_estimate += counter.count(instructions) + MESSAGE_OVERHEAD_TOKENS
    if prompt_tokens <= config.single_call_threshold_tokens and single_estimate <= input_budget:
        messages = (ChatMessage("user", prompt),)
        if instructions:
            messages = (ChatMessage("system", instructions), *messages)
        subtask = SubTask(1, 1, "whole prompt", messages, single_estimate)
        return Plan(
            "single",
            prompt_tokens,
            num_ctx,
            model_context,
            input_budget,
            options,
            instructions or "",
            (),
            (subtask,),
            None,
        )

    if instructions is not None:
        shared, body = instructions, prompt
    else:
        shared, body = extract_shared_context(prompt, config.max_shared_context_tokens, counter)
    system_overhead = counter.count(_section_system(shared, 99_999, 99_999)) + 2 * MESSAGE_OVERHEAD_TOKENS
    chunk_budget = input_budget - system_overhead
    if chunk_budget < max(128, 2 * config.chunk_overlap_tokens):
        raise PlanningError(
            f"the shared instructions take {system_overhead} of {input_budget} input tokens, leaving "
            f"{chunk_budget} per section; shorten them or raise max_context_tokens"
        )
    chunks = split_document(body, SplitOptions(chunk_budget, config.chunk_overlap_tokens), counter)
    total = len(chunks)
    subtasks = tuple(
        SubTask(
            c.index + 1,
            total,
            c.section or f"part {c.index + 1}",
            (ChatMessage("system", _section_system(shared, c.index + 1, total)), ChatMessage("user", c.text)),
            counter.count(_section_system(shared, c.index + 1, total))
            + c.tokens
            + 2 * MESSAGE_OVERHEAD_TOKENS,
        )
        for c in chunks
    )
    strategy = choose_strategy(total, config.aggregation_strategy)
    return Plan(
        "decompose",
        prompt_tokens,
        num_ctx,
        model_context,
        input_budget,
        options,
        shared,
        tuple(chunks),
        subtasks,
        strategy,
    )


def _section_system(shared: str, index: int, total: int) -> str:
    return SECTION_SYSTEM.format(index=index, total=total, instructions=shared.strip() or NO_INSTRUCTIONS)


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


# ------------------------------------------------------------------------------------------------ execute


@dataclass(frozen=True, slots=True)
class Part:
    """One call to make: a section, a synthesis step, or the whole prompt."""

    key: str
    kind: Literal["single", "section", "synthesis"]
    section: str
    messages: tuple[ChatMessage, ...]
    estimate_tokens: int

    @classmethod
    def of_subtask(cls, subtask: SubTask, kind: Literal["single", "section"]) -> Part:
        key = "single" if kind == "single" else str(subtask.index)
        return cls(key, kind, subtask.section, subtask.messages, subtask.estimate_tokens)

    @classmethod
    def of_synthesis(cls, request: SynthesisRequest) -> Part:
        return cls(
            request.key, "synthesis", f"parts {request.label}", request.messages, request.estimate_tokens
        )


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

            if plan.mode == "single":
                record = await run(Part.of_subtask(plan.subtasks[0], "single"))
                if record.status == "failed":
                    raise SubTaskFailedError(f"the prompt (one call) failed: {record.error}")
                return build_result(plan, record.content, [record], [], [], started)

            sections = list(
                await asyncio.gather(*(run(Part.of_subtask(s, "section")) for s in plan.subtasks))
            )
            answers, missing = section_answers(sections, config.allow_partial)
            aggregator = new_aggregator(plan, answers, config, self.counter)
            synthesis: list[SubTaskRecord] = []
            while batch := aggregator.next_batch():
                done = list(await asyncio.gather(*(run(Part.of_synthesis(r)) for r in batch)))
                synthesis.extend(done)
                aggregator.feed(synthesis_answers(done))
            return build_result(plan, aggregator.final, sections, synthesis, missing, started)


# --------------------------------------------------------------------------------------- Prefect tasks


def answer_part(part: Part, config: AgentConfig, options: ChatOptions) -> SubTaskRecord:
    """One call from a Prefect task run (the flow holds the host's concurrency slots around the batch)."""

    async def call() -> SubTaskRecord:
        async with OllamaClient(
            config.host, timeouts=config.timeouts(), retry=config.retry_policy()
        ) as client:
            return await ask(client, config, options, part)

    return asyncio.run(call())


def result_cache_key(context: object, parameters: dict[str, Any]) -> str:
    """Cached answers are keyed by host, model, options and prompt, nothing else."""
    part, config, options = parameters["part"], parameters["config"], parameters["options"]
    messages = [(m.role, m.content) for m in part.messages]
    key = hash_objects(config.host, config.model, options.as_json(), config.think, messages)
    if key is None:
        raise RuntimeError("could not hash the answer cache key")
    return key


def inspect_model(config: AgentConfig) -> ModelInfo:
    """The model's real context (from /api/show); fails naming the host or the model to pull."""

    async def call() -> ModelInfo:
        async with OllamaClient(
            config.host, timeouts=config.timeouts(), retry=config.retry_policy()
        ) as client:
            return await client.show(config.model)

    return asyncio.run(call())


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
