"""The `decompose` flow on a real Prefect server, talking to the stand-in Ollama over HTTP."""

from __future__ import annotations

import re
import threading

import httpx
import pytest

from blocks.ollama import OllamaServer, host_limit_name
from flows.concurrency_limits import ensure_limit
from flows.decompose import decompose
from tasks.decomposition.plan import AgentConfig
from tasks.errors import InputError, SubTaskFailedError
from tests.builders import marked_document
from tests.conftest import MODEL
from tests.standins.ollama import StandinOllama


def config_for(url: str, **overrides: object) -> AgentConfig:
    settings: dict[str, object] = {"ollama_host": url, "ollama_model": MODEL, "retry_backoff_seconds": 0.01}
    return AgentConfig(**{**settings, **overrides})


def artifacts(api_url: str, key: str) -> list[dict]:
    # Artifact.get / read_artifacts are unreliable on prefect 3.8.8; the REST filter is the contract.
    response = httpx.post(
        f"{api_url}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 5},
    )
    response.raise_for_status()
    return response.json()


def test_flow_answers_every_section_and_leaves_an_artifact(
    ollama: StandinOllama, prefect_server: str
) -> None:
    result = decompose(marked_document(24), config_for(ollama.url), server=None)
    assert set(re.findall(r"MARK-\d+", result.final_response)) == {f"MARK-{i}" for i in range(1, 25)}
    assert result.mode == "decompose" and len(result.subtasks) >= 3
    [latest, *_] = artifacts(prefect_server, "decompose-answer")
    assert "MARK-24" in latest["data"]
    assert (
        "| part | kind | section | tokens in | tokens out | seconds | attempts | status |" in latest["data"]
    )
    assert f"| {result.subtasks[0].key} | section |" in latest["data"]
    assert {r.body["options"]["num_ctx"] for r in ollama.chat_requests()} == {8192}


def test_simultaneous_runs_never_exceed_the_hosts_limit(prefect_server: str) -> None:
    with StandinOllama(models={MODEL: 32768}, num_parallel=16, latency_s=0.3) as server:
        ensure_limit(host_limit_name(server.url), 2)  # the host's OLLAMA_NUM_PARALLEL, below 2 runs x 3
        errors: list[BaseException] = []

        def run() -> None:
            try:
                decompose(marked_document(40), config_for(server.url), server=None)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not errors
        assert server.peak_active == 2
        assert len(server.chat_requests()) >= 8


def test_a_failed_section_fails_the_run_naming_it(ollama: StandinOllama) -> None:
    ollama.inject("ok", *["500"] * 2)
    config = config_for(ollama.url, max_attempts=2, max_parallel_tasks=1)
    with pytest.raises(SubTaskFailedError, match=r"part 2 'Section"):
        decompose(marked_document(24), config, server=None)


def test_cached_answers_are_reused_across_runs(ollama: StandinOllama) -> None:
    config = config_for(ollama.url, enable_result_caching=True)
    first = decompose(marked_document(10), config, server=None)
    calls = len(ollama.chat_requests())
    second = decompose(marked_document(10), config, server=None)
    assert len(ollama.chat_requests()) == calls
    assert second.final_response == first.final_response


def test_the_server_block_supplies_host_model_and_limit(ollama: StandinOllama, prefect_server: str) -> None:
    OllamaServer(host=ollama.url, model=MODEL, num_parallel=2).save("test-box", overwrite=True)
    result = decompose("A short question. MARK-5", AgentConfig(), server="test-box")
    assert "MARK-5" in result.final_response
    limit = httpx.get(f"{prefect_server}/v2/concurrency_limits/{host_limit_name(ollama.url)}").json()
    assert limit["limit"] == 2


def test_no_block_and_no_host_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="no OllamaServer block named 'absent'"):
        decompose("hello", AgentConfig(), server="absent")
