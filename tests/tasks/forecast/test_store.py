"""Stored forecasts: a later run reads back exactly what an earlier one forecast for each hour, and storing
the same hours again replaces them instead of duplicating (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa

from tasks.forecast.models import forecast_series
from tasks.forecast.store import forecasts_for, store_forecasts
from tasks.schema import usage_forecasts

FIRST = datetime(2026, 5, 20, tzinfo=UTC)


def test_store_then_read_back_and_store_again(engine: sa.Engine) -> None:
    history = np.tile(np.r_[np.zeros(12), np.full(12, 2.0)], 14)
    forecast = forecast_series("customer:acme", history, 24, horizon=24)
    assert store_forecasts(engine, [forecast], FIRST) == 24
    stored = forecasts_for(engine, "customer:acme", FIRST, FIRST + timedelta(hours=24))
    assert sorted(stored) == [FIRST + timedelta(hours=h) for h in range(24)]
    row = stored[FIRST + timedelta(hours=13)]
    assert abs(row.mean - float(forecast.forecast.mean[13])) < 1e-9
    assert row.lower99 <= row.mean <= row.upper99
    store_forecasts(engine, [forecast], FIRST)
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(usage_forecasts)).scalar_one() == 24
