"""Gaps in a usage series: what was not observed is filled for fitting and never scored; what was observed,
zeros included, is data. An hour is unobserved when its row is missing or the platform was down (declared by
the operator, or shown by every series of the platform at zero at once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

MIN_OUTAGE = 6  # steps every series must be quiet together before the platform counts as down


@dataclass(frozen=True, slots=True)
class Cleaned:
    values: np.ndarray  # gaps filled for fitting
    observed: np.ndarray  # False where missing or in an outage: never scored
    outages: list[tuple[int, int]]  # (first index, length) of the declared outages: filled, never scored
    missing: int


def seasonal_profile(values: np.ndarray, usable: np.ndarray, season: int) -> np.ndarray:
    """Median of the usable values at each phase of the season (NaN where a phase has none)."""
    profile = np.full(season, np.nan)
    phases = np.arange(len(values)) % season
    for phase in range(season):
        picked = values[(phases == phase) & usable]
        if picked.size:
            profile[phase] = np.median(picked)
    return profile


def clean(values: np.ndarray, season: int, outages: Sequence[tuple[int, int]] = ()) -> Cleaned:
    """Fill what was not observed, and only that: missing steps (NaN) and declared outages ((first index,
    length): a platform outage known from elsewhere, never inferred from a quiet series). A zero is data: an
    idle cluster is idle. Gaps are filled from the seasonal profile of the observed steps, for fitting."""
    values = np.asarray(values, dtype=float)
    missing = np.isnan(values)
    observed = ~missing
    kept = []
    for start, length in outages:
        first, last = max(0, start), min(len(values), start + length)
        if first < last:
            observed[first:last] = False
            kept.append((first, last - first))
    profile = seasonal_profile(values, observed, season)
    phases = np.arange(len(values)) % season
    fallback = float(np.nanmedian(values[observed])) if observed.any() else 0.0
    filled = values.copy()
    gaps = ~observed
    filled[gaps] = np.nan_to_num(profile[phases[gaps]], nan=fallback)
    return Cleaned(filled, observed, kept, int(missing.sum()))


def common_idle_runs(series: Sequence[np.ndarray], min_length: int = MIN_OUTAGE) -> list[tuple[int, int]]:
    """Platform outages as evidence shows them: runs of at least `min_length` steps in which every one of
    several series (the clusters or customers of one platform, aligned) is zero or missing at once. One
    quiet customer is idle; all of them at once, for hours, is the platform down."""
    if len(series) < 3:
        return []  # two quiet customers at night are not evidence
    quiet = np.all([(np.nan_to_num(np.asarray(s, dtype=float)) == 0) for s in series], axis=0)
    runs, start = [], None
    for i, flag in enumerate([*quiet, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start >= min_length:
                runs.append((start, i - start))
            start = None
    return runs


def outage_steps(
    windows: Sequence[tuple[datetime, datetime]],
    first: datetime,
    steps: int,
    step: timedelta = timedelta(hours=1),
) -> tuple[tuple[int, int], ...]:
    """Declared outages ((start, end) instants, end exclusive) as (first index, length) of a series of
    `steps` steps from `first`; a step the outage touches at all is unobserved. Outside the series:
    dropped."""
    out = []
    for start, end in windows:
        first_step = max(0, int((start - first) // step))
        last_step = min(steps, -int(-(end - first) // step))  # ceiling: a partly down hour is not data
        if first_step < last_step:
            out.append((first_step, last_step - first_step))
    return tuple(out)
