"""Stored forecasts: each run's hourly mean and 80/95/99 % bounds per series, upserted by (series, hour),
so the anomaly check of a later run compares what happened with what was forecast for that hour."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tasks.billing.ledger import as_utc
from tasks.forecast.models import SeriesForecast
from tasks.schema import usage_forecasts


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
