"""Budget alerts, edge-triggered as Alertmanager and OpenMeter do: one per (budget, threshold, month).

Month-to-date spend is what the rollup billed in the month (days plus adjustments billed in it). When a
budget crosses thresholds, only the highest crossed one is sent; lower ones not yet sent are recorded as
suppressed. Every decision is a row in `budget_alerts`, claimed before sending (primary key: customer,
project, month, threshold), so re-runs and concurrent runs never send twice. A send that fails is recorded
as failed and retried by the next run; if a process dies between sending and recording, the next run
re-sends once its claim is 15 minutes old (at-least-once, never silent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from tasks.alerts import Alert, AlertDeliveryError, Urgency
from tasks.billing.ledger import as_utc
from tasks.billing.rollup import CENT
from tasks.schema import adjustments, budget_alerts, customer_daily

# The project of a whole-customer budget's records: empty, which no project can be (the ledger requires a
# project, the Budgets block refuses an empty one), so a project literally named "*" has its own records.
WHOLE_CUSTOMER = ""
STALE_CLAIM = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class BudgetLine:
    customer: str
    project: str | None
    monthly_amount: Decimal

    @property
    def scope(self) -> str:
        return self.customer if self.project is None else f"{self.customer}/{self.project}"


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    budget: BudgetLine
    month: date
    threshold: int
    spend: Decimal
    status: str  # sent, suppressed, failed
    urgency: Urgency


def urgency_for(threshold: int) -> Urgency:
    return "critical" if threshold >= 100 else "warning" if threshold >= 80 else "info"


def month_bounds(day: date) -> tuple[date, date]:
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following - timedelta(days=1)


def claim_lock(connection: sa.Connection, key: str, table: sa.Table) -> None:
    """One claimer of `key` at a time: a transaction-scoped advisory lock on PostgreSQL; on SQLite, a
    no-op write that takes the database's write lock before anything is read."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
    else:
        connection.execute(table.delete().where(sa.false()))


def month_spend(connection: sa.Connection, budget: BudgetLine, month: date) -> Decimal:
    first, last = month_bounds(month)
    total = Decimal(0)
    for table, day_column in (
        (customer_daily, customer_daily.c.day),
        (adjustments, adjustments.c.billed_day),
    ):
        query = sa.select(sa.func.coalesce(sa.func.sum(table.c.customer_cost), 0)).where(
            day_column.between(first, last), table.c.customer == budget.customer
        )
        if budget.project is not None:
            query = query.where(table.c.project == budget.project)
        total += Decimal(str(connection.execute(query).scalar_one()))
    return total.quantize(CENT)


def check_budgets(
    engine: sa.Engine,
    budgets: Sequence[BudgetLine],
    thresholds: Sequence[int],
    month: date,
    currency: str,
    send: Callable[[Alert], Any],
) -> list[BudgetAlert]:
    """Send what is due for `month`; returns the alerts decided in this call (sent, suppressed, failed).
    Raises AlertDeliveryError after recording, when any send failed."""
    month = month.replace(day=1)
    decided: list[BudgetAlert] = []
    failures: list[str] = []
    for budget in budgets:
        claimed = _claim(engine, budget, thresholds, month, currency)
        if claimed is None:
            continue
        threshold, spend, suppressed = claimed
        decided += [BudgetAlert(budget, month, t, spend, "suppressed", urgency_for(t)) for t in suppressed]
        urgency = urgency_for(threshold)
        alert = Alert(
            urgency,
            f"Budget {threshold}% reached: {budget.scope} ({month:%Y-%m})",
            f"{budget.scope} has spent {spend} {currency} of its {budget.monthly_amount} {currency} "
            f"budget for {month:%B %Y} ({_percent(spend, budget.monthly_amount)} %).",
            customer=budget.customer,
        )
        try:
            send(alert)
            status = "sent"
        except AlertDeliveryError as exc:
            status = "failed"
            failures.append(f"{budget.scope} {threshold}%: {exc}")
        _record(engine, budget, month, threshold, status)
        decided.append(BudgetAlert(budget, month, threshold, spend, status, urgency))
    if failures:
        raise AlertDeliveryError(
            "budget alerts not delivered (they are retried by the next run): " + "; ".join(failures)
        )
    return decided


def _percent(spend: Decimal, budget: Decimal) -> Decimal:
    return (spend * 100 / budget).quantize(Decimal("0.1"))


def _claim(
    engine: sa.Engine, budget: BudgetLine, thresholds: Sequence[int], month: date, currency: str
) -> tuple[int, Decimal, list[int]] | None:
    """In one transaction: the highest crossed threshold not yet sent or suppressed, claimed as pending;
    lower unsent ones recorded as suppressed. None when nothing is due."""
    a = budget_alerts.c
    project = budget.project or WHOLE_CUSTOMER
    with engine.begin() as connection:
        claim_lock(connection, f"budget:{budget.customer}:{project}:{month}", budget_alerts)
        spend = month_spend(connection, budget, month)
        crossed = [t for t in thresholds if spend * 100 >= budget.monthly_amount * t]
        if not crossed:
            return None
        stale = datetime.now(UTC) - STALE_CLAIM
        known = {
            # A claim whose run died before recording the outcome is retried, once it is stale.
            row.threshold: "failed"
            if row.status == "pending" and as_utc(row.recorded_at) < stale
            else row.status
            for row in connection.execute(
                sa.select(a.threshold, a.status, a.recorded_at).where(
                    a.customer == budget.customer, a.project == project, a.month == month
                )
            )
        }
        top = crossed[-1]
        if known.get(top) in ("sent", "suppressed", "pending") or any(
            t > top and s in ("sent", "pending") for t, s in known.items()
        ):
            return None
        now = datetime.now(UTC)
        suppressed = [t for t in crossed[:-1] if known.get(t) not in ("sent", "suppressed")]
        for threshold, status in [(t, "suppressed") for t in suppressed] + [(top, "pending")]:
            values = {
                "status": status,
                "urgency": urgency_for(threshold),
                "spend": spend,
                "budget": budget.monthly_amount,
                "currency": currency,
                "detail": f"{_percent(spend, budget.monthly_amount)} % of the budget",
                "recorded_at": now,
            }
            if threshold in known:
                connection.execute(
                    budget_alerts.update()
                    .where(
                        a.customer == budget.customer,
                        a.project == project,
                        a.month == month,
                        a.threshold == threshold,
                    )
                    .values(**values)
                )
            else:
                connection.execute(
                    budget_alerts.insert().values(
                        customer=budget.customer, project=project, month=month, threshold=threshold, **values
                    )
                )
    return top, spend, suppressed


def _record(engine: sa.Engine, budget: BudgetLine, month: date, threshold: int, status: str) -> None:
    a = budget_alerts.c
    with engine.begin() as connection:
        connection.execute(
            budget_alerts.update()
            .where(
                a.customer == budget.customer,
                a.project == (budget.project or WHOLE_CUSTOMER),
                a.month == month,
                a.threshold == threshold,
            )
            .values(status=status, recorded_at=datetime.now(UTC))
        )


def recorded_alerts(engine: sa.Engine, month: date | None = None) -> list[dict[str, Any]]:
    query = sa.select(budget_alerts).order_by(
        budget_alerts.c.month, budget_alerts.c.customer, budget_alerts.c.project, budget_alerts.c.threshold
    )
    if month is not None:
        query = query.where(budget_alerts.c.month == month.replace(day=1))
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
