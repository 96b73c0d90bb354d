"""Invoice and payout lines: where money is rounded, once.

A line is what is billed: (customer, project, GPU type, month) on an invoice, (supplier, GPU type, month) on
a payout statement, as Stripe and Lago bill metered usage. Late usage billed in the month (an adjustment) is
a line of its own that names the day it corrects. A line's exact amount is the sum over its days of
gpu_microseconds x price / 3.6e9: a fraction, never rounded or divided early.

Cents are decided once per statement (a month, or the part of one that was asked for): its total is the
exact total rounded half up; each owner's share (a customer's or supplier's total) and each line is its exact
amount rounded down or up to a whole cent by largest remainder (Hamilton's method), so that lines add up to
their owner's total and owners to the statement's. No line moves by a cent or more and no residue leaks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from fractions import Fraction
from math import floor, lcm
from typing import Any, Literal

import sqlalchemy as sa

from tasks.billing.ledger import MICROSECONDS_PER_HOUR
from tasks.schema import adjustments, customer_daily, supplier_daily

MICRO_HOURS = int(MICROSECONDS_PER_HOUR)
LineKey = tuple[str, str, str, date | None]  # owner, project, GPU type, the day an adjustment corrects
Keyed = tuple[LineKey, int, Fraction]  # a stored row's line, microseconds and exact amount
HOUR_PLACES = Decimal("0.000001")


def exact_amount(gpu_microseconds: int, price: Decimal) -> Fraction:
    """GPU-microseconds x price per GPU-hour, exactly: the multiplication before the division."""
    numerator, denominator = price.as_integer_ratio()
    return Fraction(gpu_microseconds * numerator, denominator * MICRO_HOURS)


def cents_half_up(amount: Fraction) -> int:
    """Whole cents, half away from zero: 640.955 → 64096."""
    cents = amount * 100
    return floor(cents + Fraction(1, 2)) if cents >= 0 else -floor(-cents + Fraction(1, 2))


def apportion(target_cents: int, exacts: Sequence[Fraction]) -> list[int]:
    """Split target_cents over parts by largest remainder: each part gets its exact cents rounded down, and
    the cents still missing go to the largest remainders (ties to the earlier part). When target_cents is
    the exact sum rounded, every part ends within one cent of its exact amount."""
    return _largest_remainder(target_cents, *_over_one_denominator(exacts))


def _over_one_denominator(exacts: Sequence[Fraction]) -> tuple[list[int], int]:
    """The amounts as numerators over their least common denominator: a month's hundred thousand lines are
    summed and compared as integers (Fraction's arithmetic, a gcd per step, took seconds)."""
    denominator = lcm(*{e.denominator for e in exacts})
    return [e.numerator * (denominator // e.denominator) for e in exacts], denominator


def _largest_remainder(target_cents: int, numerators: Sequence[int], denominator: int) -> list[int]:
    """apportion() over numerators / denominator."""
    floors = [n * 100 // denominator for n in numerators]
    remainders = [n * 100 - f * denominator for n, f in zip(numerators, floors, strict=True)]
    missing = target_cents - sum(floors)
    if not 0 <= missing <= len(numerators):
        exact = Fraction(sum(numerators), denominator)
        raise ValueError(f"cannot apportion {target_cents} cents over parts summing to {exact}")
    for i in sorted(range(len(numerators)), key=lambda i: (-remainders[i], i))[:missing]:
        floors[i] += 1
    return floors


def to_money(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


@dataclass(frozen=True, slots=True)
class Line:
    month: date  # first day of the month the line is billed in
    owner: str  # the customer (invoice) or supplier (payout statement)
    project: str  # "" on payout lines
    gpu_type: str
    corrects: date | None  # an adjustment's usage day; None for the month's own usage
    gpu_microseconds: int
    exact: Fraction
    amount: Decimal = Decimal("0.00")  # decided by settle()
    capacity_gpu_hours: Decimal | None = None  # payout lines of the month's own usage, where declared
    idle_gpu_hours: Decimal | None = None

    @property
    def gpu_hours(self) -> Decimal:
        return (Decimal(self.gpu_microseconds) / MICROSECONDS_PER_HOUR).quantize(HOUR_PLACES)

    @property
    def description(self) -> str:
        return "usage" if self.corrects is None else f"adjustment: late usage of {self.corrects}"


@dataclass(frozen=True, slots=True)
class Statement:
    """One month's (or part month's) invoice lines for every customer, or payout lines for every supplier."""

    kind: Literal["invoice", "payout"]
    first_day: date
    last_day: date
    currency: str
    lines: tuple[Line, ...]
    exact_total: Fraction
    total: Decimal

    def owners(self) -> list[str]:
        return sorted({line.owner for line in self.lines})

    def lines_of(self, owner: str) -> list[Line]:
        return [line for line in self.lines if line.owner == owner]

    def total_of(self, owner: str) -> Decimal:
        return sum((line.amount for line in self.lines_of(owner)), Decimal("0.00"))


def settle(lines: Sequence[Line]) -> tuple[list[Line], Fraction, Decimal]:
    """Decide every line's cents: the total rounded half up once, apportioned to owners, then to lines."""
    numerators, denominator = _over_one_denominator([line.exact for line in lines])
    exact_total = Fraction(sum(numerators), denominator)
    total = cents_half_up(exact_total)
    owners: dict[str, list[int]] = defaultdict(list)
    for i, line in enumerate(lines):
        owners[line.owner].append(i)
    names = sorted(owners)
    owner_numerators = [sum(numerators[i] for i in owners[name]) for name in names]
    settled = list(lines)
    for name, cents in zip(names, _largest_remainder(total, owner_numerators, denominator), strict=True):
        members = owners[name]
        shares = _largest_remainder(cents, [numerators[i] for i in members], denominator)
        for i, line_cents in zip(members, shares, strict=True):
            settled[i] = replace(lines[i], amount=to_money(line_cents))
    return settled, exact_total, to_money(total)


def months_of(first_day: date, last_day: date) -> list[tuple[date, date]]:
    """The (part) months of first_day..last_day, each as its first and last day in the range."""
    parts, day = [], first_day
    while day <= last_day:
        following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        parts.append((day, min(last_day, date.fromordinal(following.toordinal() - 1))))
        day = following
    return parts


def _exact(row: Any, amount: str, price: str) -> tuple[int, Fraction]:
    """A stored row's microseconds and exact amount; rows from before revision 0008 carry neither, so their
    hours and stored (cent) amount stand."""
    if row.gpu_microseconds is None or row[price] is None:
        micro = int((Decimal(str(row.gpu_hours)) * MICROSECONDS_PER_HOUR).to_integral_value())
        return micro, Fraction(Decimal(str(row[amount])))
    return int(row.gpu_microseconds), exact_amount(int(row.gpu_microseconds), Decimal(str(row[price])))


def _group(keyed: Iterable[Keyed]) -> dict[LineKey, tuple[int, Fraction]]:
    grouped: dict[LineKey, tuple[int, Fraction]] = {}
    for key, micro, exact in keyed:
        had_micro, had_exact = grouped.get(key, (0, Fraction(0)))
        grouped[key] = (had_micro + micro, had_exact + exact)
    return grouped


def _dated(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def invoice(connection: sa.Connection, first_day: date, last_day: date, currency: str) -> Statement:
    """Customers' invoice lines for first_day..last_day, which lie in one month."""
    month = first_day.replace(day=1)
    c, a = customer_daily.c, adjustments.c
    keyed: list[Keyed] = []
    for row in connection.execute(sa.select(customer_daily).where(c.day.between(first_day, last_day))):
        micro, exact = _exact(row._mapping, "customer_cost", "customer_price")
        keyed.append(((row.customer, row.project, row.gpu_type, None), micro, exact))
    for row in connection.execute(sa.select(adjustments).where(a.billed_day.between(first_day, last_day))):
        micro, exact = _exact(row._mapping, "customer_cost", "customer_price")
        keyed.append(((row.customer, row.project, row.gpu_type, _dated(row.usage_day)), micro, exact))
    lines = [
        Line(month, owner, project, gpu, corrects, micro, exact)
        for (owner, project, gpu, corrects), (micro, exact) in sorted(
            _group(keyed).items(), key=lambda kv: (kv[0][:3], kv[0][3] or date.min)
        )
    ]
    settled, exact_total, total = settle(lines)
    return Statement("invoice", first_day, last_day, currency, tuple(settled), exact_total, total)


def payout(connection: sa.Connection, first_day: date, last_day: date, currency: str) -> Statement:
    """Suppliers' payout lines for first_day..last_day (in one month), with declared capacity and idle."""
    month = first_day.replace(day=1)
    s, a = supplier_daily.c, adjustments.c
    keyed: list[Keyed] = []
    capacity: dict[tuple[str, str], list[Decimal]] = {}
    for row in connection.execute(sa.select(supplier_daily).where(s.day.between(first_day, last_day))):
        micro, exact = _exact(row._mapping, "supplier_payout", "supplier_price")
        keyed.append(((row.supplier, "", row.gpu_type, None), micro, exact))
        if row.capacity_gpu_hours is not None:
            declared = capacity.setdefault((row.supplier, row.gpu_type), [Decimal(0), Decimal(0)])
            declared[0] += Decimal(str(row.capacity_gpu_hours))
            declared[1] += Decimal(str(row.idle_gpu_hours))
    for row in connection.execute(sa.select(adjustments).where(a.billed_day.between(first_day, last_day))):
        micro, exact = _exact(row._mapping, "supplier_payout", "supplier_price")
        keyed.append(((row.supplier, "", row.gpu_type, _dated(row.usage_day)), micro, exact))
    lines = []
    for (owner, project, gpu, corrects), (micro, exact) in sorted(
        _group(keyed).items(), key=lambda kv: (kv[0][:3], kv[0][3] or date.min)
    ):
        cap = capacity.get((owner, gpu)) if corrects is None else None
        lines.append(
            Line(
                month,
                owner,
                project,
                gpu,
                corrects,
                micro,
                exact,
                capacity_gpu_hours=None if cap is None else cap[0],
                idle_gpu_hours=None if cap is None else cap[1],
            )
        )
    settled, exact_total, total = settle(lines)
    return Statement("payout", first_day, last_day, currency, tuple(settled), exact_total, total)


def statements_for(
    engine_or_connection: sa.Engine | sa.Connection, first_day: date, last_day: date, currency: str
) -> list[tuple[Statement, Statement]]:
    """(invoice, payout statement) for each (part) month of first_day..last_day."""
    if isinstance(engine_or_connection, sa.Engine):
        with engine_or_connection.connect() as connection:
            return statements_for(connection, first_day, last_day, currency)
    return [
        (invoice(engine_or_connection, lo, hi, currency), payout(engine_or_connection, lo, hi, currency))
        for lo, hi in months_of(first_day, last_day)
    ]
