"""Many series at once: each forecast on its own (tasks/forecast/models.py), on every core."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from tasks.forecast.models import COMBINATION, SeriesForecast, forecast_series


@dataclass(frozen=True, slots=True)
class SeriesJob:
    key: str
    values: np.ndarray
    season: int
    horizon: int
    extra_horizon: int = 0
    method: str = COMBINATION
    outages: tuple[tuple[int, int], ...] = ()  # declared platform outages: (first step, length)


def _run_batch(jobs: list[SeriesJob]) -> list[SeriesForecast]:
    return [
        forecast_series(
            j.key,
            j.values,
            j.season,
            j.horizon,
            extra_horizon=j.extra_horizon,
            method=j.method,
            outages=j.outages,
        )  # fmt: skip
        for j in jobs
    ]


def forecast_many(jobs: list[SeriesJob], workers: int | None = None) -> list[SeriesForecast]:
    """Every job, in order, on `workers` processes (default: every core), in batches: one process start and
    one statsmodels import per worker, not per series."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1 or len(jobs) < 4:
        return _run_batch(jobs)
    # Interleaved batches balance long and short series; spawn, because the caller may hold threads.
    batches = [jobs[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_run_batch, batches))
    by_key = {f.key: f for batch in results for f in batch}
    return [by_key[j.key] for j in jobs]
