"""The daily rollup on SQLite and PostgreSQL: exact cents, day clipping, idempotence, concurrent runs."""

from __future__ import annotations

import json
import threading
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from blocks.rate_card import DEFAULT_RATES, RateCard
from tasks.billing.ledger import ingest_file
from tasks.billing.rollup import RateMissingError, customer_rows, rates_from, rollup_days
from tasks.database import connect
from tests.postgres import fresh_database

RATES = rates_from(DEFAULT_RATES)
MAY_1, MAY_2 = date(2026, 5, 1), date(2026, 5, 2)


def event(i: int, **overrides: Any) -> dict[str, Any]:
    return {
        "source": "test-feed",
        "event_id": f"e{i}",
        "customer": "acme",
        "project": "llm",
        "supplier": "homelab",
        "node": "gpu-1",
        "gpu_type": "rtx5090",
        "gpu_count": "0.5",
        "start": "2026-05-01T10:00:00Z",
        "end": "2026-05-01T11:30:00Z",
        **overrides,
    }


def load(engine: sa.Engine, tmp_path: Path, *records: dict[str, Any]) -> None:
    path = tmp_path / f"batch-{len(list(tmp_path.glob('batch-*')))}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert ingest_file(engine, path).quarantined == 0


def test_exact_cents_for_fractional_gpus(engine: sa.Engine, tmp_path: Path) -> None:
    load(
        engine,
        tmp_path,
        event(1),
        event(
            2,
            customer="beta",
            gpu_type="h100",
            gpu_count="2",
            start="2026-05-01T00:00:00Z",
            end="2026-05-01T00:20:00Z",
        ),
    )
    summary = rollup_days(engine, MAY_1, MAY_1, RATES)
    rows = {(r["customer"], r["gpu_type"]): r for r in customer_rows(engine, MAY_1, MAY_1)}
    acme = rows[("acme", "rtx5090")]  # 0.5 GPU x 1.5 h = 0.75 GPU-h at 0.80 / 0.56
    assert (acme["gpu_hours"], acme["customer_cost"], acme["supplier_payout"], acme["margin"]) == (
        Decimal("0.750000"),
        Decimal("0.60"),
        Decimal("0.42"),
        Decimal("0.18"),
    )
    beta = rows[("beta", "h100")]  # 2 GPUs x 1/3 h = 0.666667 GPU-h at 2.70 -> 1.80 (rounded once)
    assert (beta["gpu_hours"], beta["customer_cost"], beta["supplier_payout"]) == (
        Decimal("0.666667"),
        Decimal("1.80"),
        Decimal("1.26"),
    )
    assert (summary.customer_cost, summary.supplier_payout, summary.margin) == (
        Decimal("2.40"),
        Decimal("1.68"),
        Decimal("0.72"),
    )


def test_an_event_over_midnight_is_billed_on_both_days(engine: sa.Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, event(1, gpu_count="1", start="2026-05-01T23:00:00Z", end="2026-05-02T01:30:00Z"))
    rollup_days(engine, MAY_1, MAY_2, RATES)
    hours = {r["day"]: r["gpu_hours"] for r in customer_rows(engine, MAY_1, MAY_2)}
    assert hours == {MAY_1: Decimal("1.000000"), MAY_2: Decimal("1.500000")}


def test_rerunning_a_period_gives_identical_rows(engine: sa.Engine, tmp_path: Path) -> None:
    load(
        engine,
        tmp_path,
        *[
            event(i, start=f"2026-05-01T{i % 24:02d}:00:00Z", end=f"2026-05-01T{i % 24:02d}:45:00Z")
            for i in range(48)
        ],
    )
    first = rollup_days(engine, MAY_1, MAY_1, RATES)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "computed_at"} for r in rows]  # noqa: E731
    before = strip(customer_rows(engine, MAY_1, MAY_1))
    second = rollup_days(engine, MAY_1, MAY_1, RATES)
    assert strip(customer_rows(engine, MAY_1, MAY_1)) == before
    assert (first.customer_cost, first.gpu_hours) == (second.customer_cost, second.gpu_hours)
    assert first.gpu_hours == Decimal("18.000000")  # 48 x 0.5 GPU x 0.75 h


def test_a_missing_rate_stops_the_rollup_naming_it(engine: sa.Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, event(1, gpu_type="t4"))
    with pytest.raises(RateMissingError, match="no price for t4 on 2026-05-01"):
        rollup_days(engine, MAY_1, MAY_1, [r for r in RATES if r.gpu_type != "t4"])
    assert customer_rows(engine, MAY_1, MAY_1) == []  # nothing half-written


@pytest.mark.postgres
def test_concurrent_rollups_of_one_period_agree_to_the_cent(tmp_path: Path) -> None:
    with fresh_database("gpuflows_rollup_race") as dsn:
        engine = connect(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
        load(engine, tmp_path, *[event(i, gpu_count="0.46") for i in range(200)])
        results: list[Any] = []
        threads = [
            threading.Thread(target=lambda: results.append(rollup_days(engine, MAY_1, MAY_1, RATES)))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(results) == 4 and len({r.customer_cost for r in results}) == 1
        assert results[0].customer_cost == Decimal("110.40")  # 200 x 0.46 x 1.5 h x 0.80
        assert len(customer_rows(engine, MAY_1, MAY_1)) == 1
        engine.dispose()


def test_the_rate_card_block_rejects_overlapping_rates() -> None:
    rate = {"gpu_type": "h100", "customer_price": "2.70", "supplier_payout": "1.89"}
    with pytest.raises(ValueError, match="rates for h100 overlap"):
        RateCard(rates=[rate | {"effective_from": "2026-01-01"}, rate | {"effective_from": "2026-03-01"}])
    card = RateCard(
        rates=[
            rate | {"effective_from": "2026-01-01", "effective_to": "2026-02-28"},
            rate | {"effective_from": "2026-03-01", "customer_price": "2.50"},
        ]
    )
    assert [r.customer_price for r in card.rates] == [Decimal("2.70"), Decimal("2.50")]
