"""The Ollama client against the stand-in server, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest

from tasks.decomposition.ollama import (
    ChatMessage,
    ChatOptions,
    OllamaClient,
    RetryPolicy,
    Timeouts,
    _Wait,
    display_host,
    is_truncated,
    strip_think,
)
from tasks.errors import (
    ModelNotPulledError,
    OllamaRequestError,
    OllamaServerError,
    OllamaUnreachableError,
    TruncatedPromptError,
)
from tests.conftest import MODEL, THINKING_MODEL
from tests.standins.ollama import StandinOllama

FAST = RetryPolicy(max_attempts=4, backoff_initial_s=0.01, backoff_max_s=0.05, jitter_s=0.01)
OPTIONS = ChatOptions(num_ctx=8192, num_predict=256)
HELLO = [ChatMessage("user", "Say hello. MARK-7")]


def chat(
    url: str,
    messages: list[ChatMessage] = HELLO,
    options: ChatOptions = OPTIONS,
    *,
    retry: RetryPolicy = FAST,
    timeouts: Timeouts | None = None,
    **kwargs: Any,
) -> Any:
    async def call() -> Any:
        async with OllamaClient(url, retry=retry, timeouts=timeouts) as client:
            return await client.chat(kwargs.pop("model", MODEL), messages, options, **kwargs)

    return asyncio.run(call())


def test_streaming_chat_returns_content_and_counters(ollama: StandinOllama) -> None:
    reply = chat(ollama.url)
    assert "MARK-7" in reply.content
    assert reply.prompt_eval_count and reply.eval_count
    assert reply.done_reason == "stop"
    assert reply.attempts == 1
    [request] = ollama.chat_requests()
    assert request.body["stream"] is True
    assert request.body["options"]["num_ctx"] == 8192  # always sent


def test_non_streaming_chat_parses_the_single_object(ollama: StandinOllama) -> None:
    reply = chat(ollama.url, stream=False)
    assert "MARK-7" in reply.content
    assert ollama.chat_requests()[0].body["stream"] is False


def test_think_is_sent_and_thinking_is_kept_apart(ollama: StandinOllama) -> None:
    reply = chat(ollama.url, model=THINKING_MODEL, think=True)
    assert ollama.chat_requests()[0].body["think"] is True
    assert reply.thinking.startswith("Reading")
    assert "<think>" not in reply.content


def test_inline_think_blocks_from_older_servers_are_stripped(ollama: StandinOllama) -> None:
    ollama.legacy_think = True
    reply = chat(ollama.url, model=THINKING_MODEL, think=True)
    assert reply.content.startswith("Answer")
    assert reply.thinking.startswith("Reading")
    assert strip_think("<think>a\nb</think>\nvisible") == ("visible", "a\nb")
    assert strip_think("<think>never closed") == ("", "never closed")


def test_think_is_not_sent_when_unset(ollama: StandinOllama) -> None:
    chat(ollama.url)
    assert "think" not in ollama.chat_requests()[0].body


@pytest.mark.parametrize("fault", ["500", "503", "reset", "error_line", "stall"])
def test_transient_faults_are_retried(ollama: StandinOllama, fault: str) -> None:
    ollama.inject(fault)
    reply = chat(ollama.url, timeouts=Timeouts(load_s=0.2, stall_s=0.3))
    assert reply.attempts == 2
    assert "MARK-7" in reply.content
    assert len(ollama.chat_requests()) == 2


def test_an_error_line_inside_a_200_stream_is_a_failure(ollama: StandinOllama) -> None:
    ollama.inject(*["error_line"] * 4)
    with pytest.raises(OllamaServerError, match="failed mid-stream: an error was encountered"):
        chat(ollama.url)
    assert len(ollama.chat_requests()) == 4


def test_gives_up_after_max_attempts_and_names_the_host(ollama: StandinOllama) -> None:
    ollama.inject(*["500"] * 10)
    with pytest.raises(OllamaServerError, match=r"ollama at http://127\.0\.0\.1:\d+ answered 500"):
        chat(ollama.url, retry=RetryPolicy(max_attempts=3, backoff_initial_s=0.01, jitter_s=0))
    assert len(ollama.chat_requests()) == 3


def test_a_4xx_is_not_retried(ollama: StandinOllama) -> None:
    async def call() -> None:
        async with OllamaClient(ollama.url, retry=FAST) as client:
            await client._get_json("POST", "/api/nope", {})

    with pytest.raises(OllamaRequestError, match="rejected the request \\(404\\)"):
        asyncio.run(call())
    assert len(ollama.requests) == 1


def test_a_missing_model_says_what_to_pull_where(ollama: StandinOllama) -> None:
    with pytest.raises(ModelNotPulledError) as info:
        chat(ollama.url, model="llama9:70b")
    assert (
        str(info.value) == f"model 'llama9:70b' is not pulled on {ollama.url} (run: ollama pull llama9:70b)"
    )
    assert len(ollama.chat_requests()) == 1


def test_an_unreachable_host_is_named(unused_port: int) -> None:
    with pytest.raises(
        OllamaUnreachableError, match=f"ollama at http://127.0.0.1:{unused_port} is unreachable"
    ):
        chat(f"http://127.0.0.1:{unused_port}", retry=RetryPolicy(max_attempts=2, backoff_initial_s=0.01))


def test_retry_after_is_honoured_over_a_shorter_backoff() -> None:
    wait = _Wait(RetryPolicy(backoff_initial_s=0.1, backoff_max_s=1, jitter_s=0, retry_after_cap_s=30))
    busy = OllamaServerError("busy", retry_after_s=7)
    state = types.SimpleNamespace(attempt_number=1, outcome=types.SimpleNamespace(exception=lambda: busy))
    assert wait(state) == 7
    capped = OllamaServerError("busy", retry_after_s=500)
    state.outcome = types.SimpleNamespace(exception=lambda: capped)
    assert wait(state) == 30
    state.outcome = types.SimpleNamespace(exception=lambda: OllamaServerError("plain"))
    assert wait(state) == pytest.approx(0.1)


def test_server_busy_503_carries_retry_after(ollama: StandinOllama) -> None:
    ollama.retry_after_s = 0
    ollama.inject("503")
    assert chat(ollama.url).attempts == 2
    busy = [r for r in ollama.chat_requests() if r.status == 503]
    assert len(busy) == 1


def test_a_cold_model_load_is_allowed_for_but_a_stall_is_not(ollama: StandinOllama) -> None:
    ollama.load_s = 0.6  # longer than the stall limit, shorter than load + stall
    reply = chat(ollama.url, timeouts=Timeouts(load_s=1.0, stall_s=0.3))
    assert reply.attempts == 1
    assert reply.load_duration_ns and reply.load_duration_ns >= 0.5e9


def test_changing_num_ctx_reloads_the_model(ollama: StandinOllama) -> None:
    chat(ollama.url)
    chat(ollama.url)
    assert ollama.loads == 1
    chat(ollama.url, options=ChatOptions(num_ctx=4096, num_predict=256))
    assert ollama.loads == 2


def test_silent_truncation_is_detected(ollama: StandinOllama) -> None:
    long = [ChatMessage("user", "token " * 3000)]
    with pytest.raises(
        TruncatedPromptError, match="evaluated 1024 tokens of an estimated 3008 with num_ctx=1024"
    ):
        chat(ollama.url, long, ChatOptions(num_ctx=1024, num_predict=64), estimate_tokens=3008)
    assert ollama.chat_requests()[0].truncated


def test_truncation_rule() -> None:
    assert is_truncated(3000, 2048, 2048)  # the window was filled
    assert is_truncated(5000, 1500, 2048)  # far below an estimate that was over the window
    assert not is_truncated(1500, 300, 8192)  # a cached prefix is not counted again
    assert not is_truncated(1500, None, 8192)
    assert not is_truncated(1500, 1400, 8192)


def test_show_reads_the_model_context(ollama: StandinOllama) -> None:
    async def call() -> Any:
        async with OllamaClient(ollama.url, retry=FAST) as client:
            return await client.show(THINKING_MODEL), await client.version(), await client.list_models()

    info, version, models = asyncio.run(call())
    assert info.context_length == 40960 and info.can_think
    assert version == "0.12.3"
    assert set(models) == {MODEL, THINKING_MODEL}


def test_queue_beyond_num_parallel_waits_and_beyond_max_queue_is_busy() -> None:
    with StandinOllama(models={MODEL: 8192}, num_parallel=2, max_queue=1, latency_s=0.3) as server:

        async def burst() -> list[Any]:
            async with OllamaClient(server.url, retry=RetryPolicy(max_attempts=1)) as client:
                calls = [client.chat(MODEL, HELLO, OPTIONS) for _ in range(4)]
                return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(burst())
    busy = [r for r in results if isinstance(r, OllamaServerError)]
    assert len(busy) == 1 and "server busy" in str(busy[0])  # 2 running + 1 waiting, the 4th refused
    assert server.peak_active == 2


def test_display_host_never_shows_credentials_or_paths() -> None:
    with_credentials = "http://user:secret@gpu-box:11434/api"  # pragma: allowlist secret
    assert display_host(with_credentials) == "http://gpu-box:11434"
