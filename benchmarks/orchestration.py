"""Orchestration overhead: 12 sections, limit 3, stand-in latency 2 s per call, one synthesis call.

Ideal makespan = ceil(12 / 3) x 2 s + 2 s synthesis = 10 s; target <= 1.05 x ideal. Measured for the
`decompose` flow on a real Prefect server (SQLite, the embedded default; PostgreSQL, production, when one
answers on 127.0.0.1:5432), next to raw asyncio (gather + Semaphore(3), same client, same calls) and the
in-process agent. "Execution" runs from the first Ollama request to the last answer; "end to end" adds
Prefect's flow-run creation, planning and artifacts.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tasks.decomposition.agent import OllamaDecompositionAgent
from tasks.decomposition.ollama import ChatMessage, OllamaClient
from tasks.decomposition.plan import AgentConfig, plan_prompt
from tasks.decomposition.tokens import TokenCounter
from tests.standins.ollama import StandinOllama

MODEL = "bench:7b"
LATENCY_S = 2.0
LIMIT = 3
RUNS = 3
IDEAL_S = math.ceil(12 / LIMIT) * LATENCY_S + LATENCY_S


def twelve_sections() -> str:
    """12 sections of ~4,600 tokens: each fills one chunk of the default 8,192-token context."""
    return "Summarise each section.\n\n" + "\n\n".join(
        f"## Section {i}\n\n"
        + " ".join(f"Fact {j} about topic {i} is stated here." for j in range(420))
        + f" MARK-{i}."
        for i in range(1, 13)
    )


def config(url: str) -> AgentConfig:
    return AgentConfig(ollama_host=url, ollama_model=MODEL, max_parallel_tasks=LIMIT)


def execution_span(server: StandinOllama, since: int) -> float:
    requests = server.chat_requests()[since:]
    return max(r.finished for r in requests) - min(r.started for r in requests)


def raw_asyncio(server: StandinOllama) -> tuple[float, float]:
    plan = plan_prompt(twelve_sections(), config(server.url), None, TokenCounter())
    assert len(plan.subtasks) == 12, len(plan.subtasks)

    async def run() -> None:
        slots = asyncio.Semaphore(LIMIT)
        async with OllamaClient(server.url) as client:

            async def one(messages: tuple[ChatMessage, ...]) -> str:
                async with slots:
                    return (await client.chat(MODEL, messages, plan.options)).content

            answers = await asyncio.gather(*(one(s.messages) for s in plan.subtasks))
            await client.chat(MODEL, [ChatMessage("user", "\n\n".join(answers))], plan.options)

    since, started = len(server.chat_requests()), time.monotonic()
    asyncio.run(run())
    return time.monotonic() - started, execution_span(server, since)


def agent(server: StandinOllama) -> tuple[float, float]:
    since, started = len(server.chat_requests()), time.monotonic()
    OllamaDecompositionAgent(config(server.url)).process(twelve_sections())
    return time.monotonic() - started, execution_span(server, since)


def child() -> None:
    """Runs in a process whose PREFECT_API_URL points at the server under test."""
    from flows.decompose import decompose

    with StandinOllama(models={MODEL: 32768}, num_parallel=LIMIT, latency_s=LATENCY_S) as server:
        results = []
        for run in range(RUNS + 1):  # the first run warms imports and the server's caches
            since, started = len(server.chat_requests()), time.monotonic()
            result = decompose(twelve_sections(), config(server.url), server=None)
            wall = time.monotonic() - started
            assert len(result.subtasks) == 12 and len(result.synthesis) == 1
            if run:
                results.append((wall, execution_span(server, since)))
    print("RESULT " + json.dumps(results))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def on_server(backend: str, database_url: str | None) -> list[tuple[float, float]]:
    from flows.bootstrap import PROJECT_DIR, platform_env, start_server

    port = free_port()
    home = tempfile.mkdtemp(prefix=f"gpuflows-bench-{backend}-")
    env = platform_env(port) | {"PREFECT_HOME": home, "PREFECT_LOGGING_LEVEL": "WARNING"}
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    server = start_server(port, env, log_path=Path(home) / "server.log")
    try:
        run = subprocess.run(
            [sys.executable, "-m", "benchmarks.orchestration", "--child"],
            cwd=PROJECT_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"benchmark child failed:\n{run.stderr[-3000:]}")
        return [tuple(x) for x in json.loads(line[7:])]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def postgres_url() -> tuple[str | None, object]:
    """A fresh database on the local PostgreSQL, or None when there is none."""
    try:
        from tests.postgres import fresh_database

        context = fresh_database("gpuflows_bench")
        dsn = context.__enter__()
        return dsn.replace("postgresql://", "postgresql+asyncpg://", 1), context
    except BaseException:  # pytest.skip raises an exception that is not an Exception
        return None, None


def report() -> str:
    rows: list[tuple[str, list[tuple[float, float]]]] = []
    with StandinOllama(models={MODEL: 32768}, num_parallel=LIMIT, latency_s=LATENCY_S) as server:
        rows.append(("raw asyncio (gather + Semaphore(3))", [raw_asyncio(server) for _ in range(RUNS)]))
        rows.append(("in-process agent (asyncio)", [agent(server) for _ in range(RUNS)]))
    rows.append(("decompose flow, Prefect server on SQLite", on_server("sqlite", None)))
    url, context = postgres_url()
    if url:
        try:
            rows.append(("decompose flow, Prefect server on PostgreSQL", on_server("postgres", url)))
        finally:
            context.__exit__(None, None, None)  # type: ignore[attr-defined]
    title = f"12 sections, limit {LIMIT}, {LATENCY_S:.0f} s a call, ideal {IDEAL_S:.0f} s"
    lines = [
        f"### Orchestration overhead ({title})",
        "",
        "| path | end to end (s, median of 3) | execution (s) | execution / ideal | end to end / ideal |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, runs in rows:
        wall = statistics.median(r[0] for r in runs)
        span = statistics.median(r[1] for r in runs)
        lines.append(f"| {name} | {wall:.2f} | {span:.2f} | {span / IDEAL_S:.3f} | {wall / IDEAL_S:.3f} |")
    if not url:
        lines.append("\nPostgreSQL not reachable on 127.0.0.1:5432: that row was not measured.")
    return "\n".join(lines)


if __name__ == "__main__":
    if "--child" in sys.argv:
        child()
    else:
        print(report())
