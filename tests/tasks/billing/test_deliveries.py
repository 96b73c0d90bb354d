"""Documents once per recipient, document and period, on both databases: sent once, a failure retried by the
next run, a claim whose run died retried once stale, a live claim left alone, and concurrent runs that send
each document once between them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from tasks.billing.deliveries import STALE_CLAIM, Outgoing, deliver_once, delivery_records
from tasks.schema import deliveries


def outgoing(recipient: str = "acme") -> Outgoing:
    return Outgoing(
        "customer", recipient, "invoice", "2024-11", f"Invoice 2024-11: {recipient}", "<p>hi</p>", ()
    )


class Outbox:
    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[Sequence[str], str]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, urls: Sequence[str], title: str, body: str, files: Sequence[Path]) -> None:
        with self.lock:
            if self.fail:
                self.fail -= 1
                raise RuntimeError("smtp down")
            self.sent.append((urls, title))


def test_sent_once_and_a_failure_is_retried_by_the_next_run(engine: sa.Engine) -> None:
    box = Outbox(fail=1)
    first = deliver_once(engine, outgoing(), ["mailto://x"], box)
    assert (first.status, first.attempts, first.detail) == ("failed", 1, "RuntimeError: smtp down")
    second = deliver_once(engine, outgoing(), ["mailto://x"], box)
    assert (second.status, second.attempts) == ("sent", 2)
    third = deliver_once(engine, outgoing(), ["mailto://x"], box)
    assert (third.status, third.attempts) == ("already sent", 2)
    assert box.sent == [(["mailto://x"], "Invoice 2024-11: acme")]
    [record] = delivery_records(engine, "2024-11")
    assert (record["recipient"], record["status"], record["attempts"]) == ("acme", "sent", 2)
    assert "mailto" not in str(record)


def test_a_claim_whose_run_died_is_retried_once_stale(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            deliveries.insert().values(
                kind="customer",
                recipient="acme",
                document="invoice",
                period="2024-11",
                status="pending",
                attempts=1,
                detail="",
                recorded_at=datetime.now(UTC),
            )
        )
    box = Outbox()
    assert deliver_once(engine, outgoing(), ["u"], box).status == "in progress"
    with engine.begin() as connection:
        connection.execute(deliveries.update().values(recorded_at=datetime.now(UTC) - STALE_CLAIM * 2))
    assert deliver_once(engine, outgoing(), ["u"], box).status == "sent" and len(box.sent) == 1


def test_concurrent_runs_send_each_document_once(engine: sa.Engine) -> None:
    box = Outbox()
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.extend(deliver_once(engine, outgoing(c), ["u"], box) for c in "abcdef")
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(title for _, title in box.sent) == [f"Invoice 2024-11: {c}" for c in "abcdef"]
    assert sum(r.status == "sent" for r in results) == 6
    assert {r.status for r in results} <= {"sent", "already sent", "in progress"}
