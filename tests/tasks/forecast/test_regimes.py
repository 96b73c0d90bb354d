"""Idle is data, an outage is an event (issue 15): a cluster idle for the last day is forecast idle, one that
woke up is forecast busy, one burst (or a bursty customer's usual burst) is not a tenant, and a declared
outage is filled and never scored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tasks.forecast.gaps import clean, outage_steps
from tasks.forecast.models import backtest, forecast_series
from tasks.forecast.regimes import WOKE_MIN, current_regime

rng = np.random.default_rng(7)


def busy_days(days: int, level: float = 8.0) -> np.ndarray:
    """A busy cluster: a daily cycle around `level` GPUs with noise."""
    hours = np.arange(days * 24)
    return np.clip(level + 3 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 0.5, hours.size), 0.5, None)


def test_a_cluster_idle_for_the_last_day_is_forecast_idle() -> None:
    y = np.r_[busy_days(12), np.zeros(30)]  # the tenant left 30 hours ago
    fc = forecast_series("vc-left", y, season=24, horizon=24)
    assert (fc.forecast.mean == 0).all()
    assert "idle for the last 30 h" in fc.reason
    assert fc.forecast.upper[95].max() > 0, "the chance it wakes up stays in the upper bound"


def test_a_quiet_night_is_not_idle() -> None:
    y = busy_days(12)
    y[-10:] = 0  # ten quiet hours: less than a day
    assert current_regime(y, np.ones(y.size, bool), 24).kind == "steady"
    assert forecast_series("vc-night", y, season=24, horizon=24).forecast.mean.sum() > 24


def test_a_cluster_that_woke_up_is_forecast_busy() -> None:
    y = np.r_[busy_days(6), np.zeros(5 * 24), np.full(6, 10.0) + rng.normal(0, 0.3, 6)]
    fc = forecast_series("vc-woke", y, season=24, horizon=24)
    assert "woke up 6 h ago" in fc.reason
    assert fc.forecast.mean == pytest.approx(np.full(24, y[-6:].mean()))
    assert (fc.forecast.lower[80] < fc.forecast.mean).all() and (
        fc.forecast.upper[80] > fc.forecast.mean
    ).all()


def test_one_burst_after_an_idle_spell_is_not_a_new_tenant() -> None:
    y = np.r_[busy_days(6), np.zeros(5 * 24), np.full(WOKE_MIN - 1, 4.0)]
    assert current_regime(y, np.ones(y.size, bool), 24).kind == "steady"
    assert "woke" not in forecast_series("vc-burst", y, season=24, horizon=24).reason


def nightly_bursts(days: int) -> np.ndarray:
    """A customer who runs a few hours a night: 2 to 5 busy hours from 22:00, idle the rest of the day."""
    y = np.zeros(days * 24)
    for day in range(days):
        y[day * 24 - 2 : day * 24 + int(rng.integers(0, 4))] = rng.uniform(0.2, 0.8)
    return y


def test_a_bursty_series_waking_for_its_usual_burst_is_not_a_new_tenant() -> None:
    """A nightly customer who skipped a night and a half and is back for its burst: its bursts always end
    within hours, so the wake is one of them, not a tenant to forecast busy all day (a base model in the
    GenAI trace was forecast at its burst's level for a whole day: 3.3 times seasonal naive's error)."""
    burst = np.full(WOKE_MIN, 0.5)
    y = np.r_[nightly_bursts(10)[2:], np.zeros(36), burst]
    assert current_regime(y, np.ones(y.size, bool), 24).kind == "steady"
    assert "woke" not in forecast_series("customer-nightly", y, season=24, horizon=24).reason
    # Outlasting every earlier burst, the same wake is a tenant again.
    longer = np.r_[y, np.full(8, 0.5)]
    assert current_regime(longer, np.ones(longer.size, bool), 24).kind == "woke"


def test_unobserved_hours_are_neither_idle_nor_busy() -> None:
    """A day missing at the end (no rows) is a gap, not an idle cluster: the regime is read from what was
    observed before it."""
    y = np.r_[busy_days(10), np.full(30, np.nan)]
    cleaned = clean(y, 24)
    assert current_regime(cleaned.values, cleaned.observed, 24).kind == "steady"
    assert forecast_series("vc-silent", y, season=24, horizon=24).forecast.mean.sum() > 24


def test_a_declared_outage_is_filled_and_not_scored() -> None:
    """A perfectly periodic cluster whose last backtest day holds six zero hours of a platform outage:
    declared, the hours are filled from the profile for fitting and the backtest scores seasonal naive
    perfect on the rest; undeclared, they are data and count against it."""
    y = np.tile(5.0 + np.arange(24), 6)
    y[130:136] = 0.0
    declared = clean(y, 24, [(130, 6)])
    assert not declared.observed[130:136].any() and (declared.values[130:136] == y[106:112]).all()
    result, _ = backtest(declared, season=24, horizon=24, origins=2, models=("seasonal_naive",))
    assert result.mase["seasonal_naive"] == pytest.approx(0.0, abs=1e-9)
    undeclared, _ = backtest(clean(y, 24), season=24, horizon=24, origins=2, models=("seasonal_naive",))
    assert undeclared.mase["seasonal_naive"] > 0.1


def test_declared_outage_windows_become_the_hours_they_touch() -> None:
    first = datetime(2026, 5, 1, tzinfo=UTC)
    windows = [
        (first + timedelta(hours=3, minutes=30), first + timedelta(hours=5, minutes=10)),  # 3, 4, 5
        (first - timedelta(hours=10), first + timedelta(hours=1)),  # clipped at the start
        (first + timedelta(hours=40), first + timedelta(hours=50)),  # clipped at the end
        (first + timedelta(days=9), first + timedelta(days=10)),  # outside: dropped
    ]
    assert outage_steps(windows, first, 48) == ((3, 3), (0, 1), (40, 8))
