"""Training's GPU time reaches the ledger as a UsageEvent: billed once per attempt, a re-recorded attempt is a
duplicate, and an event the ledger cannot bill is quarantined with its reason, never lost (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa

from tasks.billing.ledger import accepted_gpu_types
from tasks.schema import quarantine, usage_events
from tasks.training.usage import SOURCE, record_training_usage, training_event

START, END = datetime(2026, 5, 1, 10, tzinfo=UTC), datetime(2026, 5, 1, 11, 30, tzinfo=UTC)


def event(gpu_type: str = "rtx5090", attempt: int = 1):  # noqa: ANN201 - a UsageEvent
    return training_event(
        flow_run_id="run-1",
        attempt=attempt,
        run_name="qwen-chat",
        customer="acme",
        project="bot",
        supplier="homelab",
        gpu_type=gpu_type,
        gpu_count=0.5,
        start=START,
        end=END,
    )


def test_an_attempt_is_billed_once(engine: sa.Engine) -> None:
    first = record_training_usage(engine, event())
    again = record_training_usage(engine, event())
    second_attempt = record_training_usage(engine, event(attempt=2))
    assert (first.inserted, again.duplicates, second_attempt.inserted) == (1, 1, 1)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(usage_events).order_by(usage_events.c.event_id)).all()
    assert [(r.source, r.event_id, r.job) for r in rows] == [
        (SOURCE, "run-1:1", "train:qwen-chat"),
        (SOURCE, "run-1:2", "train:qwen-chat"),
    ]
    assert rows[0].gpu_count == Decimal("0.5") and rows[0].gpu_microseconds == 2_700_000_000


def test_a_gpu_type_only_the_rate_card_knows_is_accepted_and_an_unknown_one_quarantined(
    engine: sa.Engine,
) -> None:
    assert record_training_usage(engine, event("b200"), accepted_gpu_types(["b200"])).inserted == 1
    refused = record_training_usage(engine, event("tpu", attempt=3))
    assert (refused.inserted, refused.quarantined) == (0, 1)
    with engine.connect() as connection:
        [kept] = connection.execute(sa.select(quarantine)).all()
    assert kept.reason == "unknown GPU type 'tpu'" and '"event_id": "run-1:3"' in kept.raw
