"""The in-process agent end to end against the stand-in Ollama, and its planning rules."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from tasks.decomposition.agent import OllamaDecompositionAgent
from tasks.decomposition.ollama import ModelInfo
from tasks.decomposition.plan import AgentConfig, plan_prompt
from tasks.decomposition.tokens import TokenCounter
from tasks.errors import (
    InputError,
    ModelNotPulledError,
    OllamaUnreachableError,
    PlanningError,
    SubTaskFailedError,
)
from tests.builders import marked_document
from tests.conftest import MODEL
from tests.standins.ollama import StandinOllama


def config_for(url: str, **overrides: object) -> AgentConfig:
    settings: dict[str, object] = {"ollama_host": url, "ollama_model": MODEL, "retry_backoff_seconds": 0.01}
    return AgentConfig(**{**settings, **overrides})


def markers(text: str) -> set[str]:
    return set(re.findall(r"MARK-\d+", text))


def test_a_small_prompt_is_one_call(ollama: StandinOllama) -> None:
    result = OllamaDecompositionAgent(config_for(ollama.url)).process("What is a GPU? MARK-1")
    assert result.mode == "single" and result.strategy == "single"
    assert markers(result.final_response) == {"MARK-1"}
    assert len(ollama.chat_requests()) == 1
    assert result.total_tokens_used == result.subtasks[0].tokens_in + result.subtasks[0].tokens_out


def test_a_large_prompt_is_split_answered_and_synthesised(ollama: StandinOllama) -> None:
    prompt = marked_document(30)
    result = OllamaDecompositionAgent(config_for(ollama.url)).process(prompt)
    assert result.mode == "decompose"
    assert len(result.subtasks) > 3
    assert markers(result.final_response) == {f"MARK-{i}" for i in range(1, 31)}, "no section may be skipped"
    requests = ollama.chat_requests()
    assert {r.body["options"]["num_ctx"] for r in requests} == {8192}, "num_ctx identical for every call"
    assert ollama.loads == 1
    assert ollama.peak_active <= 3
    assert all(r.status == "ok" and r.attempts == 1 for r in result.subtasks)
    # shared instructions reach every section
    sections = [r for r in requests if "part" in r.body["messages"][0]["content"]][: len(result.subtasks)]
    assert all("Summarise each section." in r.body["messages"][0]["content"] for r in sections)
    assert result.total_tokens_used == sum(
        r.tokens_in + r.tokens_out for r in result.subtasks + result.synthesis
    )


@pytest.mark.parametrize("strategy", ["concatenate", "sequential", "hierarchical"])
def test_every_strategy_covers_every_section(ollama: StandinOllama, strategy: str) -> None:
    result = OllamaDecompositionAgent(config_for(ollama.url, aggregation_strategy=strategy)).process(
        marked_document(20)
    )
    assert result.strategy == strategy
    assert markers(result.final_response) == {f"MARK-{i}" for i in range(1, 21)}


def test_parallelism_is_capped_within_a_run(ollama: StandinOllama) -> None:
    ollama.num_parallel = 8
    ollama.latency_s = 0.2
    with StandinOllama(models={MODEL: 32768}, num_parallel=8, latency_s=0.2) as server:
        OllamaDecompositionAgent(config_for(server.url, max_parallel_tasks=2)).process(marked_document(30))
        assert server.peak_active == 2


def test_a_failing_section_fails_the_run_naming_it(ollama: StandinOllama) -> None:
    ollama.inject("ok", *["500"] * 3)  # section 2's three attempts fail
    agent = OllamaDecompositionAgent(config_for(ollama.url, max_attempts=3, max_parallel_tasks=1))
    with pytest.raises(SubTaskFailedError, match=r"1 of \d+ sections failed after retries: part 2 'Section"):
        agent.process(marked_document(30))


def test_allow_partial_marks_the_gap(ollama: StandinOllama) -> None:
    ollama.inject("ok", *["500"] * 3)
    agent = OllamaDecompositionAgent(
        config_for(ollama.url, max_attempts=3, max_parallel_tasks=1, allow_partial=True)
    )
    result = agent.process(marked_document(30))
    assert result.is_partial and result.missing_sections[0].startswith("part 2 'Section")
    assert result.final_response.startswith("**Partial answer: 1 section(s) failed")
    assert [r.status for r in result.subtasks].count("failed") == 1


def test_transient_faults_are_retried_and_recorded(ollama: StandinOllama) -> None:
    ollama.inject("503", "reset")
    agent = OllamaDecompositionAgent(config_for(ollama.url, max_parallel_tasks=1))
    result = agent.process(marked_document(30))
    assert result.subtasks[0].attempts == 3
    assert markers(result.final_response) == {f"MARK-{i}" for i in range(1, 31)}


def test_result_caching_reuses_answers(ollama: StandinOllama) -> None:
    agent = OllamaDecompositionAgent(config_for(ollama.url, enable_result_caching=True))
    first = agent.process(marked_document(12))
    calls = len(ollama.chat_requests())
    second = agent.process(marked_document(12))
    assert len(ollama.chat_requests()) == calls
    assert second.final_response == first.final_response


def test_bad_input_and_faults_are_named(ollama: StandinOllama, unused_port: int) -> None:
    with pytest.raises(InputError, match="the prompt is empty"):
        OllamaDecompositionAgent(config_for(ollama.url)).process("   \n")
    with pytest.raises(ModelNotPulledError, match="ollama pull nope:1b"):
        OllamaDecompositionAgent(config_for(ollama.url, ollama_model="nope:1b")).process("hi")
    with pytest.raises(OllamaUnreachableError, match=f"127.0.0.1:{unused_port}"):
        OllamaDecompositionAgent(config_for(f"http://127.0.0.1:{unused_port}", max_attempts=2)).process("hi")


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="response_reserve_tokens"):
        AgentConfig(max_context_tokens=4096, response_reserve_tokens=3000)
    with pytest.raises(ValidationError):
        AgentConfig(max_parallel_tasks=0)
    with pytest.raises(ValidationError):
        AgentConfig(aggregation_strategy="random")  # type: ignore[arg-type]


def test_plan_uses_the_models_real_context(counter: TokenCounter) -> None:
    config = AgentConfig(ollama_model=MODEL, max_context_tokens=32768, response_reserve_tokens=1024)
    plan = plan_prompt(marked_document(40), config, ModelInfo(MODEL, 4096), counter)
    assert plan.num_ctx == 4096 and plan.options.num_ctx == 4096
    assert all(s.estimate_tokens <= 4096 - 1024 for s in plan.subtasks)
    fallback = plan_prompt(marked_document(40), config, ModelInfo(MODEL, None), counter)
    assert fallback.num_ctx == 32768


def test_plan_one_call_needs_both_threshold_and_context(counter: TokenCounter) -> None:
    prompt = "word " * 3500  # under the threshold, over a 4096 context less the reserve
    config = AgentConfig(ollama_model=MODEL, single_call_threshold_tokens=6000, response_reserve_tokens=1024)
    assert plan_prompt(prompt, config, ModelInfo(MODEL, 32768), counter).mode == "single"
    assert plan_prompt(prompt, config, ModelInfo(MODEL, 4096), counter).mode == "decompose"


def test_instructions_too_long_for_the_context_are_a_clear_error(counter: TokenCounter) -> None:
    config = AgentConfig(ollama_model=MODEL, max_context_tokens=2048, response_reserve_tokens=512)
    with pytest.raises(PlanningError, match="shared instructions take"):
        plan_prompt(marked_document(10), config, None, counter, instructions="rule " * 1400)
