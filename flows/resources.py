"""What the flows load from their blocks: the ledger's database and the alert routes. One place, so every
flow opens the ledger and sends alerts the same way, and the Secret values never leave these calls."""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa

from blocks.alert_routes import AlertRoutes
from blocks.ledger import LedgerDatabase
from tasks.alerts import Alert, Delivery, send_alert
from tasks.audit import redact
from tasks.errors import GpuflowsError
from tasks.ledger import connect


def ledger_engine(block: str) -> sa.Engine:
    """An engine on the (migrated) ledger named by a LedgerDatabase block."""
    return connect(LedgerDatabase.load(block).url.get_secret_value())


def alert_sender(block: str, attempts: int = 3, backoff_s: float = 2.0) -> Callable[[Alert], list[Delivery]]:
    """Sends an alert through the AlertRoutes block `block`, loaded only when an alert is due. An alert that
    could not be sent says so in the run's own log (what the UI shows), then the error goes to the caller."""

    def send(alert: Alert) -> list[Delivery]:
        try:
            return send_alert(alert, AlertRoutes.load(block).channels(), attempts, backoff_s)
        except Exception as error:
            reason = str(error) if isinstance(error, GpuflowsError) else f"{type(error).__name__}: {error}"
            run_logger().error("ALERT NOT SENT (%s) %r: %s", alert.urgency, alert.title, redact(reason))
            raise

    return send


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger (its lines reach the UI), or a plain one outside a run."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("gpuflows.alerts")
