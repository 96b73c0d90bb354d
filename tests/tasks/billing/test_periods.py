"""Open and closed periods: late usage before and after a close, adjustments, idle capacity, and a rollup
killed between its writes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from blocks.rate_card import DEFAULT_RATES
from tasks.billing.capacity import load_capacity, read_capacity
from tasks.billing.ledger import ingest_file
from tasks.billing.rollup import (
    adjustment_rows,
    billed_total,
    close_through,
    customer_rows,
    rates_from,
    rollup_days,
    split_by_day,
    supplier_rows,
)
from tasks.errors import InputError

RATES = rates_from(DEFAULT_RATES)
MAY_1, MAY_2, MAY_3 = date(2026, 5, 1), date(2026, 5, 2), date(2026, 5, 3)


def event(i: int, start: str, end: str, **overrides: Any) -> dict[str, Any]:
    return {
        "source": "test-feed",
        "event_id": f"e{i}",
        "customer": "acme",
        "project": "llm",
        "supplier": "homelab",
        "node": "gpu-1",
        "gpu_type": "a100",  # 1.40 per GPU-hour, payout 0.98
        "gpu_count": "1",
        "start": start,
        "end": end,
        **overrides,
    }


def load(engine: sa.Engine, tmp_path: Path, *records: dict[str, Any]) -> None:
    path = tmp_path / f"batch-{len(list(tmp_path.glob('batch-*')))}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert ingest_file(engine, path, source="feed").quarantined == 0  # one source: re-sent ids dedupe


def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "computed_at"} for r in rows]


def test_split_by_day_is_exact_across_midnights() -> None:
    from datetime import UTC, datetime

    pieces = list(
        split_by_day(
            datetime(2026, 5, 1, 23, tzinfo=UTC), datetime(2026, 5, 3, 1, tzinfo=UTC), Decimal("0.5")
        )
    )
    assert pieces == [(MAY_1, 1_800_000_000), (MAY_2, 43_200_000_000), (MAY_3, 1_800_000_000)]


def test_a_close_of_many_days_splits_events_over_midnight_as_a_rollup_does(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """One close covers every open day and reads the events over midnight once for all of them: each day
    gets its own piece, as a rollup of the same days gives it."""
    load(
        engine,
        tmp_path,
        event(1, "2026-04-30T22:00:00Z", "2026-05-03T01:00:00Z"),  # 2 h, 24 h, 24 h, 1 h
        event(2, "2026-05-02T23:30:00Z", "2026-05-03T00:30:00Z", customer="beta"),
        event(3, "2026-05-02T10:00:00Z", "2026-05-02T11:00:00Z"),
    )
    rollup_days(engine, date(2026, 4, 30), MAY_3, RATES)
    rolled = strip(customer_rows(engine, date(2026, 4, 30), MAY_3))
    closed = close_through(engine, MAY_3, RATES)
    assert [c.day for c in closed] == [date(2026, 4, 30), MAY_1, MAY_2, MAY_3]
    assert strip(customer_rows(engine, date(2026, 4, 30), MAY_3)) == rolled
    hours = {(str(r["day"]), r["customer"]): r["gpu_hours"] for r in rolled}
    assert hours == {
        ("2026-04-30", "acme"): Decimal("2"),
        ("2026-05-01", "acme"): Decimal("24"),
        ("2026-05-02", "acme"): Decimal("25"),
        ("2026-05-02", "beta"): Decimal("0.5"),
        ("2026-05-03", "acme"): Decimal("1"),
        ("2026-05-03", "beta"): Decimal("0.5"),
    }


def test_late_usage_before_close_is_billed_on_its_own_day(engine: sa.Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, event(1, "2026-05-01T10:00:00Z", "2026-05-01T11:00:00Z"))
    rollup_days(engine, MAY_1, MAY_1, RATES)
    load(engine, tmp_path, event(2, "2026-05-01T12:00:00Z", "2026-05-01T14:00:00Z"))  # late, in grace
    rollup_days(engine, MAY_1, MAY_2, RATES)
    close_through(engine, MAY_1, RATES)
    assert [r["customer_cost"] for r in customer_rows(engine, MAY_1, MAY_1)] == [Decimal("4.20")]
    assert adjustment_rows(engine, MAY_1, MAY_3) == []


def test_usage_after_close_becomes_an_adjustment_never_an_edit(engine: sa.Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, event(1, "2026-05-01T10:00:00Z", "2026-05-01T11:00:00Z"))
    [closed] = close_through(engine, MAY_1, RATES)
    assert (closed.day, closed.customer_cost, closed.adjustments_cost) == (MAY_1, Decimal("1.40"), Decimal(0))
    frozen = strip(customer_rows(engine, MAY_1, MAY_1))
    # After the close: 2 h more on May 1 and an event from 23:00 May 1 to 01:00 May 2.
    load(
        engine,
        tmp_path,
        event(2, "2026-05-01T12:00:00Z", "2026-05-01T14:00:00Z"),
        event(3, "2026-05-01T23:00:00Z", "2026-05-02T01:00:00Z", customer="beta"),
    )
    summary = rollup_days(engine, MAY_1, MAY_2, RATES)
    assert (summary.recomputed_days, summary.closed_days_skipped) == (1, 1)
    assert strip(customer_rows(engine, MAY_1, MAY_1)) == frozen, "a closed day is never rewritten"
    provisional = {(a["customer"], a["usage_day"]): a for a in adjustment_rows(engine, MAY_2, MAY_2)}
    assert {k: (a["gpu_hours"], a["customer_cost"], a["final"]) for k, a in provisional.items()} == {
        ("acme", MAY_1): (Decimal("2.000000"), Decimal("2.80"), False),
        ("beta", MAY_1): (Decimal("1.000000"), Decimal("1.40"), False),
    }
    assert [(r["customer"], r["gpu_hours"]) for r in customer_rows(engine, MAY_2, MAY_2)] == [
        ("beta", Decimal("1.000000"))  # beta's hour after midnight is May 2's own usage
    ]
    close_through(engine, MAY_2, RATES)
    assert all(a["final"] for a in adjustment_rows(engine, MAY_2, MAY_2))
    # Every GPU-hour is billed exactly once: 1 + 2 + 1 on May 1 (day + adjustments) and 1 on May 2.
    assert billed_total(engine, MAY_1, MAY_3) == Decimal("7.00")
    load(engine, tmp_path, event(4, "2026-05-01T15:00:00Z", "2026-05-01T15:30:00Z"))
    rollup_days(engine, MAY_1, MAY_3, RATES)
    assert len(adjustment_rows(engine, MAY_2, MAY_2)) == 2, "a closed day's adjustments are final"
    [late] = adjustment_rows(engine, MAY_3, MAY_3)
    assert (late["usage_day"], late["customer_cost"]) == (MAY_1, Decimal("0.70"))
    assert billed_total(engine, MAY_1, MAY_3) == Decimal("7.70")


def test_duplicates_and_reruns_never_double_count(engine: sa.Engine, tmp_path: Path) -> None:
    records = [
        event(i, f"2026-05-01T{i % 24:02d}:00:00Z", f"2026-05-01T{i % 24:02d}:30:00Z") for i in range(100)
    ]
    load(engine, tmp_path, *records, *records[::10])  # 10 % duplicates in the file
    close_through(engine, MAY_1, RATES)
    load(engine, tmp_path, *records[:50])  # re-sent after the close: duplicates, not adjustments
    for _ in range(3):
        rollup_days(engine, MAY_1, MAY_2, RATES)
    close_through(engine, MAY_2, RATES)
    assert adjustment_rows(engine, MAY_1, MAY_3) == []
    assert billed_total(engine, MAY_1, MAY_3) == Decimal("70.00")  # 100 x 0.5 h x 1.40


def test_idle_capacity_is_capacity_minus_allocated(engine: sa.Engine, tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(
        "supplier,node,gpu_type,gpu_count,valid_from,valid_to\n"
        "homelab,gpu-1,a100,2,2026-04-01T00:00:00Z,\n"
        "homelab,gpu-2,a100,4,2026-05-01T12:00:00Z,2026-05-02T00:00:00Z\n"
    )
    assert load_capacity(engine, read_capacity(nodes)) == 2
    load(engine, tmp_path, event(1, "2026-05-01T10:00:00Z", "2026-05-01T16:00:00Z", gpu_count="1.5"))
    rollup_days(engine, MAY_1, MAY_2, RATES)
    rows = {r["day"]: r for r in supplier_rows(engine, MAY_1, MAY_2)}
    assert (rows[MAY_1]["capacity_gpu_hours"], rows[MAY_1]["gpu_hours"], rows[MAY_1]["idle_gpu_hours"]) == (
        Decimal("96.000000"),  # 2 GPUs x 24 h + 4 GPUs x 12 h
        Decimal("9.000000"),
        Decimal("87.000000"),
    )
    assert (rows[MAY_2]["gpu_hours"], rows[MAY_2]["idle_gpu_hours"]) == (
        Decimal("0.000000"),
        Decimal("48.000000"),
    )


def test_a_bad_capacity_row_names_its_line_and_writes_nothing(engine: sa.Engine, tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(
        "supplier,node,gpu_type,gpu_count,valid_from,valid_to\n"
        "homelab,gpu-1,a100,2,2026-04-01T00:00:00Z,\n"
        "homelab,gpu-2,tpu,4,2026-05-01T12:00:00Z,\n"
    )
    with pytest.raises(InputError, match=r"nodes.csv, line 3: unknown GPU type 'tpu'"):
        read_capacity(nodes)


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import date
    import sqlalchemy as sa
    from blocks.rate_card import DEFAULT_RATES
    from tasks.database import connect
    from tasks.billing.rollup import rates_from, rollup_days

    engine = connect(sys.argv[1])
    writes = 0

    @sa.event.listens_for(engine, "after_cursor_execute")
    def die_between_writes(conn, cursor, statement, *args):
        global writes
        if statement.lstrip().upper().startswith("DELETE FROM BILLING_SUPPLIER"):
            writes += 1  # the old rows deleted, the new ones not yet written: the process dies here
            os.kill(os.getpid(), signal.SIGKILL)

    rollup_days(engine, date(2026, 5, 1), date(2026, 5, 3), rates_from(DEFAULT_RATES))
    """
)


def test_a_rollup_killed_between_writes_then_rerun_gives_identical_totals(
    ledger_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    load(
        engine,
        tmp_path,
        *[
            event(
                i,
                f"2026-05-0{1 + i % 3}T{i % 24:02d}:00:00Z",
                f"2026-05-0{1 + i % 3}T{i % 24:02d}:40:00Z",
                gpu_count="0.46",
                customer=f"c{i % 7}",
            )
            for i in range(300)
        ],
    )
    rollup_days(engine, MAY_1, MAY_3, RATES)
    reference, billed = strip(customer_rows(engine, MAY_1, MAY_3)), billed_total(engine, MAY_1, MAY_3)
    load(engine, tmp_path, event(999, "2026-05-02T05:00:00Z", "2026-05-02T06:00:00Z"))  # changes the rows
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, ledger_url],
        cwd=Path(__file__).parents[3],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert strip(customer_rows(engine, MAY_1, MAY_3)) == reference, "the killed run left no trace"
    rollup_days(engine, MAY_1, MAY_3, RATES)
    after = strip(customer_rows(engine, MAY_1, MAY_3))
    assert billed_total(engine, MAY_1, MAY_3) == billed + Decimal("1.40")
    rollup_days(engine, MAY_1, MAY_3, RATES)
    assert strip(customer_rows(engine, MAY_1, MAY_3)) == after
    assert os.path.exists(tmp_path)
