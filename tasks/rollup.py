"""Daily billing rollup: GPU-hours, customer cost, supplier payout and margin, priced by the rate card.

Aggregation runs in the database (one query per day and view), so it scales with the ledger, not with
Python: each event is clipped to the day (an event over midnight is billed on both days, by its seconds
in each), GPU-seconds = seconds x GPU count, grouped per customer/project/GPU type and per supplier/GPU
type. Money is Decimal, each row's amount rounded once to the cent (half up).

Idempotent: a period's rows are rewritten in one transaction, so re-running any period gives identical
rows. On PostgreSQL an advisory lock serialises concurrent rollups; SQLite serialises writers itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa

from tasks.errors import GpuflowsError
from tasks.ledger import metadata, usage_events

CENT = Decimal("0.01")
MICRO = Decimal("0.000001")
ROLLUP_LOCK = 0x6770_7566_6C6F_7773  # "gpuflows": the advisory lock key of the billing rollup

customer_daily = sa.Table(
    "billing_customer_daily",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("customer", sa.String(200), primary_key=True),
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("gpu_type", sa.String(50), primary_key=True),
    sa.Column("gpu_hours", sa.Numeric(18, 6), nullable=False),
    sa.Column("customer_cost", sa.Numeric(14, 2), nullable=False),
    sa.Column("supplier_payout", sa.Numeric(14, 2), nullable=False),
    sa.Column("margin", sa.Numeric(14, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
)
supplier_daily = sa.Table(
    "billing_supplier_daily",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("supplier", sa.String(200), primary_key=True),
    sa.Column("gpu_type", sa.String(50), primary_key=True),
    sa.Column("gpu_hours", sa.Numeric(18, 6), nullable=False),
    sa.Column("supplier_payout", sa.Numeric(14, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
)


class RateMissingError(GpuflowsError):
    pass


@dataclass(frozen=True, slots=True)
class Rate:
    gpu_type: str
    customer_price: Decimal
    supplier_payout: Decimal
    effective_from: date
    effective_to: date | None


@dataclass(frozen=True, slots=True)
class RollupSummary:
    first_day: date
    last_day: date
    customer_rows: int
    supplier_rows: int
    gpu_hours: Decimal
    customer_cost: Decimal
    supplier_payout: Decimal
    margin: Decimal
    currency: str


def rates_from(card_rates: Sequence[Any]) -> list[Rate]:
    """The rate card's entries (objects with Rate's fields, e.g. blocks.rate_card.GpuRate) as Rates."""
    return [
        Rate(r.gpu_type, r.customer_price, r.supplier_payout, r.effective_from, r.effective_to)
        for r in card_rates
    ]


def find_rate(rates: Sequence[Rate], gpu_type: str, day: date) -> Rate:
    for rate in rates:
        if (
            rate.gpu_type == gpu_type
            and rate.effective_from <= day
            and (rate.effective_to is None or day <= rate.effective_to)
        ):
            return rate
    raise RateMissingError(
        f"the rate card has no price for {gpu_type} on {day}; add one, then re-run the rollup"
    )


def _epoch(dialect: str, value: Any) -> Any:
    if dialect == "sqlite":
        return sa.cast(sa.func.strftime("%s", value), sa.Integer)
    return sa.func.extract("epoch", value)


def _clip(dialect: str, day_start: datetime, day_end: datetime) -> Any:
    """Seconds of each event inside [day_start, day_end)."""
    start, end = usage_events.c.start_at, usage_events.c.end_at
    if dialect == "sqlite":  # SQLite's scalar min/max of two values
        lo, hi = sa.func.max(start, day_start), sa.func.min(end, day_end)
    else:
        lo, hi = sa.func.greatest(start, day_start), sa.func.least(end, day_end)
    return _epoch(dialect, hi) - _epoch(dialect, lo)


def _hours(gpu_seconds: Any) -> Decimal:
    return Decimal(str(gpu_seconds)) / Decimal(3600)


def _day_rows(
    connection: sa.Connection, day: date, rates: Sequence[Rate], currency: str, now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    dialect = connection.dialect.name
    day_start = datetime.combine(day, time(), UTC)
    day_end = day_start + timedelta(days=1)
    gpu_seconds = sa.func.sum(_clip(dialect, day_start, day_end) * usage_events.c.gpu_count).label(
        "gpu_seconds"
    )
    overlaps = sa.and_(usage_events.c.start_at < day_end, usage_events.c.end_at > day_start)
    by_customer = (
        sa.select(usage_events.c.customer, usage_events.c.project, usage_events.c.gpu_type, gpu_seconds)
        .where(overlaps)
        .group_by(usage_events.c.customer, usage_events.c.project, usage_events.c.gpu_type)
    )
    by_supplier = (
        sa.select(usage_events.c.supplier, usage_events.c.gpu_type, gpu_seconds)
        .where(overlaps)
        .group_by(usage_events.c.supplier, usage_events.c.gpu_type)
    )
    customers = []
    for row in connection.execute(by_customer):
        rate, hours = find_rate(rates, row.gpu_type, day), _hours(row.gpu_seconds)
        cost = (hours * rate.customer_price).quantize(CENT, ROUND_HALF_UP)
        payout = (hours * rate.supplier_payout).quantize(CENT, ROUND_HALF_UP)
        customers.append(
            {
                "day": day,
                "customer": row.customer,
                "project": row.project,
                "gpu_type": row.gpu_type,
                "gpu_hours": hours.quantize(MICRO, ROUND_HALF_UP),
                "customer_cost": cost,
                "supplier_payout": payout,
                "margin": cost - payout,
                "currency": currency,
                "computed_at": now,
            }
        )
    suppliers = []
    for row in connection.execute(by_supplier):
        rate, hours = find_rate(rates, row.gpu_type, day), _hours(row.gpu_seconds)
        suppliers.append(
            {
                "day": day,
                "supplier": row.supplier,
                "gpu_type": row.gpu_type,
                "gpu_hours": hours.quantize(MICRO, ROUND_HALF_UP),
                "supplier_payout": (hours * rate.supplier_payout).quantize(CENT, ROUND_HALF_UP),
                "currency": currency,
                "computed_at": now,
            }
        )
    return customers, suppliers


def rollup_days(
    engine: sa.Engine, first_day: date, last_day: date, rates: Sequence[Rate], currency: str = "USD"
) -> RollupSummary:
    """Recompute and replace the rollup rows of first_day..last_day (inclusive), atomically."""
    if last_day < first_day:
        raise GpuflowsError(f"rollup period ends ({last_day}) before it starts ({first_day})")
    now = datetime.now(UTC)
    customers: list[dict[str, Any]] = []
    suppliers: list[dict[str, Any]] = []
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROLLUP_LOCK})
        day = first_day
        while day <= last_day:
            day_customers, day_suppliers = _day_rows(connection, day, rates, currency, now)
            customers += day_customers
            suppliers += day_suppliers
            day += timedelta(days=1)
        for table in (customer_daily, supplier_daily):
            connection.execute(table.delete().where(table.c.day.between(first_day, last_day)))
        if customers:
            connection.execute(customer_daily.insert(), customers)
        if suppliers:
            connection.execute(supplier_daily.insert(), suppliers)
    total = sum((r["customer_cost"] for r in customers), Decimal(0))
    payout = sum((r["supplier_payout"] for r in customers), Decimal(0))
    return RollupSummary(
        first_day,
        last_day,
        len(customers),
        len(suppliers),
        sum((r["gpu_hours"] for r in customers), Decimal(0)),
        total,
        payout,
        total - payout,
        currency,
    )


def customer_rows(engine: sa.Engine, first_day: date, last_day: date) -> list[dict[str, Any]]:
    query = (
        sa.select(customer_daily)
        .where(customer_daily.c.day.between(first_day, last_day))
        .order_by(
            customer_daily.c.day,
            customer_daily.c.customer,
            customer_daily.c.project,
            customer_daily.c.gpu_type,
        )
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
