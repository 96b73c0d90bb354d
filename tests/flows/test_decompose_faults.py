"""Decomposition against an Ollama that misbehaves as real ones do, on both executors (the in-process agent
and the `decompose` flow on a real Prefect server): no exit-0 run returns an answer that lost content the
server cut off, every byte read is bounded, and each fault is one line naming the host."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from flows.decompose import decompose
from tasks.decomposition.agent import OllamaDecompositionAgent
from tasks.decomposition.plan import AgentConfig, DecompositionResult
from tasks.errors import GpuflowsError, RunTimeoutError, SubTaskFailedError
from tests.builders import marked_document
from tests.conftest import MODEL
from tests.standins.ollama import StandinOllama

Executor = Callable[[str, AgentConfig], DecompositionResult]


def agent(prompt: str, config: AgentConfig) -> DecompositionResult:
    return OllamaDecompositionAgent(config).process(prompt)


def flow(prompt: str, config: AgentConfig) -> DecompositionResult:
    return decompose(prompt, config, server=None)


EXECUTORS = [pytest.param(agent, id="agent"), pytest.param(flow, id="flow")]


def config_for(server: StandinOllama, **overrides: object) -> AgentConfig:
    settings: dict[str, object] = {
        "ollama_host": server.url,
        "ollama_model": MODEL,
        "retry_backoff_seconds": 0.01,
        "max_attempts": 2,
    }
    return AgentConfig(**{**settings, **overrides})


def markers(count: int) -> str:
    return "List every marker below.\n\n" + " ".join(f"MARK-{i}" for i in range(1, count + 1))


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text, text
    return text


@pytest.mark.parametrize("run", EXECUTORS)
def test_an_answer_cut_at_num_predict_is_continued_until_complete(run: Executor) -> None:
    with StandinOllama(models={MODEL: 32768}) as server:
        # 60 markers answer in ~240 tokens; each call may produce 128: the answer needs continuations.
        result = run(markers(60), config_for(server, response_reserve_tokens=128))
        cut = [
            r for r in server.chat_requests() if r.body["messages"][-1]["content"].startswith("Your previous")
        ]
    assert set(re.findall(r"MARK-\d+", result.final_response)) == {f"MARK-{i}" for i in range(1, 61)}
    assert cut and result.missing_sections == []


@pytest.mark.parametrize("run", EXECUTORS)
def test_sections_and_synthesis_cut_at_the_limit_are_continued(run: Executor) -> None:
    with StandinOllama(models={MODEL: 32768}) as server:
        result = run(marked_document(30), config_for(server, response_reserve_tokens=96))
    assert set(re.findall(r"MARK-\d+", result.final_response)) == {f"MARK-{i}" for i in range(1, 31)}
    assert result.synthesis, "the synthesis calls were cut and continued too"


@pytest.mark.parametrize("run", EXECUTORS)
def test_an_answer_still_cut_after_its_continuations_fails_naming_the_part(run: Executor) -> None:
    with StandinOllama(models={MODEL: 32768}) as server, pytest.raises(GpuflowsError) as failed:
        run(markers(60), config_for(server, response_reserve_tokens=128, max_continuations=0))
    assert "still cut at num_predict (128 tokens) after 0 continuation(s)" in one_line(failed.value)


@pytest.mark.parametrize("run", EXECUTORS)
def test_with_allow_partial_a_cut_section_is_named_at_the_top(run: Executor) -> None:
    with StandinOllama(models={MODEL: 32768}) as server:
        server.inject("ok", "empty")  # one section's answer comes back empty (not retried: it is final)
        result = run(marked_document(12), config_for(server, allow_partial=True, max_attempts=1))
    assert result.final_response.startswith("**Partial answer: 1 section(s) failed")
    assert result.missing_sections


@pytest.mark.parametrize("run", EXECUTORS)
def test_an_empty_answer_is_a_failure(run: Executor) -> None:
    with StandinOllama(models={MODEL: 32768}) as server, pytest.raises(GpuflowsError) as failed:
        server.inject("empty")
        run("Say hello.", config_for(server))
    assert f"ollama at {server.url} returned an empty answer to single single" in one_line(failed.value)


@pytest.mark.parametrize("run", EXECUTORS)
def test_an_endless_line_is_cut_at_the_bound(run: Executor) -> None:
    with StandinOllama(models={MODEL: 32768}) as server, pytest.raises(GpuflowsError) as failed:
        server.inject("endless", "endless")
        run("Say hello.", config_for(server))
    assert f"ollama at {server.url}: /api/chat sent a line longer than 1048576 bytes" in one_line(
        failed.value
    )


@pytest.mark.parametrize("run", EXECUTORS)
def test_a_trickle_without_an_answer_is_a_stall(run: Executor) -> None:
    config = {"stall_timeout_seconds": 1, "load_timeout_seconds": 0, "max_attempts": 1}
    with StandinOllama(models={MODEL: 32768}) as server, pytest.raises(GpuflowsError) as failed:
        server.inject("trickle")
        run("Say hello.", config_for(server, **config))
    assert f"ollama at {server.url} stalled: no answer for 1 s" in one_line(failed.value)


@pytest.mark.parametrize("run", EXECUTORS)
@pytest.mark.parametrize(
    ("show", "says"),
    [
        ([], "/api/show sent an unexpected reply (the reply: Input should be a valid dictionary"),
        (None, "/api/show sent an unexpected reply (the reply: Input should be a valid dictionary"),
        (
            {"model_info": {"general.architecture": "qwen2", "qwen2.context_length": "lots"}},
            "/api/show sent an unexpected reply (model_info context_length is not a positive integer: "
            "'lots')",
        ),
    ],
)
def test_a_garbage_show_reply_is_one_line(run: Executor, show: object, says: str) -> None:
    with StandinOllama(models={MODEL: 32768}, show_reply=show) as server, pytest.raises(GpuflowsError) as err:
        run("Say hello.", config_for(server))
    assert f"ollama at {server.url}: {says}" in one_line(err.value)


@pytest.mark.parametrize("run", EXECUTORS)
@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("message_string", "/api/chat sent an unexpected reply (message: Input should be a valid dictionary"),
        ("not_json", "/api/chat sent a line that is not JSON"),
    ],
)
def test_a_garbage_chat_line_is_one_line(run: Executor, fault: str, says: str) -> None:
    with StandinOllama(models={MODEL: 32768}) as server, pytest.raises(GpuflowsError) as failed:
        server.inject(fault, fault)
        run("Say hello.", config_for(server))
    assert f"ollama at {server.url}: {says}" in one_line(failed.value)


@pytest.mark.parametrize("run", EXECUTORS)
def test_the_whole_run_has_a_deadline(run: Executor) -> None:
    with StandinOllama(models={MODEL: 32768}, latency_s=20) as server, pytest.raises(RunTimeoutError) as late:
        run("Say hello.", config_for(server, run_timeout_seconds=1.5))
    assert one_line(late.value) == "the decomposition ran past its deadline (run_timeout_seconds)"


def test_sub_task_failures_still_name_their_sections() -> None:
    with StandinOllama(models={MODEL: 32768}) as server, pytest.raises(SubTaskFailedError) as failed:
        server.inject("ok", "empty")
        agent(marked_document(12), config_for(server))
    assert "1 of " in one_line(failed.value) and "empty answer" in str(failed.value)


PEAK = """
import re, runpy, sys
sys.argv = ["gpuflows", *sys.argv[1:]]
try:
    runpy.run_module("flows.cli", run_name="__main__")
finally:  # VmHWM: this process's peak resident memory since exec (a fork's copy of pytest not counted)
    status = open("/proc/self/status").read()
    print("PEAK_KB", re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
"""


def test_memory_stays_bounded_against_an_endless_line() -> None:
    """The CLI in its own process, against a server streaming one line forever: it fails with one line,
    and its peak RSS (all of Python, httpx, tiktoken and the agent) stays under 200 MB."""
    import subprocess
    import sys

    with StandinOllama(models={MODEL: 32768}) as server:
        server.inject(*["endless"] * 4)
        arguments = ["decompose", "--local", "--host", server.url, "--model", MODEL, "--attempts", "1"]
        done = subprocess.run(
            [sys.executable, "-c", PEAK, *arguments, "Say hello."],
            capture_output=True,
            text=True,
            timeout=120,
        )
    lines = done.stderr.strip().splitlines()
    peak_mb = int(lines[-1].split()[1]) / 1024
    print(f"\npeak RSS against an endless line: {peak_mb:.0f} MB")
    assert done.returncode == 1
    assert lines[-2] == (
        f"error: the prompt (one call) failed: ollama at {server.url}: /api/chat sent a line longer than "
        "1048576 bytes"
    )
    assert peak_mb < 200
