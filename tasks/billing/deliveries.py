"""Documents to customers and suppliers, once: each (recipient, document, period) is claimed in the ledger
before it is sent and recorded after, so a re-run never sends it twice, a failed one is retried by the next
run, and one whose run died mid-send is retried once its claim is stale. The record names the recipient by
id, never by address."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tasks.billing.budgets import claim_lock
from tasks.billing.ledger import as_utc
from tasks.schema import deliveries

STALE_CLAIM = timedelta(minutes=30)  # a claim older than this belonged to a run that died

# (email URLs, title, HTML body, attachments) → delivery attempts; raises when not delivered
SendEmail = Callable[[Sequence[str], str, str, Sequence[Path]], Any]


@dataclass(frozen=True, slots=True)
class Outgoing:
    kind: str  # customer or supplier
    recipient: str  # its id
    document: str  # invoice, payout, forecast
    period: str  # 2024-11, or 2024-W48
    title: str
    body: str  # HTML
    attachments: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class Delivered:
    kind: str
    recipient: str
    document: str
    period: str
    status: str  # sent, failed, already sent, in progress, no contact
    attempts: int  # runs that tried it, this one included
    detail: str  # the attachments' names, or why it failed (never an address)


def deliver_once(engine: sa.Engine, outgoing: Outgoing, urls: Sequence[str], send: SendEmail) -> Delivered:
    """Claim, send, record. `urls` are the recipient's email URLs."""
    claimed = _claim(engine, outgoing)
    if isinstance(claimed, Delivered):
        return claimed
    try:
        send(urls, outgoing.title, outgoing.body, outgoing.attachments)
        status, detail = "sent", ", ".join(p.name for p in outgoing.attachments)
    except Exception as exc:  # noqa: BLE001 - recorded, reported and retried by the next run
        status, detail = "failed", f"{type(exc).__name__}: {exc}"[:300]
    _record(engine, outgoing, status, detail)
    return Delivered(
        outgoing.kind, outgoing.recipient, outgoing.document, outgoing.period, status, claimed, detail
    )


def _key(outgoing: Outgoing) -> Any:
    d = deliveries.c
    return sa.and_(
        d.kind == outgoing.kind,
        d.recipient == outgoing.recipient,
        d.document == outgoing.document,
        d.period == outgoing.period,
    )


def _claim(engine: sa.Engine, outgoing: Outgoing) -> int | Delivered:
    """The attempt number when this run may send; otherwise what was decided before."""
    now = datetime.now(UTC)
    d = deliveries.c
    with engine.begin() as connection:
        claim_lock(
            connection,
            f"delivery:{outgoing.kind}:{outgoing.recipient}:{outgoing.document}:{outgoing.period}",
            deliveries,
        )
        row = connection.execute(sa.select(d.status, d.attempts, d.recorded_at).where(_key(outgoing))).first()
        if row is None:
            connection.execute(
                deliveries.insert().values(
                    kind=outgoing.kind,
                    recipient=outgoing.recipient,
                    document=outgoing.document,
                    period=outgoing.period,
                    status="pending",
                    attempts=1,
                    detail="",
                    recorded_at=now,
                )
            )
            return 1
        live = row.status == "pending" and as_utc(row.recorded_at) >= now - STALE_CLAIM
        if row.status == "sent" or live:
            return Delivered(
                outgoing.kind,
                outgoing.recipient,
                outgoing.document,
                outgoing.period,
                "already sent" if row.status == "sent" else "in progress",
                int(row.attempts),
                "",
            )
        connection.execute(
            deliveries.update()
            .where(_key(outgoing))
            .values(status="pending", attempts=row.attempts + 1, recorded_at=now)
        )
        return int(row.attempts) + 1


def _record(engine: sa.Engine, outgoing: Outgoing, status: str, detail: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            deliveries.update()
            .where(_key(outgoing))
            .values(status=status, detail=detail, recorded_at=datetime.now(UTC))
        )


def delivery_records(engine: sa.Engine, period: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(deliveries).order_by(
        deliveries.c.period, deliveries.c.document, deliveries.c.kind, deliveries.c.recipient
    )
    if period is not None:
        query = query.where(deliveries.c.period == period)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
