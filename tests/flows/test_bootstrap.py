"""`make up`'s steps on a real Prefect server: pools, blocks, limits, prefect.yaml, a run via the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from blocks.ollama import OllamaServer
from flows.bootstrap import PROJECT_DIR, deploy, ollama_host_from_env, platform_env, set_up
from tests.builders import marked_document
from tests.conftest import MODEL
from tests.standins.ollama import StandinOllama


@pytest.fixture(scope="module")
def env(prefect_server: str) -> dict[str, str]:
    port = int(prefect_server.rsplit(":", 1)[1].split("/")[0])
    env = platform_env(port)
    env["PREFECT_API_URL"] = prefect_server
    env["PREFECT_HOME"] = os.environ["PREFECT_HOME"]
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    return env


@pytest.fixture(scope="module")
def deployed(env: dict[str, str]) -> dict[str, str]:
    set_up(env)
    deploy(env)
    return env


def run_on_worker(deployment: str, parameters: dict, env: dict[str, str], cwd: Path) -> Any:
    """Trigger a deployment from the API, then one polling cycle of a real process worker: it picks the
    run up, runs it in a subprocess and waits for it. Asserts the run completed; returns it."""
    flow_run = run_deployment(deployment, parameters=parameters, timeout=0)
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "local", "--run-once"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    with get_client(sync_client=True) as client:
        finished = client.read_flow_run(flow_run.id)
    assert finished.state is not None and finished.state.is_completed(), worker.stdout[-3000:]
    return finished


def test_set_up_is_idempotent_and_keeps_operator_edits(env: dict[str, str]) -> None:
    first = set_up(env)
    OllamaServer(host="http://gpu-box:11434", num_parallel=5).save("default", overwrite=True)
    second = set_up(env)
    assert [line.split(" (")[0] for line in first][:2] == ["work pool local", "work pool rtx5090"]
    assert "block gpuflows-ollama-server/default (http://gpu-box:11434)" in second
    assert any(line.startswith("ledger") and "real usage slice" in line for line in second)
    with get_client(sync_client=True) as client:
        local, gpu = client.read_work_pool("local"), client.read_work_pool("rtx5090")
    assert local.type == "process"
    assert gpu.type == "kubernetes"
    committed = json.loads((PROJECT_DIR / "k8s" / "work-pools" / "rtx5090.json").read_text())
    assert gpu.base_job_template == committed
    with get_client(sync_client=True) as client:
        queues = {q.name: q for q in client.read_work_queues(work_pool_name="local")}
        gpu_training = client.read_work_queue_by_name("training", work_pool_name="rtx5090")
    assert [queues[q].priority for q in ("billing", "decomposition", "forecast", "training")] == [1, 2, 3, 4]
    assert (gpu_training.priority, gpu_training.concurrency_limit) == (1, 1)


def test_ollama_host_is_read_as_ollama_reads_it() -> None:
    assert ollama_host_from_env({"OLLAMA_HOST": "0.0.0.0:11434"}) == "http://127.0.0.1:11434"
    assert ollama_host_from_env({"OLLAMA_HOST": "https://gpu-box"}) == "https://gpu-box"
    assert ollama_host_from_env({}) == "http://127.0.0.1:11434"


def test_prefect_yaml_declares_every_flow_with_a_checked_schema() -> None:
    spec = yaml.safe_load((PROJECT_DIR / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        assert (PROJECT_DIR / path).exists() and f"def {name}(" in (PROJECT_DIR / path).read_text()
        assert deployment["enforce_parameter_schema"] is True
        assert deployment["description"] and deployment["tags"]
        assert "{{ $GPUFLOWS_" in deployment["work_pool"]["name"]  # pools come from the environment


def test_deployment_runs_from_the_api_on_the_process_worker(deployed: dict[str, str], tmp_path: Path) -> None:
    with StandinOllama(models={MODEL: 32768}) as ollama:
        parameters = {
            "prompt": marked_document(20),
            "config": {"ollama_host": ollama.url, "ollama_model": MODEL},
            "server": None,
        }
        flow_run = run_on_worker("decompose/on-demand", parameters, deployed, tmp_path)
        assert len(ollama.chat_requests()) >= 2
    from blocks.ledger import LedgerDatabase
    from tasks.audit import AuditQuery, query
    from tasks.database import connect

    ledger = connect(LedgerDatabase.load("default").url.get_secret_value())
    trail = query(ledger, AuditQuery(flow_run_id=str(flow_run.id)))
    assert [(r["kind"], r["trigger"], r["deployment"]) for r in reversed(trail)] == [
        ("flow-run-start", "deployment", "decompose/on-demand"),
        ("flow-run-end", "deployment", "decompose/on-demand"),
    ]


def test_a_bad_parameter_is_rejected_before_any_work(deployed: dict[str, str], prefect_server: str) -> None:
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("decompose/on-demand")
    response = httpx.post(
        f"{prefect_server}/deployments/{deployment.id}/create_flow_run",
        json={"parameters": {"prompt": "hi", "config": {"max_parallel_tasks": 0}}},
    )
    assert response.status_code == 409
    assert "config.max_parallel_tasks" in response.text and "less than the minimum of 1" in response.text


@pytest.mark.parametrize(
    ("deployment", "parameters", "named"),
    [
        ("billing-rollup/scheduled", {"grace_hours": -1}, "grace_hours"),
        ("billing-rollup/scheduled", {"first_day": "yesterday"}, "first_day"),
        ("usage-forecast/daily", {"horizon_hours": 0}, "horizon_hours"),
        ("usage-forecast/daily", {"history_days": 1000}, "history_days"),
        ("usage-forecast/daily", {"method": "oracle"}, "method"),
        ("train/rtx5090", {"gpu_type": "tpu"}, "gpu_type"),
        ("train/rtx5090", {"gpu_count": 0}, "gpu_count"),
    ],
)
def test_every_deployment_checks_its_parameters_before_work(
    deployed: dict[str, str], prefect_server: str, deployment: str, parameters: dict, named: str
) -> None:
    with get_client(sync_client=True) as client:
        target = client.read_deployment_by_name(deployment)
    response = httpx.post(
        f"{prefect_server}/deployments/{target.id}/create_flow_run", json={"parameters": parameters}
    )
    assert response.status_code == 409 and named in response.text, response.text[:500]


def test_no_module_shadows_the_standard_library() -> None:
    """Prefect puts a flow file's folder on sys.path, and processes spawned from a flow run inherit it: a
    flows/platform.py once replaced the stdlib `platform` there and broke the forecast's worker pool."""
    for folder in ("flows", "tasks", "blocks"):
        names = {p.stem for p in (PROJECT_DIR / folder).rglob("*.py")}
        assert not names & set(sys.stdlib_module_names), folder


def test_the_forecast_runs_on_the_process_worker(deployed: dict[str, str], tmp_path: Path) -> None:
    """As `make up` runs it: from a deployment, in a worker's subprocess, fitting on spawned processes."""
    parameters = {"as_of": "2020-05-25T00:00:00Z", "report_customers": 1, "reports_dir": str(tmp_path)}
    run_on_worker("usage-forecast/daily", parameters, deployed, tmp_path)
    assert list((tmp_path / "suppliers").glob("supplier-forecast-*.csv"))
