"""Forecast-driven alerts: "on pace to exceed" a budget, and usage outside the 99 % band of the forecast
made for that hour. Each is recorded in `forecast_alerts`, claimed before it is sent: once per (kind,
scope, period), never again on re-runs; a failed send is recorded and retried by the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import sqlalchemy as sa

from tasks.alerts import Alert, AlertDeliveryError, Urgency
from tasks.billing.budgets import STALE_CLAIM, BudgetLine, claim_lock
from tasks.billing.ledger import as_utc
from tasks.forecast.store import forecasts_for
from tasks.schema import forecast_alerts


@dataclass(frozen=True, slots=True)
class Anomaly:
    customer: str
    hour: datetime
    observed: float
    expected: float
    lower99: float
    upper99: float


@dataclass(frozen=True, slots=True)
class PaceAlert:
    budget: BudgetLine
    month: date
    spent: Decimal
    projected: Decimal
    reached_on: date


@dataclass(frozen=True, slots=True)
class Decided:
    kind: str
    scope: str
    period: str
    status: str  # sent or failed


# ------------------------------------------------------------------------------------------------ detection


def find_anomalies(
    engine: sa.Engine, customer: str, observed: np.ndarray, start: datetime, first: datetime, end: datetime
) -> list[Anomaly]:
    """Hours in [first, end) whose observed GPU-hours lie outside the 99 % band stored for them."""
    stored = forecasts_for(engine, f"customer:{customer}", first, end)
    found = []
    for hour, row in sorted(stored.items()):
        index = int((hour - start) / timedelta(hours=1))
        if not 0 <= index < len(observed):
            continue
        value = float(observed[index])
        if value < row.lower99 - 1e-9 or value > row.upper99 + 1e-9:
            found.append(Anomaly(customer, hour, value, row.mean, row.lower99, row.upper99))
    return found


def pace(
    budget: BudgetLine, month: date, spent: Decimal, hourly_cost: np.ndarray, first_hour: datetime
) -> PaceAlert | None:
    """A warning when month-to-date spend plus the forecast cost to month end crosses the budget."""
    month_end = (month.replace(day=1) + timedelta(days=32)).replace(day=1)
    hours_left = max(
        0, int((datetime.combine(month_end, datetime.min.time(), UTC) - first_hour) / timedelta(hours=1))
    )
    cumulative = float(spent) + np.cumsum(hourly_cost[:hours_left])
    projected = Decimal(str(round(float(cumulative[-1]) if hours_left else float(spent), 2)))
    if spent >= budget.monthly_amount or projected < budget.monthly_amount:
        return None  # already over (the budget alerts said so) or not on pace
    crossing = int(np.argmax(cumulative >= float(budget.monthly_amount)))
    reached = (first_hour + timedelta(hours=crossing)).date()
    return PaceAlert(budget, month.replace(day=1), spent, projected, reached)


# ------------------------------------------------------------------------------------------------ sending


def send_once(
    engine: sa.Engine, kind: str, scope: str, period: str, alert: Alert, send: Callable[[Alert], Any]
) -> Decided | None:
    """Claim (kind, scope, period), send, record the outcome. None when it was already decided."""
    if not _claim(engine, kind, scope, period, alert.urgency, alert.body):
        return None
    try:
        send(alert)
        status = "sent"
    except AlertDeliveryError:
        status = "failed"
    with engine.begin() as connection:
        a = forecast_alerts.c
        connection.execute(
            forecast_alerts.update()
            .where(a.kind == kind, a.scope == scope, a.period == period)
            .values(status=status, recorded_at=datetime.now(UTC))
        )
    return Decided(kind, scope, period, status)


def _claim(engine: sa.Engine, kind: str, scope: str, period: str, urgency: Urgency, detail: str) -> bool:
    a = forecast_alerts.c
    now = datetime.now(UTC)
    with engine.begin() as connection:
        claim_lock(connection, f"{kind}:{scope}:{period}", forecast_alerts)
        row = connection.execute(
            sa.select(a.status, a.recorded_at).where(a.kind == kind, a.scope == scope, a.period == period)
        ).first()
        if row is not None:
            retry = row.status == "failed" or (
                row.status == "pending" and as_utc(row.recorded_at) < now - STALE_CLAIM
            )
            if not retry:
                return False
            connection.execute(
                forecast_alerts.update()
                .where(a.kind == kind, a.scope == scope, a.period == period)
                .values(status="pending", recorded_at=now)
            )
            return True
        connection.execute(
            forecast_alerts.insert().values(
                kind=kind,
                scope=scope,
                period=period,
                status="pending",
                urgency=urgency,
                detail=detail,
                recorded_at=now,
            )
        )
    return True


def anomaly_alert(anomaly: Anomaly) -> Alert:
    return Alert(
        "critical",
        f"Suspicious GPU usage: {anomaly.customer} at {anomaly.hour:%Y-%m-%d %H:00} UTC",
        f"{anomaly.customer} used {anomaly.observed:.2f} GPU-hours in the hour from "
        f"{anomaly.hour:%Y-%m-%d %H:00} UTC; the forecast expected {anomaly.expected:.2f} "
        f"(99 % band {anomaly.lower99:.2f} to {anomaly.upper99:.2f}).",
        customer=anomaly.customer,
    )


def pace_alert(p: PaceAlert, currency: str) -> Alert:
    return Alert(
        "warning",
        f"On pace to exceed the budget: {p.budget.scope} ({p.month:%Y-%m})",
        f"At the current rate your budget is reached on {p.reached_on:%Y-%m-%d}: {p.budget.scope} has spent "
        f"{p.spent} {currency} of {p.budget.monthly_amount} {currency} in {p.month:%B %Y}, and the forecast "
        f"projects {p.projected} {currency} by the end of the month.",
        customer=p.budget.customer,
    )


def recorded(engine: sa.Engine, kind: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(forecast_alerts).order_by(
        forecast_alerts.c.kind, forecast_alerts.c.scope, forecast_alerts.c.period
    )
    if kind is not None:
        query = query.where(forecast_alerts.c.kind == kind)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
