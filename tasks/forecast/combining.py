"""Combining the members' forecasts: their weighted mean, or a weighted trimmed mean that leaves out the
members at either end of each step (tasks/forecast/models.py says when each is used)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.forecast.rules import LEVELS, Forecast


def trimmed_mean(values: np.ndarray, weights: np.ndarray, trim: float) -> np.ndarray:
    """Per column of `values` (members x steps): the mean of the central `1 - 2 * trim` of the members'
    weight, the members sorted by value at that step (a member straddling a cut counts in part). `trim` 0 is
    the weighted mean; towards 0.5 it nears the weighted median. Monotone: members that all move up move the
    result up, so trimmed lower bounds stay under the trimmed mean and upper ones over it."""
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    values = np.asarray(values, dtype=float)
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    order = np.argsort(values, axis=0, kind="stable")
    ranked, mass = np.take_along_axis(values, order, axis=0), w[order]
    above = np.cumsum(mass, axis=0)
    kept = np.clip(np.minimum(above, 1 - trim) - np.maximum(above - mass, trim), 0, None)
    return (kept * ranked).sum(axis=0) / kept.sum(axis=0)


def combine(forecasts: list[Forecast], weights: Sequence[float] | None = None, trim: float = 0.0) -> Forecast:
    """The weighted mean (equal weights unless given), or with `trim` the weighted trimmed mean, of the
    members' means and of their interval bounds (quantile averaging, which keeps each bound between the
    members' own)."""
    w = np.full(len(forecasts), 1 / len(forecasts)) if weights is None else np.asarray(weights, dtype=float)

    def of(rows: list[np.ndarray]) -> np.ndarray:
        return trimmed_mean(np.array(rows), w, trim) if trim else np.average(rows, axis=0, weights=w)

    return Forecast(
        of([f.mean for f in forecasts]),
        {lv: of([f.lower[lv] for f in forecasts]) for lv in LEVELS},
        {lv: of([f.upper[lv] for f in forecasts]) for lv in LEVELS},
    )
