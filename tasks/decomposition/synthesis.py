"""Combine the sections' answers into one: concatenate, sequential or hierarchical, always within context.

`Aggregator` is a pure state machine: it hands out batches of synthesis requests (the requests of one batch
are independent and may run concurrently) and takes their answers back. The Python API drives it with
asyncio, the Prefect flow with mapped task runs; neither duplicates the strategy logic.

- concatenate (1-3 answers): one final synthesis call over all answers;
- sequential (4-10): a running answer folded with as many next answers as fit each step;
- hierarchical (more than 10): groups that fit are synthesised in parallel, level by level, to one root.
Every request is checked against the input budget; answers that do not fit together are collapsed in
groups first, and past `max_depth` levels the run fails with a clear error instead of dropping content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tasks.decomposition.ollama import ChatMessage
from tasks.decomposition.tokens import TokenCounter
from tasks.errors import PlanningError

Strategy = Literal["concatenate", "sequential", "hierarchical"]
MESSAGE_OVERHEAD_TOKENS = (
    8  # chat-template tokens around each message (ChatML: <|im_start|>role\n … <|im_end|>\n)
)

NO_INSTRUCTIONS = "(none given: report the key content, facts and conclusions)"

SYNTHESIS_SYSTEM = """You combine partial answers into one answer.
A prompt too large to process at once was split into {total} consecutive parts; each part was answered
separately. Below are the answers for parts {label}. Merge them into one coherent answer to the original
instructions: keep every distinct fact, figure, name and caveat, remove repetition, and do not mention the
parts or the splitting.

Original instructions:
{instructions}"""

SEQUENTIAL_SYSTEM = """You extend an answer part by part.
A prompt too large to process at once was split into {total} consecutive parts. You are given the answer so
far, covering parts {done}, and the answers for parts {label}. Return the updated answer covering parts
{covered}: keep every distinct fact, figure, name and caveat from both, remove repetition, and do not mention
the parts or the splitting.

Original instructions:
{instructions}"""


def choose_strategy(n_answers: int, configured: str) -> Strategy:
    if configured != "auto":
        return configured  # type: ignore[return-value]
    if n_answers <= 3:
        return "concatenate"
    if n_answers <= 10:
        return "sequential"
    return "hierarchical"


@dataclass(frozen=True, slots=True)
class Partial:
    """An answer covering parts first..last (1-based, inclusive)."""

    first: int
    last: int
    content: str

    @property
    def label(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


@dataclass(frozen=True, slots=True)
class SynthesisRequest:
    key: str  # stable within a run: "L1-G2" (level 1, group 2) or "S3" (sequential step 3)
    level: int
    first: int
    last: int
    messages: tuple[ChatMessage, ...]
    estimate_tokens: int

    @property
    def label(self) -> str:
        return f"{self.first}-{self.last}"


class Aggregator:
    def __init__(
        self,
        answers: Sequence[str],
        *,
        strategy: Strategy,
        instructions: str,
        input_budget: int,
        counter: TokenCounter,
        max_depth: int = 4,
    ) -> None:
        if not answers:
            raise PlanningError("nothing to synthesise: no section produced an answer")
        self.strategy = strategy
        self.total = len(answers)
        self.instructions = instructions.strip() or NO_INSTRUCTIONS
        self.budget = input_budget
        self.counter = counter
        self.max_depth = max_depth
        self.level = 0
        self._partials = [Partial(k + 1, k + 1, a) for k, a in enumerate(answers)]
        self._pending: list[SynthesisRequest] = []
        self._running: Partial | None = None  # sequential: the answer so far
        self._final: str | None = None
        self._steps = 0

    # ------------------------------------------------------------------------------------ protocol

    @property
    def done(self) -> bool:
        return self._final is not None

    @property
    def final(self) -> str:
        if self._final is None:
            raise RuntimeError("aggregation has not finished")
        return self._final

    def next_batch(self) -> list[SynthesisRequest]:
        """The next independent requests to run; empty once `final` is set."""
        if self._final is not None:
            return []
        if self._pending:
            raise RuntimeError("feed the answers of the previous batch first")
        if self.strategy == "sequential":
            self._pending = self._sequential_step()
        else:
            self._pending = self._level()
        return list(self._pending)

    def feed(self, answers: Sequence[str]) -> None:
        if len(answers) != len(self._pending):
            raise RuntimeError(f"expected {len(self._pending)} answers, got {len(answers)}")
        done = [Partial(r.first, r.last, a) for r, a in zip(self._pending, answers, strict=True)]
        self._pending = []
        if self.strategy == "sequential":
            self._running = done[0]
            if self._running.last == self.total:
                self._final = self._running.content
            return
        self._partials = done
        if len(done) == 1 and done[0].first == 1 and done[0].last == self.total:
            self._final = done[0].content

    # ------------------------------------------------------------------------------------ strategies

    def _estimate(self, system: str, user: str) -> int:
        return self.counter.count(system) + self.counter.count(user) + 2 * MESSAGE_OVERHEAD_TOKENS

    def _user_text(self, partials: Sequence[Partial]) -> str:
        return "\n\n".join(f"## Answer for part {p.label}\n\n{p.content.strip()}" for p in partials)

    def _request(self, key: str, partials: Sequence[Partial]) -> SynthesisRequest:
        first, last = partials[0].first, partials[-1].last
        label = ", ".join(p.label for p in partials)
        system = SYNTHESIS_SYSTEM.format(total=self.total, label=label, instructions=self.instructions)
        user = self._user_text(partials)
        return SynthesisRequest(
            key,
            self.level,
            first,
            last,
            (ChatMessage("system", system), ChatMessage("user", user)),
            self._estimate(system, user),
        )

    def _level(self) -> list[SynthesisRequest]:
        """One level: all partials in one request if they fit (and the strategy allows), else groups."""
        self.level += 1
        if self.level > self.max_depth:
            raise PlanningError(
                f"synthesis needs more than {self.max_depth} levels to fit {self.total} answers into "
                f"{self.budget} tokens; raise max_context_tokens, lower response_reserve_tokens, "
                "or raise the depth bound"
            )
        whole = self._request(f"L{self.level}-G1", self._partials)
        if whole.estimate_tokens <= self.budget:
            return [whole]
        groups: list[list[Partial]] = [[]]
        for partial in self._partials:
            candidate = groups[-1] + [partial]
            if groups[-1] and self._request("probe", candidate).estimate_tokens > self.budget:
                groups.append([partial])
            else:
                groups[-1] = candidate
        if any(self._request("probe", g).estimate_tokens > self.budget for g in groups) or len(groups) == len(
            self._partials
        ):
            raise PlanningError(
                f"two answers do not fit one synthesis prompt of {self.budget} tokens; "
                "lower response_reserve_tokens or raise max_context_tokens"
            )
        return [self._request(f"L{self.level}-G{k + 1}", g) for k, g in enumerate(groups)]

    def _sequential_step(self) -> list[SynthesisRequest]:
        """Fold the running answer with as many of the next answers as fit one prompt."""
        self._steps += 1
        self.level = self._steps
        running = self._running
        rest = self._partials[running.last if running else 0 :]
        batch: list[Partial] = []
        for partial in rest:
            if self._sequential_request(running, [*batch, partial]).estimate_tokens > self.budget:
                break
            batch.append(partial)
        if len(batch) < (1 if running else min(2, len(rest))):
            raise PlanningError(
                f"the answer so far and the next answer do not fit one synthesis prompt of {self.budget} "
                "tokens; lower response_reserve_tokens, raise max_context_tokens, or use hierarchical"
            )
        return [self._sequential_request(running, batch)]

    def _sequential_request(self, running: Partial | None, batch: Sequence[Partial]) -> SynthesisRequest:
        if running is None:  # the first step is a plain synthesis of parts 1..k
            return self._request(f"S{self._steps}", batch)
        done = "1" if running.last == 1 else f"1-{running.last}"
        system = SEQUENTIAL_SYSTEM.format(
            total=self.total,
            done=done,
            label=", ".join(p.label for p in batch),
            covered=f"1-{batch[-1].last}",
            instructions=self.instructions,
        )
        user = f"## Answer so far (parts {done})\n\n{running.content.strip()}\n\n" + self._user_text(batch)
        return SynthesisRequest(
            f"S{self._steps}",
            self._steps,
            1,
            batch[-1].last,
            (ChatMessage("system", system), ChatMessage("user", user)),
            self._estimate(system, user),
        )
