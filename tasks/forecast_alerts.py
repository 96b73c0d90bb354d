"""Forecast-driven alerts: "on pace to exceed" a budget, and usage outside the 99 % band of the forecast
made for that hour. Each is recorded in `forecast_alerts`, claimed before it is sent: once per (kind,
scope, period), never again on re-runs; a failed send is recorded and retried by the next run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import sqlalchemy as sa

from tasks.alerts import Alert, AlertDeliveryError, Urgency
from tasks.budgets import STALE_CLAIM, BudgetLine, claim_lock
from tasks.forecasting import SeriesForecast
from tasks.ledger import as_utc, metadata

usage_forecasts = sa.Table(
    "usage_forecasts",
    metadata,
    sa.Column("series", sa.String(260), primary_key=True),
    sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("model", sa.String(40), nullable=False),
    sa.Column("mean", sa.Float, nullable=False),
    sa.Column("lower80", sa.Float, nullable=False),
    sa.Column("upper80", sa.Float, nullable=False),
    sa.Column("lower95", sa.Float, nullable=False),
    sa.Column("upper95", sa.Float, nullable=False),
    sa.Column("lower99", sa.Float, nullable=False),
    sa.Column("upper99", sa.Float, nullable=False),
    sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
)
forecast_alerts = sa.Table(
    "forecast_alerts",
    metadata,
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("scope", sa.String(260), primary_key=True),
    sa.Column("period", sa.String(40), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("urgency", sa.String(20), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)


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


# ------------------------------------------------------------------------------------------------ storage


def store_forecasts(engine: sa.Engine, forecasts: Sequence[SeriesForecast], first_hour: datetime) -> int:
    """Upsert each series' hourly forecast from first_hour on: the latest forecast made for an hour wins."""
    now = datetime.now(UTC)
    rows = []
    for f in forecasts:
        fc = f.forecast
        for i in range(len(fc.mean)):
            rows.append(
                {
                    "series": f.key,
                    "hour": first_hour + timedelta(hours=i),
                    "model": f.model,
                    "mean": float(fc.mean[i]),
                    **{f"lower{lv}": float(fc.lower[lv][i]) for lv in (80, 95, 99)},
                    **{f"upper{lv}": float(fc.upper[lv][i]) for lv in (80, 95, 99)},
                    "made_at": now,
                }
            )
    if not rows:
        return 0
    with engine.begin() as connection:
        insert: Any
        if connection.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(usage_forecasts)
        updated = {c: statement.excluded[c] for c in rows[0] if c not in ("series", "hour")}
        for start in range(0, len(rows), 5000):
            connection.execute(
                statement.on_conflict_do_update(index_elements=["series", "hour"], set_=updated),
                rows[start : start + 5000],
            )
    return len(rows)


def forecasts_for(engine: sa.Engine, series: str, first: datetime, end: datetime) -> dict[datetime, Any]:
    f = usage_forecasts.c
    query = sa.select(usage_forecasts).where(f.series == series, f.hour >= first, f.hour < end)
    with engine.connect() as connection:
        return {as_utc(row.hour): row for row in connection.execute(query)}


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
    )


def pace_alert(p: PaceAlert, currency: str) -> Alert:
    return Alert(
        "warning",
        f"On pace to exceed the budget: {p.budget.scope} ({p.month:%Y-%m})",
        f"At the current rate your budget is reached on {p.reached_on:%Y-%m-%d}: {p.budget.scope} has spent "
        f"{p.spent} {currency} of {p.budget.monthly_amount} {currency} in {p.month:%B %Y}, and the forecast "
        f"projects {p.projected} {currency} by the end of the month.",
    )


def recorded(engine: sa.Engine, kind: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(forecast_alerts).order_by(
        forecast_alerts.c.kind, forecast_alerts.c.scope, forecast_alerts.c.period
    )
    if kind is not None:
        query = query.where(forecast_alerts.c.kind == kind)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
