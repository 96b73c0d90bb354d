"""The shapes Ollama's documented API promises, as pydantic models, and a bounded NDJSON line reader.

Anything else a server sends (a list for `/api/show`, a context length of "lots", a `message` that is a
string, one endless line) becomes one line naming the host, the endpoint and what was wrong, instead of a
traceback or unbounded memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_LINE_BYTES = 1 << 20  # one NDJSON line; real lines are a few hundred bytes
MAX_ANSWER_CHARS = 8 << 20  # one answer (content + thinking); num_predict bounds a real one far below


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ShowReply(Lenient):
    model_info: dict[str, Any] | None = None
    capabilities: list[str] | None = None

    def context_length(self) -> int | None:
        info = self.model_info or {}
        arch = info.get("general.architecture")
        value = info.get(f"{arch}.context_length") if isinstance(arch, str) else None
        if value is None:  # some servers only list it under another key
            value = next((v for k, v in info.items() if k.endswith(".context_length")), None)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value <= 0:
            raise ValueError(f"model_info context_length is not a positive integer: {value!r}")
        return int(value)


class ChatMessageOut(Lenient):
    role: str = "assistant"
    content: str = ""
    thinking: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return "" if value is None else value


class ChatLine(Lenient):
    """One line of a streamed `/api/chat` reply (or the whole non-streamed reply)."""

    message: ChatMessageOut | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int | None = Field(None, ge=0)
    eval_count: int | None = Field(None, ge=0)
    total_duration: int | None = None
    load_duration: int | None = None


def describe(error: ValidationError) -> str:
    """The first problem pydantic found, as `field: what` (never the whole input)."""
    first = error.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "the reply"
    return f"{where}: {first['msg']}"


class LineTooLong(ValueError):
    pass


async def bounded_lines(chunks: AsyncIterator[bytes], max_line: int = MAX_LINE_BYTES) -> AsyncIterator[bytes]:
    """NDJSON lines from a byte stream, never holding more than `max_line` bytes of one line."""
    buffer = bytearray()
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if len(buffer) + end - start > max_line:
                raise LineTooLong(f"a line longer than {max_line} bytes")
            buffer += chunk[start:end]
            yield bytes(buffer)
            buffer.clear()
            start = end + 1
        buffer += chunk[start:]
        if len(buffer) > max_line:
            raise LineTooLong(f"a line longer than {max_line} bytes")
    if buffer:
        yield bytes(buffer)
