"""Hourly and daily GPU-hour series from the ledger, per customer, per supplier, per GPU type and in total.

An event's GPU-seconds are spread over the hours it covers (an event over an hour boundary counts in both),
so a series' sum equals the ledger's GPU-hours in the window exactly (up to float rounding).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa

from tasks.billing.ledger import as_utc
from tasks.schema import over_midnight, single_day, usage_events

DIMENSIONS = ("customer", "supplier", "gpu_type", "total")


@dataclass(frozen=True, slots=True)
class UsageSeries:
    dimension: str  # customer, supplier, gpu_type or total
    owner: str  # the customer, supplier or GPU type ("all" for the total)
    start: datetime  # the first hour
    gpu_hours: np.ndarray  # one value per hour

    @property
    def key(self) -> str:
        return f"{self.dimension}:{self.owner}"

    def daily(self) -> np.ndarray:
        whole = len(self.gpu_hours) // 24 * 24
        return self.gpu_hours[len(self.gpu_hours) - whole :].reshape(-1, 24).sum(axis=1)


@dataclass(frozen=True, slots=True)
class WindowUsage:
    series: list[UsageSeries]
    # (customer, gpu_type) → GPU-hours in the window: what a blended customer price is weighted by
    customer_gpu_mix: dict[tuple[str, str], float]
    supplier_gpu_mix: dict[tuple[str, str], float]


def window_events(first_hour: datetime, end_hour: datetime) -> sa.CompoundSelect:
    """The events that overlap [first_hour, end_hour), single-day ones and those over midnight apart, each
    through its own index (tasks/schema.single_day, over_midnight)."""
    e = usage_events.c
    first_day, last_day = first_hour.date(), (end_hour - timedelta(microseconds=1)).date()
    columns = (e.customer, e.supplier, e.gpu_type, e.start_at, e.end_at, e.gpu_count)
    overlaps = (e.start_at < end_hour, e.end_at > first_hour)
    return sa.union_all(
        sa.select(*columns).where(*single_day(first_day, last_day), *overlaps),
        sa.select(*columns).where(*over_midnight(first_day, last_day), *overlaps),
    )


def hourly_series(engine: sa.Engine, first_hour: datetime, end_hour: datetime) -> WindowUsage:
    """Series over [first_hour, end_hour) (whole UTC hours) for every owner with usage in the window."""
    first_hour, end_hour = floor_hour(first_hour), floor_hour(end_hour)
    hours = int((end_hour - first_hour) / timedelta(hours=1))
    if hours <= 0:
        raise ValueError(f"empty window: {first_hour} .. {end_hour}")
    query = window_events(first_hour, end_hour)
    bins: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(hours))
    customer_mix: dict[tuple[str, str], float] = defaultdict(float)
    supplier_mix: dict[tuple[str, str], float] = defaultdict(float)
    origin = first_hour.timestamp()
    with engine.connect() as connection:
        for customer, supplier, gpu_type, start, end, count in connection.execute(query):
            s = max(as_utc(start).timestamp(), origin) - origin
            t = min(as_utc(end).timestamp(), origin + hours * 3600) - origin
            gpus = float(count)
            spread = _spread(s, t, gpus)
            total = gpus * (t - s) / 3600
            customer_mix[(customer, gpu_type)] += total
            supplier_mix[(supplier, gpu_type)] += total
            for key in (
                ("customer", customer),
                ("supplier", supplier),
                ("gpu_type", gpu_type),
                ("total", "all"),
            ):
                target = bins[key]
                for index, value in spread:
                    target[index] += value
    series = [
        UsageSeries(dimension, owner, first_hour, values) for (dimension, owner), values in bins.items()
    ]
    series.sort(key=lambda s: (DIMENSIONS.index(s.dimension), s.owner))
    return WindowUsage(series, dict(customer_mix), dict(supplier_mix))


def _spread(s: float, t: float, gpus: float) -> list[tuple[int, float]]:
    """GPU-hours of [s, t) (seconds from the window start) per hour index."""
    pieces = []
    hour = int(s // 3600)
    while s < t:
        boundary = (hour + 1) * 3600
        piece_end = min(t, boundary)
        pieces.append((hour, gpus * (piece_end - s) / 3600))
        s, hour = piece_end, hour + 1
    return pieces


def floor_hour(value: datetime | None = None) -> datetime:
    """The UTC hour `value` falls in (default: now)."""
    return as_utc(value or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
