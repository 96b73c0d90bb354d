"""Server-side alerts on a server that was started without PREFECT_API_URL (Prefect's test harness, an
operator's own `prefect server start`): the alert block runs inside the server, and must neither need the
server's address nor start a second, ephemeral server on the same database (the `gpuflows up` server, which
knows its address, is covered by tests/flows/test_platform.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psutil
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from blocks.alert_routes import AlertRoutes
from flows.automations import ensure_automations
from tests.standins.receivers import HttpReceiver, http_receiver

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 60) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


@flow(name="alert-probe")
def failing() -> None:
    raise RuntimeError("the probe fails on purpose")


def failed_run() -> Any:
    state = failing(return_state=True)
    assert state.is_failed()
    return state.state_details.flow_run_id


def harness_server(prefect_server: str) -> psutil.Process:
    port = prefect_server.rsplit(":", 1)[1].split("/")[0]
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "prefect.server.api.server:create_app" in cmdline and port in cmdline:
            return process
    raise AssertionError(f"no server process on port {port}")


def run_logs(flow_run_id: Any) -> list[str]:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


@pytest.fixture
def receiver(prefect_server: str) -> Iterator[HttpReceiver]:
    """Alert routes to a loopback receiver; the session's routes are put back afterwards."""
    try:
        before: AlertRoutes | None = AlertRoutes.load("default")
    except ValueError:
        before = None
    ensure_automations({})
    with http_receiver() as receiver:
        AlertRoutes(im=[f"json://127.0.0.1:{receiver.port}/im"]).save("default", overwrite=True)
        try:
            yield receiver
        finally:
            (before or AlertRoutes()).save("default", overwrite=True)


def test_a_failed_run_alerts_from_a_server_that_does_not_know_its_address(
    prefect_server: str, receiver: HttpReceiver
) -> None:
    server = harness_server(prefect_server)
    assert "PREFECT_API_URL" not in server.environ(), "the harness's server must not know its address"

    run_id = failed_run()
    [alert] = wait_for(
        "the failed run's alert",
        lambda: [m for m in receiver.received if f"Flow run id: {run_id}" in m.get("message", "")],
    )
    assert alert["path"] == "/im" and alert["title"].startswith("Flow run failed: alert-probe / ")

    AlertRoutes().save("default", overwrite=True)  # no channel: the run's own log says so
    unsent = failed_run()
    lines = wait_for(
        "ALERT NOT SENT in the run's log",
        lambda: [m for m in run_logs(unsent) if m.startswith("ALERT NOT SENT")],
    )
    assert lines == [
        "ALERT NOT SENT (critical): no channel configured for critical alerts (sms or im); "
        "add Apprise URLs to the AlertRoutes block"
    ]
    servers = [p for p in server.children(recursive=True) if "uvicorn" in " ".join(p.cmdline())]
    assert servers == [], "an alert started a second Prefect server on the same database"
