"""The forecast's planning and outlook helpers: which series are fitted and how far, blended prices, and the
horizon every report reads from the forecast itself."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np

from tasks.billing.rollup import Rate
from tasks.forecast.models import forecast_series
from tasks.forecast.outlook import blended_price, month_end, plan_jobs
from tasks.forecast.reports import CustomerOutlook, customer_markdown
from tasks.forecast.series import UsageSeries, WindowUsage

AS_OF = datetime(2026, 5, 20, 6, tzinfo=UTC)


def busy(hours: int = 14 * 24) -> np.ndarray:
    day = np.r_[np.zeros(8), np.full(10, 4.0), np.zeros(6)]
    return np.tile(day, hours // 24)


def test_month_end_is_the_next_first_of_the_month() -> None:
    assert month_end(AS_OF) == datetime(2026, 6, 1, tzinfo=UTC)
    assert month_end(datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)


def test_customers_reach_month_end_others_stop_at_the_horizon_and_zero_series_are_skipped() -> None:
    start = datetime(2026, 5, 6, 6, tzinfo=UTC)
    window = WindowUsage(
        [
            UsageSeries("customer", "acme", start, busy()),
            UsageSeries("supplier", "homelab", start, busy()),
            UsageSeries("customer", "idle", start, np.zeros(14 * 24)),
        ],
        {},
        {},
    )
    jobs = {j.key: j for j in plan_jobs(window, AS_OF, horizon=24)}
    assert set(jobs) == {"customer:acme", "supplier:homelab"}
    hours_to_june = (datetime(2026, 6, 1, tzinfo=UTC) - AS_OF) // (
        datetime(2026, 1, 1, 1) - datetime(2026, 1, 1)
    )
    assert jobs["customer:acme"].horizon + jobs["customer:acme"].extra_horizon == hours_to_june
    assert jobs["supplier:homelab"].extra_horizon == 0


def test_a_declared_outage_reaches_every_series_at_its_own_hours() -> None:
    """The operator declares one outage; each series (whatever its first hour) leaves out the hours it
    touched, and the forecast fills them for fitting."""
    start = datetime(2026, 5, 6, 6, tzinfo=UTC)
    window = WindowUsage(
        [
            UsageSeries("customer", "acme", start, busy()),
            UsageSeries("total", "all", start + timedelta(hours=24), busy(13 * 24)),
        ],
        {},
        {},
    )
    down = (datetime(2026, 5, 10, 6, 30, tzinfo=UTC), datetime(2026, 5, 10, 12, tzinfo=UTC))
    jobs = {j.key: j for j in plan_jobs(window, AS_OF, horizon=24, outages=[down])}
    assert jobs["customer:acme"].outages == ((96, 6),)
    assert jobs["total:all"].outages == ((72, 6),)
    fc = forecast_series("acme", busy(), 24, 24, outages=jobs["customer:acme"].outages)
    assert fc.cleaned.outages == [(96, 6)] and not fc.cleaned.observed[96:102].any()


def test_blended_price_weights_by_the_owners_gpu_mix() -> None:
    rates = [
        Rate("a100", Decimal("1.40"), Decimal("0.98"), date(2000, 1, 1), None),
        Rate("h100", Decimal("2.70"), Decimal("1.89"), date(2000, 1, 1), None),
    ]
    mix = {("acme", "a100"): 3.0, ("acme", "h100"): 1.0, ("other", "h100"): 9.0}
    assert blended_price(mix, "acme", rates, AS_OF, payout=False) == Decimal("1.725000")
    assert blended_price(mix, "acme", rates, AS_OF, payout=True) == Decimal("1.207500")
    assert blended_price(mix, "nobody", rates, AS_OF, payout=False) == Decimal(0)


def test_reports_read_the_horizon_from_the_forecast() -> None:
    forecast = forecast_series("customer:acme", busy(), 24, horizon=24, extra_horizon=100)
    assert forecast.horizon == 24 and len(forecast.forecast.mean) == 124
    assert forecast.total() == float(forecast.forecast.mean[:24].sum())
    assert forecast.total(80, "lower") <= forecast.total() <= forecast.total(80, "upper")
    outlook = CustomerOutlook(
        "acme", AS_OF, busy(), forecast, AS_OF, Decimal("1"), Decimal("5"), Decimal("9"), None, "USD"
    )
    text = customer_markdown(outlook)
    assert f"Next 24 h: **{forecast.total():.2f} GPU-hours**" in text
