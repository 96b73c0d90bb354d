"""The platform as `gpuflows up` runs it, over time: a real `prefect server start` (its scheduler, triggers
and actions services), the deployments and automations from this repository, and a long-running process
worker. Schedules must fire by themselves; a failed, killed or lost run must alert a receiver on loopback
through the server; an alert that cannot be sent must say so in the run's own log; bad parameters must never
start a run.

One server for the module (it takes 15-45 s to start). The tests run in order: the last one kills the worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
)
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Scheduled

from blocks.alert_routes import AlertRoutes
from blocks.ollama import OllamaServer
from flows.automations import FAILED_RUNS, ZOMBIE_RUNS
from flows.bootstrap import PROJECT_DIR, deploy, platform_env, set_up, start_server
from tests.conftest import MODEL, free_port
from tests.standins.ollama import StandinOllama
from tests.standins.receivers import HttpReceiver, http_receiver

T = TypeVar("T")
ZOMBIE_AFTER_S = 60  # the platform's default is 90; 60 still outlasts two 30 s heartbeats
ALERT_BOUND_S = 30  # README: a killed run's alert reaches its receiver within this


@dataclass
class Platform:
    api: str
    env: dict[str, str]
    receiver: HttpReceiver
    ollama: StandinOllama
    worker: subprocess.Popen[bytes]
    server_log: Path


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, every_s: float = 1.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("platform")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    with http_receiver() as receiver, StandinOllama(models={MODEL: 32768}, latency_s=600) as ollama:
        env = platform_env(port)
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        env.update(
            PREFECT_HOME=str(home / "prefect"),
            PREFECT_API_URL=api,
            GPUFLOWS_LEDGER_URL=f"sqlite:///{home}/ledger.db",
            OLLAMA_HOST=ollama.url,
            GPUFLOWS_ZOMBIE_AFTER_S=str(ZOMBIE_AFTER_S),
            # The scheduler looks every 60 s by default; a test need not wait that long for its first tick.
            PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        )
        server_log = home / "server.log"
        server = start_server(port, env, log_path=server_log)
        worker = None
        try:
            with temporary_settings({PREFECT_API_URL: api}):
                # Two decompositions at once hold up to 3 slots each of the host's limit.
                OllamaServer(host=ollama.url, num_parallel=12).save("default", overwrite=True)
                set_up(env)
                deploy(env)
                worker = subprocess.Popen(
                    [sys.executable, "-m", "prefect", "worker", "start", "--pool", "local"],
                    cwd=PROJECT_DIR,
                    env=env,
                    stdout=open(home / "worker.log", "wb"),  # noqa: SIM115 - lives as long as the worker
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                try:
                    yield Platform(api, env, receiver, ollama, worker, server_log)
                finally:
                    # This process's event and log senders are singletons bound to the API they first saw:
                    # flush them to this server and stop them, so later tests' events and logs reach theirs.
                    EventsWorker.drain_all(timeout=30)
                    APILogWorker.drain_all(timeout=30)
        finally:
            for process in (worker, server):
                if process is not None and process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)


def deployment(client: Any, flow: str, name: str) -> Any:
    return client.read_deployment_by_name(f"{flow}/{name}")


def server_errors(platform: Platform) -> list[str]:
    text = platform.server_log.read_text(errors="replace")
    return [line for line in text.splitlines() if "| ERROR" in line or "Traceback" in line]


def test_every_schedule_fires_and_a_worker_completes_a_scheduled_run(platform: Platform) -> None:
    with get_client(sync_client=True) as client:
        rollup = deployment(client, "billing-rollup", "scheduled")
        forecast = deployment(client, "usage-forecast", "daily")
        delivery = deployment(client, "deliver-statements", "monthly")
        schedules = {s.id: (d, s) for d in (rollup, forecast, delivery) for s in d.schedules}
        assert len(schedules) == 5, (
            "hourly rollup, daily close, daily forecast, weekly reports, monthly delivery"
        )

        def scheduled_runs() -> list[Any] | None:
            runs = [  # one query per deployment: the hourly schedule alone makes 100 runs ahead
                run
                for owner in (rollup, forecast, delivery)
                for run in client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[owner.id])),
                    limit=200,
                )
            ]
            fired = {r.created_by.id for r in runs if r.auto_scheduled and r.created_by}
            return runs if fired >= set(schedules) else None

        runs = wait_for("auto-scheduled runs for every schedule", scheduled_runs, timeout_s=90)
    for schedule_id, (owner, schedule) in schedules.items():
        made = [r for r in runs if r.created_by and r.created_by.id == schedule_id]
        assert made and all(r.auto_scheduled and r.state.is_scheduled() for r in made)
        assert all(r.parameters == {**owner.parameters, **schedule.parameters} for r in made)
    closes = [r for r in runs if r.parameters.get("close")]
    assert closes and all(r.expected_start_time.strftime("%H:%M") == "00:30" for r in closes)
    assert server_errors(platform) == [], "the scheduler must run without errors"

    # The next hourly rollup, brought forward to now: the long-running worker picks it up and completes it.
    hourly = min(
        (r for r in runs if r.deployment_id == rollup.id and not r.parameters.get("close")),
        key=lambda r: r.expected_start_time,
    )
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(hourly.id, Scheduled(scheduled_time=datetime.now(UTC)), force=True)

        def finished() -> Any:
            run = client.read_flow_run(hourly.id)
            return run if run.state.is_final() else None

        done = wait_for("the scheduled rollup to finish", finished, timeout_s=180, every_s=2)
    assert done.state.is_completed(), done.state.message
    assert done.auto_scheduled


def test_bad_parameters_never_start_a_run(platform: Platform) -> None:
    with get_client(sync_client=True) as client:
        rollup = deployment(client, "billing-rollup", "scheduled")
    url = f"{platform.api}/deployments/{rollup.id}/create_flow_run"
    misspelt = httpx.post(url, json={"parameters": {"first_dya": "2024-11-15"}})
    assert misspelt.status_code == 409 and "first_dya" in misspelt.text
    impossible = httpx.post(url, json={"parameters": {"first_day": "2024-13-45"}})
    assert impossible.status_code == 409 and "first_day" in impossible.text


def alerts_about(platform: Platform, flow_run_id: Any) -> list[dict[str, Any]]:
    return [m for m in platform.receiver.received if f"Flow run id: {flow_run_id}" in m.get("message", "")]


def run_logs(platform: Platform, flow_run_id: Any) -> list[str]:
    response = httpx.post(
        f"{platform.api}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [str(flow_run_id)]}}, "limit": 200},
    )
    return [log["message"] for log in response.json()]


def test_an_alert_that_cannot_be_sent_says_so_in_the_runs_log(platform: Platform) -> None:
    """No channel configured yet: the failed run's own log (what the UI shows) says ALERT NOT SENT."""
    from prefect.deployments import run_deployment

    with temporary_settings({PREFECT_API_URL: platform.api}):
        run = run_deployment(
            "billing-rollup/scheduled",
            parameters={"first_day": "2024-11-26", "last_day": "2024-11-15"},
            timeout=120,
        )
    assert run.state.is_failed()
    assert "first_day 2024-11-26 is after last_day 2024-11-15" in run.state.message
    lines = wait_for(
        "ALERT NOT SENT in the run's log",
        lambda: [m for m in run_logs(platform, run.id) if m.startswith("ALERT NOT SENT")] or None,
        timeout_s=60,
    )
    assert lines == [
        "ALERT NOT SENT (critical): no channel configured for critical alerts (sms or im); "
        "add Apprise URLs to the AlertRoutes block"
    ]


def heartbeats(platform: Platform, flow_run_id: Any) -> int:
    response = httpx.post(
        f"{platform.api}/events/filter",
        json={
            "filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
            },
            "limit": 10,
        },
    )
    response.raise_for_status()
    return len(response.json()["events"])


def start_long_decomposition(platform: Platform) -> tuple[Any, int]:
    """A decomposition whose Ollama takes 10 minutes to answer: running, its process known."""
    from prefect.deployments import run_deployment

    with temporary_settings({PREFECT_API_URL: platform.api}):
        run = run_deployment("decompose/on-demand", parameters={"prompt": "Say hello."}, timeout=0)
    with get_client(sync_client=True) as client:

        def running() -> Any:
            current = client.read_flow_run(run.id)
            return current if current.state.is_running() and current.infrastructure_pid else None

        current = wait_for("the decomposition to run", running, timeout_s=120)
    wait_for(
        "its call to reach Ollama", lambda: platform.ollama.active > 0 or None, timeout_s=60, every_s=0.2
    )
    return current, int(str(current.infrastructure_pid).rsplit(":", 1)[-1])


def test_a_killed_run_alerts_through_the_server(platform: Platform) -> None:
    AlertRoutes(
        sms=[f"json://127.0.0.1:{platform.receiver.port}/sms"],
        im=[f"json://127.0.0.1:{platform.receiver.port}/im"],
    ).save("default", overwrite=True)
    run, pid = start_long_decomposition(platform)
    os.kill(pid, signal.SIGKILL)  # as the OOM killer would: no hook of the run can run
    killed = time.monotonic()
    # Both channels: SMS is sent first, IM just after.
    alerts = wait_for(
        "the critical alert on SMS and IM",
        lambda: found if len(found := alerts_about(platform, run.id)) >= 2 else None,
        timeout_s=120,
        every_s=0.2,
    )
    elapsed = time.monotonic() - killed
    print(f"\nkilled run: critical alert after {elapsed:.1f} s")
    assert elapsed < ALERT_BOUND_S, f"alert after {elapsed:.1f} s"
    assert {a["path"] for a in alerts} == {"/sms", "/im"}
    assert alerts[0]["title"] == f"Flow run crashed: decompose / {run.name}"
    assert f"Flow run id: {run.id}" in alerts[0]["message"]
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).state.is_crashed()


def test_a_run_lost_with_its_worker_is_crashed_and_alerts(platform: Platform) -> None:
    """A lost node: the worker and the flow's process die together, so nobody reports the run. Its
    heartbeats stop, the zombie automation marks it Crashed, and the failure automation alerts."""
    with get_client(sync_client=True) as client:
        names = {a.name for a in client.read_automations()}
    assert {FAILED_RUNS, ZOMBIE_RUNS} <= names
    run, pid = start_long_decomposition(platform)
    # Its first heartbeat must have reached the server (the window starts there): a run killed before it
    # ever reported one is the worker's to crash, and here the worker dies with it.
    wait_for("a heartbeat of the run", lambda: heartbeats(platform, run.id), timeout_s=60)
    os.killpg(platform.worker.pid, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    lost = time.monotonic()
    alerts = wait_for(
        "the zombie's alert", lambda: alerts_about(platform, run.id), timeout_s=ZOMBIE_AFTER_S + 90
    )
    elapsed = time.monotonic() - lost
    print(f"\nlost run: critical alert after {elapsed:.1f} s")
    assert elapsed < ZOMBIE_AFTER_S + 60, f"alert after {elapsed:.1f} s"
    assert alerts[0]["title"] == f"Flow run crashed: decompose / {run.name}"
    assert f"no heartbeat for {ZOMBIE_AFTER_S} s" in alerts[0]["message"]
    assert timedelta(seconds=elapsed) > timedelta(seconds=ZOMBIE_AFTER_S - 31)  # not before its window
