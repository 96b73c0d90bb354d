"""Forecasts by a rule: seasonal naive (the yardstick), the robust levels (the median of the last hours),
Croston-SBA and the seasonal median (intermittent usage) estimate nothing; the day-ahead levels choose one
number (a smoothing weight or a median's window) by their error over the history. tasks/forecast/models.py
backtests and combines them with the statistical models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

LEVELS = (80, 95, 99)


@dataclass(frozen=True, slots=True)
class Forecast:
    mean: np.ndarray
    lower: dict[int, np.ndarray]  # level → bound
    upper: dict[int, np.ndarray]


def normal_bounds(mean: np.ndarray, sigma: np.ndarray) -> Forecast:
    lower, upper = {}, {}
    for level in LEVELS:
        z = norm.ppf(0.5 + level / 200)
        lower[level] = np.maximum(mean - z * sigma, 0)
        upper[level] = np.maximum(mean + z * sigma, 0)
    return Forecast(np.maximum(mean, 0), lower, upper)


def seasonal_naive(y: np.ndarray, h: int, season: int) -> Forecast:
    """Last season repeated; sigma from the seasonal differences, growing with whole seasons ahead."""
    last = y[-season:]
    mean = np.array([last[i % season] for i in range(h)])
    diffs = y[season:] - y[:-season]
    sigma = float(np.std(diffs)) if diffs.size > 1 else float(np.std(y))
    k = np.floor(np.arange(h) / season) + 1
    return normal_bounds(mean, sigma * np.sqrt(k))


def median_levels(y: np.ndarray, k: int) -> np.ndarray:
    """The median of the last `k` steps after each step (NaN until `k` steps are in)."""
    from numpy.lib.stride_tricks import sliding_window_view

    levels = np.full(len(y), np.nan)
    levels[k - 1 :] = np.median(sliding_window_view(np.asarray(y, dtype=float), k), axis=1)
    return levels


def ewm_levels(y: np.ndarray, alpha: float) -> np.ndarray:
    """Simple exponential smoothing's level after each step, started at the first step."""
    from scipy.signal import lfilter

    y = np.asarray(y, dtype=float)
    return lfilter([alpha], [1, alpha - 1], y, zi=[(1 - alpha) * y[0]])[0]


# The grids the horizon-tuned levels choose from: smoothing weights from about a month's memory to none, and
# median windows from the last hour to two days.
EWM_ALPHAS = tuple(float(a) for a in np.geomspace(0.005, 1, 40))
MEDIAN_WINDOWS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 36, 48)
# A flat level's family → (its level path from the parameter, the parameters it is tuned over).
LEVEL_FAMILIES = {"ewm": (ewm_levels, EWM_ALPHAS), "median": (median_levels, MEDIAN_WINDOWS)}


def tune_level(y: np.ndarray, family: str, ahead: int) -> float:
    """The parameter of a flat level (`ewm`: the smoothing weight; `median`: the window) whose forecasts had
    the least mean absolute error 1 to `ahead` steps ahead, from every step of the history after a warm-up.
    Simple exponential smoothing's likelihood scores the next step only, and absolute error a day ahead (what
    MASE scores) often wants a longer memory: this asks the history the question that is scored, from
    hundreds of origins instead of the backtest's fourteen."""
    y = np.asarray(y, dtype=float)
    if len(y) < 4:
        raise ValueError("a tuned level needs at least 4 steps")
    warm = min(2 * ahead, len(y) // 2)
    ahead = min(ahead, len(y) - warm - 1)
    path, values = LEVEL_FAMILIES[family]
    grid = [v for v in values if family != "median" or v <= warm + 1]  # a window defined from the warm-up on
    losses = []
    for value in grid:
        levels = path(y, value)
        errors = [np.abs(y[warm + j :] - levels[warm : len(y) - j]) for j in range(1, ahead + 1)]
        losses.append(float(np.concatenate(errors).mean()))
    return grid[int(np.argmin(losses))]


def flat_level(y: np.ndarray, levels: np.ndarray, h: int, season: int) -> Forecast:
    """A flat forecast at the last of `levels` (the level after each step of `y`; NaN where undefined).
    Bounds: the empirical quantiles of the same rule's errors at every earlier step, per step ahead up to a
    season; beyond it, the last step's spread grown with the root of the seasons ahead."""
    y, levels = np.asarray(y, dtype=float), np.asarray(levels, dtype=float)
    tails = [q for level in LEVELS for q in (0.5 - level / 200, 0.5 + level / 200)]
    spread = np.zeros((len(tails), min(h, season)))
    for j in range(spread.shape[1]):
        errors = y[j + 1 :] - levels[: len(y) - j - 1]
        errors = errors[np.isfinite(errors)]
        spread[:, j] = np.quantile(errors, tails) if errors.size >= 10 else 0.0
    ahead = np.arange(h)
    spread = spread[:, np.minimum(ahead, spread.shape[1] - 1)] * np.sqrt(
        np.maximum(1.0, (ahead + 1) / season)
    )
    mean = np.full(h, max(float(levels[-1]), 0.0))
    lower = {lv: np.maximum(np.minimum(mean + spread[2 * i], mean), 0) for i, lv in enumerate(LEVELS)}
    upper = {lv: np.maximum(mean + spread[2 * i + 1], mean) for i, lv in enumerate(LEVELS)}
    return Forecast(mean, lower, upper)


def croston_sba(y: np.ndarray, h: int, alpha: float = 0.1) -> Forecast:
    """Croston's method with the Syntetos-Boylan correction, for intermittent demand; intervals from the
    empirical distribution of the history (most hours are zero, so the lower bounds are too)."""
    nonzero = np.flatnonzero(y > 0)
    if nonzero.size == 0:
        zeros = np.zeros(h)
        return Forecast(zeros, {lv: zeros for lv in LEVELS}, {lv: zeros for lv in LEVELS})
    size, interval, last = float(y[nonzero[0]]), float(nonzero[0] + 1), int(nonzero[0])
    for i in nonzero[1:]:
        size += alpha * (float(y[i]) - size)
        interval += alpha * (float(i - last) - interval)
        last = int(i)
    mean = np.full(h, (1 - alpha / 2) * size / interval)
    lower = {lv: np.full(h, float(np.percentile(y, 50 - lv / 2))) for lv in LEVELS}
    upper = {lv: np.full(h, max(float(np.percentile(y, 50 + lv / 2)), float(mean[0]))) for lv in LEVELS}
    return Forecast(mean, lower, upper)


def seasonal_median(y: np.ndarray, h: int, season: int, seasons: int = 7) -> Forecast:
    """For intermittent usage: at each hour of the day, the median of that hour over the last `seasons` days.
    A customer busy a few hours a day is mostly zero at any hour, and absolute error is least at the median:
    Croston's mean level spreads the bursts thin over every hour and misses both. Bounds: the quantiles of
    those days' values at the hour, pooled with the whole window's so a few days still give a spread."""
    days = min(seasons, len(y) // season)
    window = np.asarray(y[len(y) - days * season :], dtype=float).reshape(days, season)
    phase = np.arange(len(y), len(y) + h) % season
    mean = np.median(window, axis=0)[phase]
    lower, upper = {}, {}
    for level in LEVELS:
        lo, hi = 50 - level / 2, 50 + level / 2
        pooled_hi = float(np.percentile(window, hi))
        upper[level] = np.maximum(np.maximum(np.percentile(window, hi, axis=0)[phase], pooled_hi), mean)
        lower[level] = np.minimum(np.percentile(window, lo, axis=0)[phase], mean)
    return Forecast(mean, lower, upper)
