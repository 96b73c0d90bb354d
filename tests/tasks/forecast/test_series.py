"""Hourly usage series from the ledger: GPU-seconds spread over the hours they cover, sums preserved."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from tasks.billing.ledger import ingest_file
from tasks.database import connect
from tasks.forecast.series import hourly_series, window_events


def test_events_are_spread_over_hours_and_grouped_per_owner(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path}/l.db")
    records = [
        # 1.5 GPUs from 09:30 to 11:15: 0.75, 1.5 and 0.375 GPU-h in hours 9, 10 and 11
        {"source": "test-feed", "event_id": "a", "customer": "acme", "project": "p", "supplier": "homelab",
         "gpu_type": "rtx5090", "gpu_count": 1.5, "start": "2026-05-01T09:30:00Z",
         "end": "2026-05-01T11:15:00Z"},
        # begins before the window: only its part inside counts
        {"source": "test-feed", "event_id": "b", "customer": "beta", "project": "p", "supplier": "dc",
         "gpu_type": "h100", "gpu_count": 1, "start": "2026-04-30T23:00:00Z", "end": "2026-05-01T01:00:00Z"},
    ]  # fmt: skip
    path = tmp_path / "u.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ingest_file(engine, path)
    window = hourly_series(engine, datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 5, 2, tzinfo=UTC))
    series = {s.key: s.gpu_hours for s in window.series}
    assert [s.key for s in window.series] == [  # customers, suppliers, GPU types, total
        "customer:acme", "customer:beta", "supplier:dc", "supplier:homelab",
        "gpu_type:h100", "gpu_type:rtx5090", "total:all",
    ]  # fmt: skip
    np.testing.assert_allclose(series["customer:acme"][9:12], [0.75, 1.5, 0.375])
    np.testing.assert_allclose(series["customer:beta"][:2], [1.0, 0.0])
    assert series["total:all"].sum() == np.float64(3.625)
    assert window.customer_gpu_mix == {("acme", "rtx5090"): 2.625, ("beta", "h100"): 1.0}


def test_the_window_holds_every_event_that_overlaps_it_however_long_ago_it_began(engine: sa.Engine) -> None:
    """Single-day events are read by their day, events over midnight by their end day: an event of 30 days
    that began long before the window counts, events that touch the window's edges do not."""
    first, end = datetime(2026, 5, 10, tzinfo=UTC), datetime(2026, 5, 12, tzinfo=UTC)
    cases = [  # (start, end, GPUs)
        ("2026-04-12T06:00:00Z", "2026-05-10T02:00:00Z", 1),  # 28 days, ends 2 h into the window
        ("2026-04-20T00:00:00Z", "2026-05-19T00:00:00Z", 2),  # covers the whole window and more
        ("2026-05-09T23:00:00Z", "2026-05-10T00:00:00Z", 4),  # ends at the window's start: out
        ("2026-05-12T00:00:00Z", "2026-05-12T03:00:00Z", 4),  # begins at its end: out
        ("2026-05-10T00:00:00Z", "2026-05-10T00:30:00Z", 1),  # the first half hour
        ("2026-05-11T23:30:00Z", "2026-05-12T00:00:00Z", 1),  # the last half hour
        ("2026-05-11T22:00:00Z", "2026-05-12T05:00:00Z", 1),  # over the window's end: 2 h inside
        ("2026-05-09T12:00:00Z", "2026-05-09T13:00:00Z", 8),  # the day before, single-day: out
    ]
    path = Path(tempfile.mkdtemp()) / "u.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "source": "feed",
                    "event_id": str(i),
                    "customer": "acme",
                    "project": "p",
                    "supplier": "dc",
                    "gpu_type": "h100",
                    "gpu_count": gpus,
                    "start": s,
                    "end": t,
                }
            )
            + "\n"
            for i, (s, t, gpus) in enumerate(cases)
        )  # fmt: skip
    )
    assert ingest_file(engine, path).inserted == len(cases)
    total = {s.key: s.gpu_hours for s in hourly_series(engine, first, end).series}["total:all"]
    expected = np.zeros(48)
    for s, t, gpus in cases:
        for hour in range(48):
            lo = max(datetime.fromisoformat(s), first + timedelta(hours=hour))
            hi = min(datetime.fromisoformat(t), first + timedelta(hours=hour + 1))
            expected[hour] += gpus * max((hi - lo).total_seconds(), 0) / 3600
    np.testing.assert_allclose(total, expected)
    assert total[:2].tolist() == [1 + 2 + 0.5, 1 + 2]
    assert total.sum() == 2 + 2 * 48 + 0.5 + 0.5 + 2


def test_the_forecast_window_reads_indexes_not_the_whole_ledger(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path}/l.db")
    query = window_events(datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 5, 2, tzinfo=UTC))
    with engine.connect() as connection:
        compiled = query.compile(connection, compile_kwargs={"literal_binds": True})
        plan = [row[-1] for row in connection.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))]
    assert any("ix_usage_events_day_groups (start_day>? AND start_day<?)" in step for step in plan), plan
    assert any("ix_usage_events_multi_day" in step for step in plan), plan
    assert not any(step.startswith("SCAN usage_events") for step in plan), plan
