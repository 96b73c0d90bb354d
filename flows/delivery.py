"""Delivering documents to customers and suppliers from a flow run: once each (tasks/deliveries.py), by
email through Apprise, with an artifact listing what went to whom (recipient ids, never addresses) and a run
that fails, naming what was not delivered, so the UI shows it and the next run retries it."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import sqlalchemy as sa
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.resources import run_logger
from tasks.alerts import AlertDeliveryError, send_email
from tasks.audit import redact
from tasks.billing.deliveries import Delivered, Outgoing, deliver_once
from tasks.contacts import Directory, Kind


class DeliveryError(AlertDeliveryError):
    pass


def missing_contacts(kind: Kind, document: str, owners: Sequence[str], period: str) -> list[Delivered]:
    """Owners that should get `document` and cannot: a warning each, and a row in the artifact."""
    for owner in owners:
        run_logger().warning(
            "%s %r gets no %s for %s: no contact with an email URL in the Contacts block",
            kind,
            owner,
            document,
            period,
        )
    return [
        Delivered(kind, owner, document, period, "no contact", 0, "add it to the Contacts block")
        for owner in owners
    ]


@task(name="deliver-documents", cache_policy=NO_CACHE)
def deliver_task(
    engine: sa.Engine,
    directory: Directory,
    outgoing: list[Outgoing],
    attempts: int = 3,
    backoff_s: float = 2.0,
) -> list[Delivered]:
    """Each document to its own recipient's email URLs, once."""
    send = partial(send_email, attempts=attempts, backoff_s=backoff_s)
    done = []
    for item in outgoing:
        recipient = directory.find(item.kind, item.recipient)  # type: ignore[arg-type]
        urls = list(recipient.channels.get("email", ())) if recipient else []
        result = deliver_once(engine, item, urls, send)
        done.append(result)
        if result.status == "failed":
            run_logger().error(
                "NOT DELIVERED: %s to %s %r (%s): %s",
                item.document,
                item.kind,
                item.recipient,
                item.period,
                redact(result.detail),
            )
    return done


def report(key: str, results: Sequence[Delivered], description: str) -> None:
    """The run's artifact: one row per recipient and document; then the run fails if any was not sent."""
    create_table_artifact(
        key=key,
        table=[
            {
                "recipient": f"{r.kind} {r.recipient}",
                "document": r.document,
                "period": r.period,
                "status": r.status,
                "attempt": r.attempts,
                "detail": redact(r.detail),
            }
            for r in results
        ],
        description=description,
    )
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise DeliveryError(
            f"{len(failed)} document(s) not delivered (the next run retries them): "
            + ", ".join(f"{r.document} {r.period} to {r.kind} {r.recipient}" for r in failed)
        )
