"""Async client for the Ollama REST API (`/api/chat`, `/api/show`, `/api/version`, `/api/tags`).

What it guarantees to its callers:
- `options.num_ctx` is always sent, from one frozen `ChatOptions` per run (a change reloads the model);
- streaming NDJSON is parsed line by line, and an `{"error": ...}` line inside a 200 stream is a failure;
- connection errors, 5xx and 503 "server busy" are retried with exponential backoff and jitter, honouring
  `Retry-After`; 4xx are not; a 404 says which model to pull on which host;
- a cold model load is allowed for before the first line, a stall after it is not;
- `<think>` blocks that older servers put in `content` are stripped; `think` is sent when configured;
- silent truncation is detected by comparing `prompt_eval_count` with the caller's own estimate;
- every reply is checked against the documented shape (tasks/decomposition/replies.py), and every byte read
  is bounded: one line, one answer; a stream that sends bytes but no answer (a trickle) counts as stalled.
  Each violation is one line naming the host, the endpoint and what was wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any, Literal

import httpx
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from tasks.decomposition.replies import (
    MAX_ANSWER_CHARS,
    MAX_LINE_BYTES,
    ChatLine,
    LineTooLong,
    ShowReply,
    bounded_lines,
    describe,
)
from tasks.errors import (
    ModelNotPulledError,
    OllamaError,
    OllamaProtocolError,
    OllamaRequestError,
    OllamaServerError,
    OllamaUnreachableError,
    TruncatedPromptError,
)

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_MODEL = "qwen2.5:7b-instruct"
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)\s*", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class ChatOptions:
    """Model options for every call of one run; frozen so num_ctx cannot drift between calls."""

    num_ctx: int
    num_predict: int
    temperature: float = 0.2
    seed: int | None = None

    def as_json(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_ctx": self.num_ctx,
            "num_predict": self.num_predict,
            "temperature": self.temperature,
        }
        if self.seed is not None:
            options["seed"] = self.seed
        return options


@dataclass(frozen=True, slots=True)
class ChatReply:
    content: str
    thinking: str
    prompt_eval_count: int | None
    eval_count: int | None
    done_reason: str | None
    total_duration_ns: int | None
    load_duration_ns: int | None
    attempts: int
    wall_s: float


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    context_length: int | None  # the model's trained context, from model_info["<arch>.context_length"]
    capabilities: tuple[str, ...] = field(default_factory=tuple)

    @property
    def can_think(self) -> bool:
        return "thinking" in self.capabilities


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    jitter_s: float = 1.0
    retry_after_cap_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 10.0
    #: the whole call, once the model is in memory
    call_s: float = 300.0
    #: extra allowance before the first line, for a cold model load
    load_s: float = 120.0
    #: the longest silence between two stream lines before the call counts as stalled
    stall_s: float = 60.0


@cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process: httpx builds a new one (~35 ms, loading the CA bundle) per client."""
    return ssl.create_default_context()


def display_host(host: str) -> str:
    """The host as it may appear in messages: scheme, name and port, never credentials or paths."""
    url = httpx.URL(host)
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def strip_think(content: str) -> tuple[str, str]:
    """Split `<think>…</think>` blocks (older servers inline them) from the visible answer."""
    thoughts = [m.group(0) for m in _THINK_BLOCK.finditer(content)]
    if not thoughts:
        return content, ""
    visible = _THINK_BLOCK.sub("", content)
    thinking = "\n".join(t.replace("<think>", "").replace("</think>", "").strip() for t in thoughts)
    return visible.strip(), thinking


def is_truncated(estimate_tokens: int, prompt_eval_count: int | None, num_ctx: int) -> bool:
    """Whether the server dropped part of the prompt.

    Ollama truncates a prompt longer than num_ctx without an error. Its count then fills the window, or
    falls well short of an estimate that was itself over the window. A smaller count on its own is not
    truncation: a prompt prefix reused from the KV cache is not counted again.
    """
    if prompt_eval_count is None:
        return False
    if prompt_eval_count >= num_ctx:
        return True
    return estimate_tokens > num_ctx and prompt_eval_count < 0.8 * estimate_tokens


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class _Wait:
    """Exponential backoff with jitter, or the server's Retry-After when it asks for longer."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._backoff = wait_exponential_jitter(
            initial=policy.backoff_initial_s, max=policy.backoff_max_s, jitter=policy.jitter_s
        )

    def __call__(self, retry_state: Any) -> float:
        delay = self._backoff(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, OllamaServerError) and error.retry_after_s is not None:
            delay = max(delay, min(error.retry_after_s, self._policy.retry_after_cap_s))
        return delay


class OllamaClient:
    """One Ollama host. Use as `async with OllamaClient(host) as client:`."""

    def __init__(
        self,
        host: str,
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.display_host = display_host(self.host)
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> OllamaClient:
        t = self.timeouts
        self._http = httpx.AsyncClient(
            base_url=self.host,
            # read=None: per-line deadlines are enforced below, with the cold-load allowance on the first
            timeout=httpx.Timeout(connect=t.connect_s, read=None, write=t.connect_s, pool=None),
            transport=self._transport,
            trust_env=False,
            verify=_tls_context(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ------------------------------------------------------------------------------------------- public

    async def version(self) -> str:
        data = await self._retrying(lambda: self._get_json("GET", "/api/version"))
        if not isinstance(data, dict):
            raise self._shape_error("/api/version", "the reply is not an object")
        return str(data.get("version", "unknown"))

    async def list_models(self) -> list[str]:
        data = await self._retrying(lambda: self._get_json("GET", "/api/tags"))
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
            raise self._shape_error("/api/tags", "models is not a list of objects")
        return [str(m.get("name") or m.get("model", "")) for m in models]

    async def show(self, model: str) -> ModelInfo:
        data = await self._retrying(
            lambda: self._get_json("POST", "/api/show", {"model": model}, model=model)
        )
        try:
            reply = ShowReply.model_validate(data)
            context = reply.context_length()
        except ValidationError as exc:
            raise self._shape_error("/api/show", describe(exc)) from None
        except ValueError as exc:
            raise self._shape_error("/api/show", str(exc)) from None
        return ModelInfo(model, context, tuple(reply.capabilities or ()))

    async def push_blob(self, data: bytes) -> str:
        """Uploads a file's bytes as a blob (`POST /api/blobs/:digest`) unless the server has it; returns the
        digest."""
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        path = f"/api/blobs/{digest}"
        try:
            head = await self._client().head(path)
            if head.status_code == 200:
                return digest
            response = await self._client().post(path, content=data)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, "/api/blobs") from exc
        self._raise_for_status(response, response.text, None)
        return digest

    async def create_model(self, model: str, base: str, adapters: dict[str, str]) -> None:
        """`POST /api/create`: `model` is `base` with the LoRA adapter files (name → blob digest)."""
        body = {"model": model, "from": base, "adapters": adapters, "stream": False}
        data = await self._get_json("POST", "/api/create", body)
        if not isinstance(data, dict) or data.get("status") != "success":
            raise self._shape_error(
                "/api/create", f"status {data.get('status') if isinstance(data, dict) else data!r}"
            )

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: ChatOptions,
        *,
        think: bool | None = None,
        estimate_tokens: int | None = None,
        keep_alive: str | None = None,
        stream: bool = True,
    ) -> ChatReply:
        """One chat completion, retried on transient failures; raises `OllamaError` subclasses."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": stream,
            "options": options.as_json(),
        }
        if think is not None:
            body["think"] = think
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        started = time.monotonic()
        retrying = self._retrier()
        reply: dict[str, Any] = {}
        async for attempt in retrying:
            with attempt:
                reply = await self._chat_once(body, model)
        attempts = retrying.statistics.get("attempt_number", 1)
        content, inline_thinking = strip_think(reply["content"])
        result = ChatReply(
            content=content,
            thinking=(reply["thinking"] or inline_thinking),
            prompt_eval_count=reply["final"].prompt_eval_count,
            eval_count=reply["final"].eval_count,
            done_reason=reply["final"].done_reason,
            total_duration_ns=reply["final"].total_duration,
            load_duration_ns=reply["final"].load_duration,
            attempts=attempts,
            wall_s=time.monotonic() - started,
        )
        if estimate_tokens is not None and is_truncated(
            estimate_tokens, result.prompt_eval_count, options.num_ctx
        ):
            raise TruncatedPromptError(
                f"ollama at {self.display_host} truncated the prompt: it evaluated "
                f"{result.prompt_eval_count} tokens of an estimated {estimate_tokens} "
                f"with num_ctx={options.num_ctx} "
                "(lower max_context_tokens or raise the model's context)"
            )
        return result

    # ------------------------------------------------------------------------------------------- internals

    def _retrier(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.retry.max_attempts),
            wait=_Wait(self.retry),
            retry=retry_if_exception(lambda e: isinstance(e, OllamaError) and e.transient),
            reraise=True,
        )

    async def _retrying(self, call: Any) -> Any:
        async for attempt in self._retrier():
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("use OllamaClient as an async context manager")
        return self._http

    async def _get_json(
        self, method: str, path: str, body: dict[str, Any] | None = None, model: str | None = None
    ) -> Any:
        try:
            async with asyncio.timeout(self.timeouts.connect_s + self.timeouts.stall_s):
                response = await self._client().request(method, path, json=body)
        except TimeoutError as exc:
            raise OllamaServerError(f"ollama at {self.display_host} did not answer {path} in time") from exc
        except httpx.TransportError as exc:
            raise self._transport_error(exc, path) from exc
        self._raise_for_status(response, response.text, model)
        try:
            return response.json()
        except ValueError as exc:
            raise OllamaServerError(f"ollama at {self.display_host} sent invalid JSON for {path}") from exc

    async def _chat_once(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        t = self.timeouts
        content: list[str] = []
        thinking: list[str] = []
        size = 0
        final: ChatLine | None = None
        try:
            async with asyncio.timeout(t.call_s + t.load_s):
                async with self._client().stream("POST", "/api/chat", json=body) as response:
                    if response.status_code >= 400:
                        text = (await response.aread()).decode("utf-8", "replace")
                        self._raise_for_status(response, text, model)
                    lines = bounded_lines(response.aiter_bytes(), MAX_LINE_BYTES)
                    first = True
                    progress_at = time.monotonic()
                    while True:
                        wait = t.load_s + t.stall_s if first else t.stall_s
                        try:
                            # Bytes without an answer (a trickle of empty lines) do not reset the clock.
                            budget = max(0.0, wait - (time.monotonic() - progress_at))
                            async with asyncio.timeout(budget):
                                line = await anext(lines)
                        except StopAsyncIteration:
                            break
                        except TimeoutError as exc:
                            raise OllamaServerError(
                                f"ollama at {self.display_host} stalled: no answer for {wait:.0f} s"
                            ) from exc
                        if not line.strip():
                            continue
                        chunk = self._parse_line(line)
                        message = chunk.message
                        piece = message.content if message else ""
                        thought = (message.thinking or "") if message else ""
                        if piece or thought or chunk.done:
                            progress_at, first = time.monotonic(), False
                        size += len(piece) + len(thought)
                        if size > MAX_ANSWER_CHARS:
                            raise OllamaProtocolError(
                                f"ollama at {self.display_host}: /api/chat sent an answer longer than "
                                f"{MAX_ANSWER_CHARS} characters"
                            )
                        content.append(piece)
                        thinking.append(thought)
                        if chunk.done:
                            final = chunk
                            break
        except TimeoutError as exc:
            raise OllamaServerError(
                f"ollama at {self.display_host} did not finish a chat in {t.call_s + t.load_s:.0f} s"
            ) from exc
        except LineTooLong as exc:
            raise OllamaProtocolError(f"ollama at {self.display_host}: /api/chat sent {exc}") from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, "/api/chat") from exc
        if final is None:
            raise OllamaServerError(f"ollama at {self.display_host} ended the stream before done=true")
        return {"content": "".join(content), "thinking": "".join(thinking), "final": final}

    def _parse_line(self, line: bytes) -> ChatLine:
        try:
            data = json.loads(line)
        except ValueError:
            raise OllamaProtocolError(
                f"ollama at {self.display_host}: /api/chat sent a line that is not JSON"
            ) from None
        if isinstance(data, dict) and "error" in data:  # an error can arrive inside a 200 stream
            raise OllamaServerError(f"ollama at {self.display_host} failed mid-stream: {data['error']}")
        try:
            return ChatLine.model_validate(data)
        except ValidationError as exc:
            raise self._shape_error("/api/chat", describe(exc)) from None

    def _shape_error(self, path: str, what: str) -> OllamaProtocolError:
        return OllamaProtocolError(f"ollama at {self.display_host}: {path} sent an unexpected reply ({what})")

    def _transport_error(self, exc: httpx.TransportError, path: str) -> OllamaError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return OllamaUnreachableError(
                f"ollama at {self.display_host} is unreachable ({type(exc).__name__}); "
                "is `ollama serve` running there?"
            )
        return OllamaServerError(f"ollama at {self.display_host} broke the connection during {path}")

    def _raise_for_status(self, response: httpx.Response, text: str, model: str | None) -> None:
        status = response.status_code
        if status < 400:
            return
        try:
            detail = str(json.loads(text).get("error", ""))
        except (ValueError, AttributeError):
            detail = text[:200]
        if status == 404 and model is not None:
            raise ModelNotPulledError(
                f"model {model!r} is not pulled on {self.display_host} (run: ollama pull {model})"
            )
        if status >= 500:
            raise OllamaServerError(
                f"ollama at {self.display_host} answered {status}: {detail}", _retry_after_s(response)
            )
        raise OllamaRequestError(f"ollama at {self.display_host} rejected the request ({status}): {detail}")
