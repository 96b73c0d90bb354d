"""The Prefect server on PostgreSQL (production's backend): a flow run recorded there end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from flows.bootstrap import PROJECT_DIR, platform_env, start_server
from tests.conftest import MODEL
from tests.postgres import fresh_database
from tests.standins.ollama import StandinOllama

pytestmark = pytest.mark.postgres

# The run gets a process of its own: Prefect's event and log workers are process-wide and already
# point at the session's test server.
RUN_FLOW = """
import sys
from flows.decompose import decompose
from tasks.decomposition.plan import AgentConfig
from tests.builders import marked_document
config = AgentConfig(ollama_host=sys.argv[1], ollama_model=sys.argv[2])
result = decompose(marked_document(16), config, server=None)
print("covered" if "MARK-16" in result.final_response else "missing")
"""


def test_a_flow_run_is_recorded_by_a_server_on_postgresql(
    ollama: StandinOllama, unused_port: int, tmp_path: Path
) -> None:
    with fresh_database("gpuflows_prefect") as dsn:
        env = platform_env(unused_port) | {
            "PREFECT_API_DATABASE_CONNECTION_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            "PREFECT_HOME": str(tmp_path / "prefect"),
        }
        server = start_server(unused_port, env, log_path=tmp_path / "server.log")
        try:
            run = subprocess.run(
                [sys.executable, "-c", RUN_FLOW, ollama.url, MODEL],
                cwd=PROJECT_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert run.returncode == 0 and run.stdout.strip().endswith("covered"), run.stderr[-3000:]
            runs = httpx.post(f"{env['PREFECT_API_URL']}/flow_runs/filter", json={}).json()
            assert [(r["name"], r["state_type"]) for r in runs] == [("decompose-None", "COMPLETED")]

            async def rows() -> tuple[int, int]:
                connection = await asyncpg.connect(dsn)
                try:
                    flows = await connection.fetchval(
                        "SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'"
                    )
                    tasks = await connection.fetchval(
                        "SELECT count(*) FROM task_run WHERE state_type = 'COMPLETED'"
                    )
                    return flows, tasks
                finally:
                    await connection.close()

            flows, tasks = asyncio.run(rows())
            assert flows == 1 and tasks >= 4  # the run and its task runs live in PostgreSQL
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
