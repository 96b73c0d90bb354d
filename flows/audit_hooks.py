"""State hooks every flow carries: an audit record when a run starts and when it ends, and a critical
alert through the Apprise routes when it fails or crashes.

The audit goes to the ledger database of the LedgerDatabase block `$GPUFLOWS_AUDIT_LEDGER` (default
`default`); alerts use the AlertRoutes block `$GPUFLOWS_ALERT_ROUTES` (default `default`). A hook never
changes a run's outcome: if it cannot write or send, it says so in the run's log, loudly.

Limits: a run killed outright (SIGKILL, OOM) runs no hook, so neither its end nor an alert is recorded;
the run shows as Crashed in the UI once Prefect notices.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect.client.orchestration import get_client

logger = logging.getLogger("gpuflows.audit")


def trigger_of(flow_run: Any) -> str:
    """schedule, automation, deployment (UI or API), or direct (a flow called in Python)."""
    created_by = getattr(flow_run, "created_by", None)
    kind = str(getattr(created_by, "type", "") or "").upper()
    if getattr(flow_run, "auto_scheduled", False):
        return "schedule"
    if kind == "AUTOMATION":
        return "automation"
    if getattr(flow_run, "deployment_id", None) is not None:
        return "deployment"
    return "direct"


def _deployment_name(flow: Any, flow_run: Any) -> str | None:
    if flow_run.deployment_id is None:
        return None
    try:
        with get_client(sync_client=True) as client:
            return f"{flow.name}/{client.read_deployment(flow_run.deployment_id).name}"
    except Exception:  # noqa: BLE001 - the record still names the deployment id
        return str(flow_run.deployment_id)


def _write(flow: Any, flow_run: Any, state: Any, kind: str) -> None:
    from flows.resources import ledger_engine
    from tasks.audit import record

    block = os.environ.get("GPUFLOWS_AUDIT_LEDGER", "default")
    try:
        engine = ledger_engine(block)
    except ValueError:
        logger.error("audit: no LedgerDatabase block %r; %s of %s not recorded", block, kind, flow_run.name)
        return
    detail: dict[str, Any] = {"flow_run": flow_run.name, "parameters": flow_run.parameters}
    if kind == "flow-run-end" and state is not None and state.message:
        detail["message"] = state.message[:2000]
    with engine.begin() as connection:
        record(
            connection,
            kind,
            detail,
            flow=flow.name,
            deployment=_deployment_name(flow, flow_run),
            flow_run_id=str(flow_run.id),
            trigger=trigger_of(flow_run),
            state=None if state is None else state.type.value,
        )
    engine.dispose()


def on_start(flow: Any, flow_run: Any, state: Any) -> None:
    try:
        _write(flow, flow_run, state, "flow-run-start")
    except Exception:  # a hook must not change the run's outcome; the log shows the problem
        logger.exception("audit: the start of %s was not recorded", flow_run.name)


def on_end(flow: Any, flow_run: Any, state: Any) -> None:
    try:
        _write(flow, flow_run, state, "flow-run-end")
    except Exception:
        logger.exception("audit: the end of %s was not recorded", flow_run.name)


def on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    on_end(flow, flow_run, state)
    from flows.resources import alert_sender
    from tasks.alerts import Alert
    from tasks.audit import redact

    routes = os.environ.get("GPUFLOWS_ALERT_ROUTES", "default")
    message = redact(str(state.message or ""))[:1000]
    alert = Alert(
        "critical",
        f"Flow run {state.type.value.lower()}: {flow.name} / {flow_run.name}",
        f"{flow.name} run {flow_run.name} ({flow_run.id}) ended {state.type.value}: {message}",
    )
    try:
        alert_sender(routes, attempts=3, backoff_s=1.0)(alert)
    except Exception:
        logger.exception("ALERT NOT SENT: %s of %s is %s", flow.name, flow_run.name, state.type.value)


AUDITED: dict[str, Any] = {
    "on_running": [on_start],
    "on_completion": [on_end],
    "on_cancellation": [on_end],
    "on_failure": [on_failure],
    "on_crashed": [on_failure],
}
