"""State hooks every flow carries: an audit record when a run starts and when it ends.

The audit goes to the ledger database of the LedgerDatabase block `$GPUFLOWS_AUDIT_LEDGER` (default
`default`). A hook never changes a run's outcome: if it cannot write, it says so in the run's log, loudly.

Failure alerts are not sent from here: a run killed outright (SIGKILL, OOM, a lost node) runs no hook. The
server sends them, through the automations in flows/automations.py, for every Failed, Crashed, TimedOut or
zombie run; its end then shows in the UI and in the alert, though not in this audit trail.

Customer material stays out of the append-only trail: prompts and instructions (and any long text
parameter) are recorded as their sha256 and length, not verbatim.
"""

from __future__ import annotations

import hashlib
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
    detail: dict[str, Any] = {"flow_run": flow_run.name, "parameters": fingerprinted(flow_run.parameters)}
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


CUSTOMER_TEXT = {"prompt", "instructions"}
LONG_TEXT = 200  # characters: a parameter this long is material, not a setting


def fingerprinted(value: Any, key: str = "") -> Any:
    """`value` with customer text (prompts, instructions, any long string) replaced by sha256 and length."""
    if isinstance(value, dict):
        return {k: fingerprinted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [fingerprinted(v, key) for v in value]
    if isinstance(value, str) and (key in CUSTOMER_TEXT or len(value) > LONG_TEXT):
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return {"sha256": digest, "chars": len(value)}
    return value


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
    on_end(flow, flow_run, state)  # the alert comes from the server (flows/automations.py)


AUDITED: dict[str, Any] = {
    "on_running": [on_start],
    "on_completion": [on_end],
    "on_cancellation": [on_end],
    "on_failure": [on_failure],
    "on_crashed": [on_failure],
}
