"""On SQLite an ingest during a long rollup waits its turn: the ledger is in WAL mode and a writer waits for
the write lock (tasks/database.py), where sqlite3's 5 s default failed with "database is locked"."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from blocks.rate_card import DEFAULT_RATES
from tasks.billing import rollup as rollup_module
from tasks.billing.ledger import ingest_file
from tasks.billing.rollup import billed_total, rates_from, rollup_days
from tasks.database import connect

RATES = rates_from(DEFAULT_RATES)
EVENTS = 300_000  # the size at which the ingest used to fail
FIRST = datetime(2026, 1, 1)


def large_ledger(path: Path) -> None:
    """300k ten-minute events over 300 days, loaded in bulk (ingest's validation is not under test)."""
    connect(f"sqlite:///{path}")
    raw = sqlite3.connect(path)
    with raw:
        raw.execute(
            "INSERT INTO ingest_batches (file, source, rows, inserted, duplicates, quarantined, created_at)"
            " VALUES ('bulk', 'bulk', ?, ?, 0, 0, '2026-01-01 00:00:00.000000')",
            (EVENTS, EVENTS),
        )
        raw.executemany(
            "INSERT INTO usage_events (source, event_id, customer, project, job, supplier, node, gpu_type,"
            " gpu_count, start_at, end_at, batch_id, ingested_at, start_day, end_day, gpu_microseconds)"
            " VALUES ('bulk', ?, ?, 'p', 'j', 'homelab', '', 'a10', 1, ?, ?, 1, ?, ?, ?, 600000000)",
            (
                (
                    f"e{i}",
                    f"c{i % 200}",
                    (start := FIRST + timedelta(minutes=i)).isoformat(" ") + ".000000",
                    (start + timedelta(minutes=10)).isoformat(" ") + ".000000",
                    start.isoformat(" ") + ".000000",
                    start.date().isoformat(),
                    (start + timedelta(minutes=10) - timedelta(microseconds=1)).date().isoformat(),
                )
                for i in range(EVENTS)
            ),
        )
    raw.close()


def test_an_ingest_during_a_long_rollup_waits_its_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_price = rollup_module.price

    def slow_price(*args: Any, **kwargs: Any) -> Any:
        time.sleep(6)  # past sqlite3's old 5 s, whatever this machine's speed: a ledger a few times larger
        return real_price(*args, **kwargs)

    monkeypatch.setattr(rollup_module, "price", slow_price)
    path = tmp_path / "ledger.db"
    large_ledger(path)
    engine = connect(f"sqlite:///{path}")
    late = tmp_path / "late.jsonl"
    late.write_text(
        json.dumps(
            {
                "source": "feed",
                "event_id": "late-1",
                "customer": "c0",
                "project": "p",
                "supplier": "homelab",
                "gpu_type": "a10",
                "gpu_count": 1,
                "start": "2026-01-01T00:00:00Z",
                "duration_seconds": 3600,
            }
        )
        + "\n"
    )
    first, last = date(2026, 1, 1), date(2026, 10, 31)
    done: dict[str, float] = {}

    def rollup() -> None:
        rollup_days(engine, first, last, RATES)
        done["rollup"] = time.monotonic()

    worker = threading.Thread(target=rollup)
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the rollup holds the write lock
        probe = sqlite3.connect(path, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
        except sqlite3.OperationalError:
            break
        finally:
            probe.close()
        time.sleep(0.05)
    began = time.monotonic()
    summary = ingest_file(engine, late)  # used to raise "database is locked" after 5 s
    worker.join()
    assert summary.inserted == 1
    waited = done["rollup"] - began
    assert waited > 5, f"the ingest waited {waited:.1f} s, less than sqlite3's old limit"
    monkeypatch.undo()
    rollup_days(engine, first, first, RATES)
    # Jan 1: 1,440 ten-minute events less the 45 minutes past midnight, plus the late hour, at 0.60
    assert billed_total(engine, first, first) == Decimal("144.15")
