"""Exact money: amounts from integer GPU-microseconds x price, cents decided once per invoice line, and no
residue leaked: a statement's total is its exact total rounded half up once, for customers and suppliers."""

from __future__ import annotations

import json
import math
from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.rate_card import DEFAULT_RATES
from flows.bootstrap import REAL_USAGE_SLICE
from tasks.billing.invoices import apportion, cents_half_up, exact_amount, statements_for
from tasks.billing.ledger import ingest_file
from tasks.billing.rollup import billed_total, close_through, rates_from, rollup_days
from tasks.billing.trace_import import lora_trace_events

RATES = rates_from(DEFAULT_RATES)
NOV_15, NOV_26 = date(2024, 11, 15), date(2024, 11, 26)


def test_half_a_cent_rounds_up_and_nothing_is_divided_before_it_is_multiplied() -> None:
    # 1,068.258333… GPU-h at 0.60 is exactly 640.955: hours rounded first, or floats, bill 640.95.
    micro = 3_845_730_000_000
    assert exact_amount(micro, Decimal("0.60")) == Fraction("640.955")
    assert cents_half_up(exact_amount(micro, Decimal("0.60"))) == 64096
    assert cents_half_up(Fraction("0.004999999")) == 0 and cents_half_up(Fraction("0.005")) == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fractions(min_value=0, max_value=1000, max_denominator=3_600_000_000), max_size=60))
def test_apportioned_cents_add_up_to_the_total_rounded_once_and_stay_within_a_cent(
    exacts: list[Fraction],
) -> None:
    target = cents_half_up(sum(exacts, Fraction(0)))
    cents = apportion(target, exacts)
    assert sum(cents) == target
    assert all(abs(c - e * 100) < 1 for c, e in zip(cents, exacts, strict=True))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.fractions(min_value=0, max_value=1000, max_denominator=3_600_000_000), max_size=40),
    st.integers(0, 40),
)
def test_apportion_is_largest_remainder_with_ties_to_the_earlier_part(
    exacts: list[Fraction], extra: int
) -> None:
    """The integer arithmetic over one denominator gives what the definition gives in fractions."""
    floors = [math.floor(e * 100) for e in exacts]
    target = sum(floors) + min(extra, len(exacts))
    order = sorted(range(len(exacts)), key=lambda i: (-(exacts[i] * 100 - floors[i]), i))
    expected = [f + (i in order[: target - sum(floors)]) for i, f in enumerate(floors)]
    assert apportion(target, exacts) == expected


@given(st.integers(0, 10**15), st.decimals(min_value=0, max_value=10_000, places=6))
def test_an_exact_amount_is_microseconds_times_price_over_an_hour_of_microseconds(
    micro: int, price: Decimal
) -> None:
    assert exact_amount(micro, price) == Fraction(micro) * Fraction(price) / 3_600_000_000


def demo_ledger(engine: sa.Engine, tmp_path: Path) -> None:
    events = tmp_path / "alibaba.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in lora_trace_events(REAL_USAGE_SLICE, "a10")))
    assert ingest_file(engine, events).inserted == 318  # three rows name no project: quarantined


def test_the_demo_period_bills_its_exact_total_rounded_once(engine: sa.Engine, tmp_path: Path) -> None:
    """2.241944 GPU-h at 0.60 is 1.345167 USD: 1.35, where cents per daily row billed 1.27 (40 of 79 rows at
    0.00) and cents per customer would bill 1.34. The supplier is paid 0.42 x 2.241944 = 0.94."""
    demo_ledger(engine, tmp_path)
    summary = rollup_days(engine, NOV_15, NOV_26, RATES)
    assert (summary.gpu_hours, summary.customer_cost, summary.supplier_payout) == (
        Decimal("2.241944"),
        Decimal("1.35"),
        Decimal("0.94"),
    )
    [(invoice, payout)] = statements_for(engine, NOV_15, NOV_26, "USD")
    assert invoice.total == Decimal("1.35") and payout.total == Decimal("0.94")
    for statement in (invoice, payout):
        assert sum(line.amount for line in statement.lines) == statement.total
        assert all(
            abs(line.amount - Decimal(line.exact.numerator) / line.exact.denominator) < Decimal("0.01")
            for line in statement.lines
        )
        for owner in statement.owners():  # each customer's total is its exact total, to within a cent
            exact = sum((line.exact for line in statement.lines_of(owner)), Fraction(0))
            assert abs(Fraction(statement.total_of(owner)) - exact) < Fraction(1, 100)
    assert len(invoice.owners()) == 46 and len(invoice.lines) == 77  # lines: customer x project x GPU x month
    assert billed_total(engine, NOV_15, NOV_26) == Decimal("1.35")
    assert rollup_days(engine, NOV_15, NOV_26, RATES) == summary, "a re-run bills the same cents"


def test_closing_the_days_changes_no_cent(engine: sa.Engine, tmp_path: Path) -> None:
    demo_ledger(engine, tmp_path)
    before = rollup_days(engine, NOV_15, NOV_26, RATES)
    close_through(engine, NOV_26, RATES)
    after = rollup_days(engine, NOV_15, NOV_26, RATES)
    assert (after.customer_cost, after.supplier_payout, after.closed_days_skipped) == (
        before.customer_cost,
        before.supplier_payout,
        12,
    )


def usage_file(path: Path, *events: tuple[str, str, str, str]) -> Path:
    rows = [
        {
            "source": "feed",
            "event_id": f"{customer}-{start}",
            "customer": customer,
            "project": "p",
            "supplier": "s",
            "gpu_type": "a10",
            "gpu_count": count,
            "start": start,
            "duration_seconds": seconds,
        }
        for customer, start, seconds, count in events
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_tie_over_many_days_bills_half_up_once(engine: sa.Engine, tmp_path: Path) -> None:
    """8 GPUs for 480,716.25 s across six days: 1,068.258333… GPU-h, 640.955 USD exactly, billed 640.96."""
    ingest_file(
        engine, usage_file(tmp_path / "tie.jsonl", ("acme", "2026-05-01T00:00:00Z", "480716.25", "8"))
    )
    summary = rollup_days(engine, date(2026, 5, 1), date(2026, 5, 31), RATES)
    assert summary.customer_cost == Decimal("640.96")


def test_late_usage_is_an_invoice_line_of_its_own_naming_the_day_it_corrects(
    engine: sa.Engine, tmp_path: Path
) -> None:
    ingest_file(engine, usage_file(tmp_path / "a.jsonl", ("acme", "2026-05-01T10:00:00Z", "3600", "1")))
    close_through(engine, date(2026, 5, 1), RATES)
    ingest_file(engine, usage_file(tmp_path / "b.jsonl", ("acme", "2026-05-01T20:00:00Z", "1800", "1")))
    rollup_days(engine, date(2026, 5, 1), date(2026, 5, 2), RATES)
    [(invoice, payout)] = statements_for(engine, date(2026, 5, 1), date(2026, 5, 31), "USD")
    assert [(line.description, line.amount) for line in invoice.lines] == [
        ("usage", Decimal("0.60")),
        ("adjustment: late usage of 2026-05-01", Decimal("0.30")),
    ]
    assert [(line.description, line.amount) for line in payout.lines] == [
        ("usage", Decimal("0.42")),
        ("adjustment: late usage of 2026-05-01", Decimal("0.21")),
    ]


def test_months_are_settled_one_by_one(engine: sa.Engine, tmp_path: Path) -> None:
    ingest_file(
        engine,
        usage_file(
            tmp_path / "m.jsonl",
            ("acme", "2026-04-30T23:00:00Z", "7200", "1"),  # an hour in April, an hour in May
        ),
    )
    rollup_days(engine, date(2026, 4, 1), date(2026, 5, 31), RATES)
    months = statements_for(engine, date(2026, 4, 1), date(2026, 5, 31), "USD")
    assert [(inv.first_day, inv.last_day, inv.total) for inv, _ in months] == [
        (date(2026, 4, 1), date(2026, 4, 30), Decimal("0.60")),
        (date(2026, 5, 1), date(2026, 5, 31), Decimal("0.60")),
    ]
