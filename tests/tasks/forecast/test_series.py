"""Hourly usage series from the ledger: GPU-seconds spread over the hours they cover, sums preserved."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tasks.billing.ledger import ingest_file
from tasks.database import connect
from tasks.forecast.series import hourly_series


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
