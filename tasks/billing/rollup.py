"""Daily billing rollup with open and closed periods: GPU-hours, customer cost, supplier payout, margin and
supplier idle capacity, priced by the rate card.

A period is one UTC day. It is *open* until it is closed (after a grace window for late events, by the
daily close); days close in order, and every day up to the last closed one is closed.
- An open day's rows are recomputed by every rollup: all usage on that day, whatever batch brought it.
- Closing a day recomputes it one last time and records the last ingest batch it saw. Its rows are never
  written again.
- Usage that reaches a closed day later (a batch after that day's close) is an *adjustment*, billed on the
  first open day: provisional while that day is open, final when it closes. Each (event, usage day) is
  therefore billed exactly once, in its own day or in one adjustment.

Aggregation runs in the database on the integer `gpu_microseconds` (exact on both databases): one grouped
query over the days' single-day events (index `ix_usage_events_day_groups`), plus the few events that cross
midnight (partial index), split per day in Python. Rows keep their integer GPU-microseconds, the prices they
were billed at, and their amounts unrounded; cents are decided once per invoice line (tasks/billing/invoices).
Each write is one transaction; PostgreSQL serialises rollups on an advisory lock and SQLite on its write
lock, which the run's first statement (its `billing_runs` record) takes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

import sqlalchemy as sa

from tasks.audit import record
from tasks.billing.capacity import capacity_hours
from tasks.billing.invoices import cents_half_up, exact_amount, statements_for, to_money
from tasks.billing.ledger import LEDGER_WRITE_LOCK, MICROSECONDS_PER_HOUR, as_utc, gpu_microseconds
from tasks.database import insert_rows
from tasks.errors import GpuflowsError
from tasks.schema import (
    adjustments,
    billing_runs,
    customer_daily,
    over_midnight,
    periods,
    single_day,
    supplier_daily,
    usage_events,
)

CENT = Decimal("0.01")
MICRO = Decimal("0.000001")
EXACT_PLACES = Decimal("1e-12")  # what a daily row shows of its exact amount; totals come from microseconds
ONE_DAY = timedelta(days=1)
ROLLUP_LOCK = 0x6770_7566_6C6F_7773  # "gpuflows": the advisory lock key of the billing rollup


# (day, customer, project, gpu_type, supplier) → GPU-microseconds
UsageKey = tuple[date, str, str, str, str]


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
    recomputed_days: int  # open days written; closed days in the range are left as they are
    closed_days_skipped: int
    customer_rows: int
    supplier_rows: int
    adjustment_rows: int
    gpu_hours: Decimal
    customer_cost: Decimal
    supplier_payout: Decimal
    margin: Decimal
    adjustments_cost: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    day: date
    last_batch_id: int
    customer_cost: Decimal
    adjustments_cost: Decimal


@dataclass(slots=True)
class _Priced:
    customers: list[dict[str, Any]] = field(default_factory=list)
    suppliers: list[dict[str, Any]] = field(default_factory=list)
    adjustments: list[dict[str, Any]] = field(default_factory=list)


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


# ------------------------------------------------------------------------------------------------ usage


def split_by_day(start: datetime, end: datetime, gpu_count: Decimal) -> Iterable[tuple[date, int]]:
    """GPU-microseconds of [start, end) on each UTC day it touches."""
    day = start.date()
    while True:
        day_end = datetime.combine(day + ONE_DAY, time(), start.tzinfo)
        piece_end = min(end, day_end)
        yield day, gpu_microseconds(max(start, day_end - ONE_DAY), piece_end, gpu_count)
        if piece_end >= end:
            return
        day += ONE_DAY


def _cols() -> tuple[Any, ...]:
    e = usage_events.c
    return e.customer, e.project, e.gpu_type, e.supplier


def day_usage(connection: sa.Connection, first_day: date, last_day: date) -> dict[UsageKey, int]:
    """All usage on first_day..last_day, whatever batch brought it."""
    usage = single_day_usage(connection, first_day, last_day)
    for key, micro in crossing_midnight(connection, first_day, last_day).items():
        usage[key] += micro
    return usage


def single_day_usage(connection: sa.Connection, first_day: date, last_day: date) -> dict[UsageKey, int]:
    """The usage of events that begin and end on one day of first_day..last_day, summed by the database."""
    e = usage_events.c
    usage: dict[UsageKey, int] = defaultdict(int)
    single = (
        sa.select(e.start_day, *_cols(), sa.func.sum(e.gpu_microseconds))
        .where(*single_day(first_day, last_day))
        .group_by(e.start_day, *_cols())
    )
    for day, customer, project, gpu_type, supplier, micro in connection.execute(single):
        usage[(_as_date(day), customer, project, gpu_type, supplier)] += int(micro)
    return usage


def crossing_midnight(connection: sa.Connection, first_day: date, last_day: date) -> dict[UsageKey, int]:
    """The usage on first_day..last_day of events over midnight (a few in a thousand), split per day.

    Read once per run, not once per day: a past day's query is planned on the start_day index (the
    planner cannot know how few events cross midnight), and a close of a year of 10 M events spent a minute
    reading that index 365 times."""
    e = usage_events.c
    usage: dict[UsageKey, int] = defaultdict(int)
    multi = sa.select(*_cols(), e.start_at, e.end_at, e.gpu_count).where(*over_midnight(first_day, last_day))
    for customer, project, gpu_type, supplier, start, end, count in connection.execute(multi):
        for day, micro in split_by_day(as_utc(start), as_utc(end), Decimal(str(count))):
            if first_day <= day <= last_day:
                usage[(day, customer, project, gpu_type, supplier)] += micro
    return usage


def late_usage(
    connection: sa.Connection, after_batch: int, up_to_batch: int | None, before_day: date
) -> dict[UsageKey, int]:
    """Usage on days before `before_day` (closed days) from batches in (after_batch, up_to_batch]."""
    e = usage_events.c
    query = sa.select(*_cols(), e.start_at, e.end_at, e.gpu_count, e.gpu_microseconds, e.end_day).where(
        e.batch_id > after_batch, e.start_day < before_day
    )
    if up_to_batch is not None:
        query = query.where(e.batch_id <= up_to_batch)
    usage: dict[UsageKey, int] = defaultdict(int)
    for customer, project, gpu_type, supplier, start, end, count, micro, end_day in connection.execute(query):
        start, end = as_utc(start), as_utc(end)
        if _as_date(end_day) == start.date():
            usage[(start.date(), customer, project, gpu_type, supplier)] += int(micro)
            continue
        for day, piece in split_by_day(start, end, Decimal(str(count))):
            if day < before_day:
                usage[(day, customer, project, gpu_type, supplier)] += piece
    return usage


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# ------------------------------------------------------------------------------------------------ pricing


def _hours(micro: int) -> Decimal:
    return Decimal(micro) / MICROSECONDS_PER_HOUR


def _money(micro: int, price: Decimal) -> Decimal:
    """A row's amount as it is shown: multiplied before it is divided, unrounded to 12 places."""
    return (Decimal(micro) * price / MICROSECONDS_PER_HOUR).quantize(EXACT_PLACES, ROUND_HALF_UP)


def price(
    usage: dict[UsageKey, int],
    rates: Sequence[Rate],
    currency: str,
    now: datetime,
    capacity: dict[tuple[date, str, str], Decimal] | None = None,
) -> _Priced:
    """Customer rows (day/customer/project/GPU type) and supplier rows (day/supplier/GPU type, with idle
    capacity): microseconds summed exactly, kept with the prices; amounts unrounded."""
    by_customer: dict[tuple[date, str, str, str], int] = defaultdict(int)
    by_supplier: dict[tuple[date, str, str], int] = defaultdict(int)
    for (day, customer, project, gpu_type, supplier), micro in usage.items():
        by_customer[(day, customer, project, gpu_type)] += micro
        by_supplier[(day, supplier, gpu_type)] += micro
    priced = _Priced()
    for (day, customer, project, gpu_type), micro in sorted(by_customer.items()):
        rate, hours = find_rate(rates, gpu_type, day), _hours(micro)
        cost, payout = _money(micro, rate.customer_price), _money(micro, rate.supplier_payout)
        priced.customers.append(
            {
                "day": day,
                "customer": customer,
                "project": project,
                "gpu_type": gpu_type,
                "gpu_hours": hours.quantize(MICRO, ROUND_HALF_UP),
                "customer_cost": cost,
                "supplier_payout": payout,
                "margin": cost - payout,
                "currency": currency,
                "computed_at": now,
                "gpu_microseconds": micro,
                "customer_price": rate.customer_price,
                "supplier_price": rate.supplier_payout,
            }
        )
    capacity = capacity or {}
    for key in sorted(set(by_supplier) | set(capacity)):
        day, supplier, gpu_type = key
        micro = by_supplier.get(key, 0)
        hours = _hours(micro)
        cap = capacity.get(key)
        rate = find_rate(rates, gpu_type, day) if micro else None
        priced.suppliers.append(
            {
                "day": day,
                "supplier": supplier,
                "gpu_type": gpu_type,
                "gpu_hours": hours.quantize(MICRO, ROUND_HALF_UP),
                "supplier_payout": Decimal(0) if rate is None else _money(micro, rate.supplier_payout),
                "currency": currency,
                "computed_at": now,
                "gpu_microseconds": micro,
                "supplier_price": None if rate is None else rate.supplier_payout,
                "capacity_gpu_hours": None if cap is None else cap.quantize(MICRO, ROUND_HALF_UP),
                # Negative idle means usage above the declared capacity: shown, not hidden.
                "idle_gpu_hours": None if cap is None else (cap - hours).quantize(MICRO, ROUND_HALF_UP),
            }
        )
    return priced


def price_adjustments(
    usage: dict[UsageKey, int],
    billed_day: date,
    rates: Sequence[Rate],
    currency: str,
    now: datetime,
    final: bool,
) -> list[dict[str, Any]]:
    """Late usage as adjustment rows billed on billed_day, priced at the rate of the day it was used."""
    rows = []
    for (usage_day, customer, project, gpu_type, supplier), micro in sorted(usage.items()):
        rate, hours = find_rate(rates, gpu_type, usage_day), _hours(micro)
        cost, payout = _money(micro, rate.customer_price), _money(micro, rate.supplier_payout)
        rows.append(
            {
                "billed_day": billed_day,
                "usage_day": usage_day,
                "customer": customer,
                "project": project,
                "gpu_type": gpu_type,
                "supplier": supplier,
                "gpu_hours": hours.quantize(MICRO, ROUND_HALF_UP),
                "customer_cost": cost,
                "supplier_payout": payout,
                "margin": cost - payout,
                "currency": currency,
                "final": final,
                "computed_at": now,
                "gpu_microseconds": micro,
                "customer_price": rate.customer_price,
                "supplier_price": rate.supplier_payout,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ periods


def _begin_run(
    connection: sa.Connection, kind: str, first: date | None, last: date | None, **detail: Any
) -> None:
    """Serialise with other rollups and closes; on SQLite this first write takes the database's write lock,
    so everything the run reads afterwards is one consistent state."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROLLUP_LOCK})
        if kind == "close":  # wait for in-flight ingest batches, keep new ones out until committed
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LEDGER_WRITE_LOCK})
    connection.execute(
        billing_runs.insert().values(
            kind=kind,
            first_day=first,
            last_day=last,
            detail=json.dumps(detail, default=str, sort_keys=True),
            started_at=datetime.now(UTC),
        )
    )


def last_closed(connection: sa.Connection) -> tuple[date, int] | None:
    row = connection.execute(
        sa.select(periods.c.day, periods.c.last_batch_id).order_by(periods.c.day.desc()).limit(1)
    ).first()
    return None if row is None else (_as_date(row.day), int(row.last_batch_id))


def _replace_days(connection: sa.Connection, first: date, last: date, priced: _Priced) -> None:
    for table in (customer_daily, supplier_daily):
        connection.execute(table.delete().where(table.c.day.between(first, last)))
    insert_rows(connection, customer_daily, priced.customers)
    insert_rows(connection, supplier_daily, priced.suppliers)


def _replace_adjustments(connection: sa.Connection, billed_day: date, rows: list[dict[str, Any]]) -> None:
    connection.execute(adjustments.delete().where(adjustments.c.billed_day == billed_day))
    insert_rows(connection, adjustments, rows)


def rollup_days(
    engine: sa.Engine, first_day: date, last_day: date, rates: Sequence[Rate], currency: str = "USD"
) -> RollupSummary:
    """Recompute the open days of first_day..last_day (inclusive) in one transaction; closed days are left
    as they are. The provisional adjustments (billed on the first open day) are recomputed too."""
    if last_day < first_day:
        raise GpuflowsError(f"rollup period ends ({last_day}) before it starts ({first_day})")
    now = datetime.now(UTC)
    with engine.begin() as connection:
        _begin_run(connection, "rollup", first_day, last_day)
        closed = last_closed(connection)
        lo = first_day if closed is None else max(first_day, closed[0] + ONE_DAY)
        priced = _Priced()
        if lo <= last_day:
            priced = price(
                day_usage(connection, lo, last_day),
                rates,
                currency,
                now,
                capacity_hours(connection, lo, last_day),
            )
            _replace_days(connection, lo, last_day, priced)
        if closed is not None:  # whatever the range: late usage must not wait for the first open day's run
            open_day = closed[0] + ONE_DAY
            late = late_usage(connection, closed[1], None, open_day)
            priced.adjustments = price_adjustments(late, open_day, rates, currency, now, final=False)
            _replace_adjustments(connection, open_day, priced.adjustments)
        summary = _summary(connection, first_day, last_day, lo, priced, currency)
        record(
            connection,
            "rollup",
            {
                "first_day": first_day,
                "last_day": last_day,
                "recomputed_days": summary.recomputed_days,
                "closed_days_skipped": summary.closed_days_skipped,
                "customer_cost": summary.customer_cost,
                "supplier_payout": summary.supplier_payout,
                "adjustment_rows": summary.adjustment_rows,
                "adjustments_cost": summary.adjustments_cost,
                "currency": currency,
            },
        )
    return summary


def close_through(
    engine: sa.Engine, through_day: date, rates: Sequence[Rate], currency: str = "USD"
) -> list[ClosedPeriod]:
    """Close every open day up to through_day, in order: a last recompute, its final adjustments (late usage
    of earlier closed days from batches since the previous close), and the batch mark. One transaction."""
    now = datetime.now(UTC)
    done: list[ClosedPeriod] = []
    with engine.begin() as connection:
        _begin_run(connection, "close", None, through_day)
        closed = last_closed(connection)
        if closed is None:
            earliest = connection.execute(sa.select(sa.func.min(usage_events.c.start_day))).scalar()
            if earliest is None:
                return done  # an empty ledger: nothing to close yet
            day = _as_date(earliest)
        else:
            day = closed[0] + ONE_DAY
        up_to = connection.execute(
            sa.select(sa.func.coalesce(sa.func.max(usage_events.c.batch_id), 0))
        ).scalar_one()
        crossing: dict[date, dict[UsageKey, int]] = defaultdict(dict)
        for key, micro in crossing_midnight(connection, day, through_day).items():
            crossing[key[0]][key] = micro
        while day <= through_day:
            usage = single_day_usage(connection, day, day)
            for key, micro in crossing.pop(day, {}).items():
                usage[key] += micro
            priced = price(usage, rates, currency, now, capacity_hours(connection, day, day))
            _replace_days(connection, day, day, priced)
            adjusted: list[dict[str, Any]] = []
            if closed is not None:
                late = late_usage(connection, closed[1], up_to, day)
                adjusted = price_adjustments(late, day, rates, currency, now, final=True)
            _replace_adjustments(connection, day, adjusted)
            connection.execute(periods.insert().values(day=day, closed_at=now, last_batch_id=up_to))
            record(
                connection,
                "close",
                {
                    "day": day,
                    "last_batch_id": up_to,
                    "customer_cost": _day_cost(priced.customers),
                    "adjustment_rows": len(adjusted),
                    "adjustments_cost": _day_cost(adjusted),
                    "currency": currency,
                },
            )
            done.append(
                ClosedPeriod(
                    day,
                    int(up_to),
                    _day_cost(priced.customers),
                    _day_cost(adjusted),
                )
            )
            closed = (day, int(up_to))
            day += ONE_DAY
    return done


def due_for_close(now: datetime, grace: timedelta) -> date:
    """The last day whose grace window has passed: its end + grace <= now."""
    return (now - grace).date() - ONE_DAY


def _summary(
    connection: sa.Connection, first: date, last: date, lo: date, priced: _Priced, currency: str
) -> RollupSummary:
    """What first..last bills, as its invoices and payout statements settle it (each month's cents decided
    once), whether its days were recomputed now or closed before."""
    months = statements_for(connection, first, last, currency)
    cost = sum((invoice.total for invoice, _ in months), Decimal("0.00"))
    payout = sum((paid.total for _, paid in months), Decimal("0.00"))
    usage = [line for invoice, _ in months for line in invoice.lines if line.corrects is None]
    late = [line for invoice, _ in months for line in invoice.lines if line.corrects is not None]
    return RollupSummary(
        first_day=first,
        last_day=last,
        recomputed_days=max(0, (last - lo).days + 1),
        closed_days_skipped=min((lo - first).days, (last - first).days + 1),
        customer_rows=len(priced.customers),
        supplier_rows=len(priced.suppliers),
        adjustment_rows=len(priced.adjustments),
        gpu_hours=_hours(sum(line.gpu_microseconds for line in usage)).quantize(MICRO, ROUND_HALF_UP),
        customer_cost=cost,
        supplier_payout=payout,
        margin=cost - payout,
        adjustments_cost=sum((line.amount for line in late), Decimal("0.00")),
        currency=currency,
    )


def _day_cost(rows: list[dict[str, Any]]) -> Decimal:
    """A closed day's exact cost, rounded once (for the close's report; invoices settle their own cents)."""
    exact = sum((exact_amount(r["gpu_microseconds"], r["customer_price"]) for r in rows), Fraction(0))
    return to_money(cents_half_up(exact))


# ------------------------------------------------------------------------------------------------ reading


def _rows(
    engine: sa.Engine, table: sa.Table, day: str, first: date, last: date, order: tuple[str, ...]
) -> list[dict[str, Any]]:
    query = sa.select(table).where(table.c[day].between(first, last)).order_by(*(table.c[o] for o in order))
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def customer_rows(engine: sa.Engine, first_day: date, last_day: date) -> list[dict[str, Any]]:
    return _rows(
        engine, customer_daily, "day", first_day, last_day, ("day", "customer", "project", "gpu_type")
    )


def supplier_rows(engine: sa.Engine, first_day: date, last_day: date) -> list[dict[str, Any]]:
    return _rows(engine, supplier_daily, "day", first_day, last_day, ("day", "supplier", "gpu_type"))


def adjustment_rows(engine: sa.Engine, first_day: date, last_day: date) -> list[dict[str, Any]]:
    order = ("billed_day", "customer", "usage_day", "project", "gpu_type", "supplier")
    return _rows(engine, adjustments, "billed_day", first_day, last_day, order)


def billed_total(engine: sa.Engine, first_day: date, last_day: date, currency: str = "USD") -> Decimal:
    """Everything billed on first_day..last_day (the days' usage plus adjustments billed on them): the sum of
    its monthly invoices, each the month's exact total rounded once."""
    return sum(
        (invoice.total for invoice, _ in statements_for(engine, first_day, last_day, currency)),
        Decimal("0.00"),
    )
