"""What the flows load from their blocks: the ledger's database and the alert routes. One place, so every
flow opens the ledger and sends alerts the same way, and the Secret values never leave these calls."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from blocks.alert_routes import AlertRoutes
from blocks.ledger import LedgerDatabase
from tasks.alerts import Alert, Delivery, send_alert
from tasks.ledger import connect


def ledger_engine(block: str) -> sa.Engine:
    """An engine on the (migrated) ledger named by a LedgerDatabase block."""
    return connect(LedgerDatabase.load(block).url.get_secret_value())


def alert_sender(block: str, attempts: int = 3, backoff_s: float = 2.0) -> Callable[[Alert], list[Delivery]]:
    """Sends an alert through the AlertRoutes block `block`, loaded only when an alert is due."""

    def send(alert: Alert) -> list[Delivery]:
        return send_alert(alert, AlertRoutes.load(block).channels(), attempts, backoff_s)

    return send
