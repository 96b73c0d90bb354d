"""The steps of the usage forecast between the ledger and the reports: which series to fit and how far,
what each customer and supplier is told, and which alerts are due. Plain functions; flows/usage_forecast.py
wires them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import sqlalchemy as sa

from tasks.alerts import Alert
from tasks.billing.budgets import BudgetLine, month_spend
from tasks.billing.capacity import capacity_between
from tasks.billing.rollup import CENT, Rate, find_rate
from tasks.forecast.alerts import Decided, anomaly_alert, find_anomalies, pace, pace_alert, send_once
from tasks.forecast.batch import SeriesJob
from tasks.forecast.gaps import outage_steps
from tasks.forecast.models import COMBINATION, SeriesForecast
from tasks.forecast.reports import CustomerOutlook, SupplierOutlook
from tasks.forecast.series import UsageSeries, WindowUsage


@dataclass(frozen=True, slots=True)
class ForecastSummary:
    as_of: datetime
    horizon_hours: int
    series: int
    models: dict[str, int]  # model (or combination, or fallback) → how many series
    fallbacks: int
    anomalies: int
    pace_alerts: int
    customer_reports: int
    supplier_reports: int
    reports_delivered: int = 0  # weekly reports emailed this run


def month_end(as_of: datetime) -> datetime:
    first = as_of.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def plan_jobs(
    window: WindowUsage,
    as_of: datetime,
    horizon: int,
    method: str = COMBINATION,
    outages: Sequence[tuple[datetime, datetime]] = (),
) -> list[SeriesJob]:
    """Hourly series with a daily season; customers' forecasts reach the end of the month (for the
    month-end projection), the others stop at the horizon. All-zero series are not fitted. Declared platform
    outages ((start, end), UTC) are filled for fitting and never scored; every other zero is data."""
    to_month_end = int((month_end(as_of) - as_of) / timedelta(hours=1))
    return [
        SeriesJob(
            s.key,
            s.gpu_hours,
            season=24,
            horizon=horizon,
            extra_horizon=max(0, to_month_end - horizon) if s.dimension == "customer" else 0,
            method=method,
            outages=outage_steps(outages, s.start, len(s.gpu_hours)),
        )
        for s in window.series
        if s.gpu_hours.any()
    ]


def blended_price(
    mix: dict[tuple[str, str], float], owner: str, rates: Sequence[Rate], as_of: datetime, payout: bool
) -> Decimal:
    """Price per GPU-hour of an owner, weighted by its GPU types' share of its recent usage."""
    own = {gpu: hours for (who, gpu), hours in mix.items() if who == owner and hours > 0}
    total = sum(own.values())
    if not total:
        return Decimal(0)
    price = Decimal(0)
    for gpu, hours in own.items():
        rate = find_rate(rates, gpu, as_of.date())
        price += (rate.supplier_payout if payout else rate.customer_price) * Decimal(str(hours / total))
    return price.quantize(Decimal("0.000001"))


def customer_outlooks(
    engine: sa.Engine,
    window: WindowUsage,
    forecasts: dict[str, SeriesForecast],
    rates: Sequence[Rate],
    as_of: datetime,
    budgets: Sequence[BudgetLine],
    currency: str,
) -> list[CustomerOutlook]:
    whole_budgets = {b.customer: b.monthly_amount for b in budgets if b.project is None}
    outlooks = []
    with engine.connect() as connection:
        for series in window.series:
            if series.dimension != "customer" or series.key not in forecasts:
                continue
            forecast = forecasts[series.key]
            price = blended_price(window.customer_gpu_mix, series.owner, rates, as_of, payout=False)
            spent = month_spend(connection, BudgetLine(series.owner, None, Decimal(1)), as_of.date())
            hours_left = int((month_end(as_of) - as_of) / timedelta(hours=1))
            rest = Decimal(str(float(forecast.forecast.mean[:hours_left].sum()))) * price
            outlooks.append(
                CustomerOutlook(
                    series.owner,
                    series.start,
                    series.gpu_hours,
                    forecast,
                    as_of,
                    price,
                    spent,
                    (spent + rest).quantize(CENT),
                    whole_budgets.get(series.owner),
                    currency,
                )
            )
    return outlooks


def supplier_outlooks(
    engine: sa.Engine,
    window: WindowUsage,
    forecasts: dict[str, SeriesForecast],
    rates: Sequence[Rate],
    as_of: datetime,
    currency: str,
) -> list[SupplierOutlook]:
    outlooks = []
    first = as_of - timedelta(hours=len(window.series[0].gpu_hours)) if window.series else as_of
    with engine.connect() as connection:
        capacity = capacity_between(connection, first, as_of)
    for series in window.series:
        if series.dimension != "supplier" or series.key not in forecasts:
            continue
        cap = capacity.get(series.owner)
        outlooks.append(
            SupplierOutlook(
                series.owner,
                len(series.gpu_hours),
                float(series.gpu_hours.sum()),
                None if cap is None else float(cap),
                forecasts[series.key],
                as_of,
                blended_price(window.supplier_gpu_mix, series.owner, rates, as_of, payout=True),
                currency,
            )
        )
    return outlooks


def alert_anomalies(
    engine: sa.Engine,
    window: WindowUsage,
    as_of: datetime,
    send: Callable[[Alert], Any],
    lookback_hours: int = 24,
) -> list[Decided]:
    """Critical alerts for customer hours of the last day outside the 99 % band forecast for them."""
    decided = []
    for series in _customers(window.series):
        for anomaly in find_anomalies(
            engine,
            series.owner,
            series.gpu_hours,
            series.start,
            as_of - timedelta(hours=lookback_hours),
            as_of,
        ):
            outcome = send_once(
                engine, "anomaly", series.key, anomaly.hour.isoformat(), anomaly_alert(anomaly), send
            )
            if outcome is not None:
                decided.append(outcome)
    return decided


def alert_pace(
    engine: sa.Engine,
    outlooks: Sequence[CustomerOutlook],
    budgets: Sequence[BudgetLine],
    as_of: datetime,
    send: Callable[[Alert], Any],
) -> list[Decided]:
    """Warnings for whole-customer budgets the forecast says will be crossed this month."""
    decided = []
    by_customer = {o.customer: o for o in outlooks}
    for budget in budgets:
        outlook = by_customer.get(budget.customer)
        if budget.project is not None or outlook is None:
            continue  # project budgets: the forecast is per customer
        hourly_cost = outlook.forecast.forecast.mean * float(outlook.price_per_gpu_hour)
        due = pace(budget, as_of.date(), outlook.month_to_date, np.asarray(hourly_cost), as_of)
        if due is None:
            continue
        outcome = send_once(
            engine, "pace", budget.scope, f"{due.month:%Y-%m}", pace_alert(due, outlook.currency), send
        )
        if outcome is not None:
            decided.append(outcome)
    return decided


def _customers(series: Sequence[UsageSeries]) -> list[UsageSeries]:
    return [s for s in series if s.dimension == "customer"]
