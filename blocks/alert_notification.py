"""The notification block Prefect's automations send through: the server process imports it (the
`prefect.collections` entry point names `blocks`), and it delivers through the AlertRoutes block's Apprise
URLs, routed by urgency like every other alert.

When it cannot deliver (no channel for the urgency, every attempt failed, no AlertRoutes block), it writes
`ALERT NOT SENT: <why>` into the flow run's own log, where people look, and raises, so Prefect also records
the automation's action as failed (once: not redelivered). The reason names channels, never their URLs.
Both the routes and that log line go through the server's in-process API, so the block works in a server
that does not know its own address.

Prefect delivers trigger events at least once: when its SQLite database is busy, a flow run's Failed event
can be evaluated twice and the action fire twice, 70 ms apart (seen in CI). The same alert (urgency,
subject and body, which name the run and its state) is sent once per REPEAT_WINDOW_S in this process, the
server's, where automations run.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal
from uuid import UUID

import anyio
from prefect.blocks.abstract import NotificationBlock, NotificationError
from pydantic import Field

from blocks.alert_routes import AlertRoutes
from tasks.alerts import Alert, send_alert
from tasks.audit import redact

if TYPE_CHECKING:
    from prefect.server.api.clients import OrchestrationClient

# The automations' body template ends with this line (flows/automations.py), so the block knows the run.
RUN_LINE = re.compile(r"^Flow run id: ([0-9a-f-]{36})$", re.MULTILINE)
REPEAT_WINDOW_S = 600.0
_sent: dict[str, float] = {}  # an alert's digest -> when it was first handled (time.monotonic)
_sent_lock = threading.Lock()


def first_time(urgency: str, subject: str, body: str, now: float | None = None) -> bool:
    """True for an alert not handled in the last REPEAT_WINDOW_S (and records it); False for a repeat."""
    now = time.monotonic() if now is None else now
    digest = hashlib.sha256("\0".join((urgency, subject, body)).encode()).hexdigest()
    with _sent_lock:
        for key, at in list(_sent.items()):
            if now - at > REPEAT_WINDOW_S:
                del _sent[key]
        if digest in _sent:
            return False
        _sent[digest] = now
        return True


class GpuflowsAlert(NotificationBlock):
    """Sends an alert of one urgency through an AlertRoutes block (Apprise URLs by channel)."""

    _block_type_name = "gpuflows Alert"
    _block_type_slug = "gpuflows-alert"
    _description = "Automations notify through this: the AlertRoutes block's channels for one urgency."

    routes: str = Field(default="default", min_length=1, description="Name of the AlertRoutes block.")
    urgency: Literal["critical", "warning", "info"] = "critical"
    attempts: int = Field(default=3, ge=1, le=10, description="Delivery attempts per channel.")
    backoff_s: float = Field(default=1.0, ge=0, le=60, description="First retry delay (exponential).")

    async def notify(self, body: str, subject: str | None = None) -> None:
        """Prefect's SendNotification action calls this in the server process. The AlertRoutes block is
        read, and a failure written to the run's log, through the server's own in-process API, never a
        Prefect client: a server started without PREFECT_API_URL (Prefect's test harness, an operator's
        own `prefect server start`) would have the client start an ephemeral second server on the same
        database, which fought the first for SQLite's lock and outlived it."""
        from prefect.server.api.clients import OrchestrationClient

        alert = Alert(self.urgency, redact(subject or "gpuflows alert"), redact(body))
        if not first_time(self.urgency, alert.title, alert.body):
            logging.getLogger("gpuflows.alerts").info("a repeated delivery skipped: %s", alert.title)
            return
        async with OrchestrationClient() as api:
            try:
                channels = (await read_routes(api, self.routes)).channels()
                # Apprise is blocking: the server's event loop must keep serving.
                await anyio.to_thread.run_sync(send_alert, alert, channels, self.attempts, self.backoff_s)
            except Exception as error:
                reason = f"{type(error).__name__}: {error}" if isinstance(error, ValueError) else str(error)
                message = f"ALERT NOT SENT ({self.urgency}): {redact(reason)}"
                await log_not_sent(api, body, message)
                # NotificationError: Prefect records the action as failed and does not redeliver it (an
                # unexpected error would be retried, and the log line repeated).
                raise NotificationError(log=message) from None


async def read_routes(api: OrchestrationClient, name: str) -> AlertRoutes:
    """The AlertRoutes block `name`, with its secrets, read through the server's in-process API."""
    response = await api._http_client.get(
        f"/block_types/slug/{AlertRoutes.get_block_type_slug()}/block_documents/name/{name}",
        params={"include_secrets": True},
    )
    if response.status_code == 404:
        raise ValueError(f"no AlertRoutes block named {name!r}; `gpuflows up` creates 'default'")
    response.raise_for_status()
    return AlertRoutes.model_validate(response.json()["data"])


async def log_not_sent(api: OrchestrationClient, body: str, message: str) -> None:
    """Writes `message` into the log of the flow run the alert is about (if the body names one)."""
    from prefect.client.schemas.actions import LogCreate

    match = RUN_LINE.search(body)
    if match is None:
        return
    log = LogCreate(
        name="gpuflows.alerts",
        level=40,
        message=message,
        timestamp=datetime.now(UTC),
        flow_run_id=UUID(match.group(1)),
    )
    response = await api._http_client.post("/logs/", json=[log.model_dump(mode="json")])
    response.raise_for_status()
