"""What a decomposition is made of, and how a prompt becomes one: the agent's configuration, the plan
(one call, or sections with shared context and overlap, each checked against the budget), the parts to call,
their records and the result. No I/O: the driver runs the plan, the executors make the calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.decomposition.ollama import (
    ChatMessage,
    ChatOptions,
    ModelInfo,
    RetryPolicy,
    Timeouts,
)
from tasks.decomposition.splitting import Chunk, SplitOptions, extract_shared_context, split_document
from tasks.decomposition.synthesis import (
    MESSAGE_OVERHEAD_TOKENS,
    NO_INSTRUCTIONS,
    Strategy,
    SynthesisRequest,
    choose_strategy,
)
from tasks.decomposition.tokens import TokenCounter
from tasks.errors import InputError, PlanningError

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
    max_continuations: int = Field(
        3, ge=0, le=10, description="Follow-up calls for an answer cut at the length limit"
    )
    run_timeout_seconds: float = Field(
        1800, gt=0, le=86_400, description="Deadline of the whole run: past it, it fails with one line"
    )
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
