"""Split-conformal calibration of forecast intervals on a rolling-origin backtest.

The combination's members give intervals that assume their own model is right: averaged, they are too wide
on smooth clusters and too narrow on bursty ones. The intermittent rule's bounds (seasonal naive's normal
spread, a week's quantiles) cover far more than they say when most hours are zero. Both are rescaled, per
level, by the factor on their half-widths that their own backtest forecasts would have needed.

- Usage is bounded below: a lower bound at zero cannot be missed, so it stays at zero whatever the factor,
  and on a mostly idle series the misses the level allows fall above the interval.
- Clusters drift: the later origins count more (a half-life in origins), so a cluster that turned bursty, or
  calm, moves its intervals within days rather than a fortnight.
- Errors grow with the lead: the first hours ahead and the rest get a factor each (`LEAD_BANDS`), so one
  factor does not leave the next hours too wide and the end of the day too narrow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.forecast.gaps import Cleaned
from tasks.forecast.rules import LEVELS, Forecast

# The combination's members are fitted models: a backtest of a few hundred hours cannot justify more than
# tripling their intervals, nor cutting them below 0.65 (a calm fortnight, a staircase that held for days,
# does not show the next step; 0.5, 0.6, 0.75 and 1 measured in the README). The intermittent rule's bounds
# claim nothing, so they may shrink to the mean (an 80 % upper bound of a customer idle 90 % of hours).
WIDENING_RANGE = (0.65, 3.0)
RULE_WIDENING_RANGE = (0.0, 3.0)
HALF_LIFE = 7  # origins (days): last week's hours count twice the week before's (3 and 5: see the README)
# Steps ahead where a new calibration band starts: hours 1-6 and 7 on. With one factor, the pods' 80 % upper
# bounds were missed by 0-4 % of hours 1-6 ahead and by about 20 % from hour 10 on (see the README).
LEAD_BANDS = (6,)


@dataclass(frozen=True, slots=True)
class Widening:
    """Per level, the factors on the interval's half-widths, one per lead band (`edges`: the steps ahead where
    a band starts; none, one band). The last band's factor holds past the calibrated horizon."""

    factors: dict[int, tuple[float, ...]]
    edges: tuple[int, ...] = ()

    @classmethod
    def uniform(cls, factors: dict[int, float]) -> Widening:
        return cls({level: (f,) for level, f in factors.items()})

    def __getitem__(self, level: int) -> tuple[float, ...]:
        return self.factors[level]

    def __bool__(self) -> bool:
        return bool(self.factors)

    def at(self, level: int, steps: int) -> np.ndarray:
        """The factor at each of `steps` steps ahead."""
        return np.asarray(self.factors[level])[_bands(self.edges, steps)]


def _bands(edges: tuple[int, ...], steps: int) -> np.ndarray:
    """The band of each step ahead (0-based steps; a band starts at each edge)."""
    return np.searchsorted(np.asarray(edges, dtype=int), np.arange(steps), side="right")


def _quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The weighted quantile: the smallest value whose share of the weight at or below it is at least q."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return float(values[order][min(int(np.searchsorted(cumulative, q - 1e-12)), len(values) - 1)])


def conformal_share(level: int, n: int) -> float:
    """The share of `n` calibration points the factor must cover for `level` % on the next one: split
    conformal's finite-sample correction, ceil((n + 1) level) / n (80 % of 84 hours: 81 % of them)."""
    return min(1.0, float(np.ceil((n + 1) * level / 100 - 1e-9)) / n)


def calibration(
    forecasts: list[Forecast],
    cleaned: Cleaned,
    cuts: list[int],
    horizon: int,
    bounds: tuple[float, float] = WIDENING_RANGE,
    edges: tuple[int, ...] = LEAD_BANDS,
) -> Widening:
    """For each level and lead band, the smallest factor (within `bounds`) that would have covered that share
    of the band's scored backtest hours (`conformal_share`), each origin's hours weighted by recency
    (`HALF_LIFE`)."""
    edges = tuple(e for e in edges if 0 < e < horizon)
    band = _bands(edges, horizon)
    ratios: dict[int, list[np.ndarray]] = {level: [] for level in LEVELS}  # |error| / half-width, per hour
    weights: list[np.ndarray] = []
    bands: list[np.ndarray] = []
    for cut, fc in zip(cuts, forecasts, strict=True):
        actual, scored = cleaned.values[cut : cut + horizon], cleaned.observed[cut : cut + horizon]
        error = (actual - fc.mean)[scored]
        weights.append(np.full(error.size, 0.5 ** ((cuts[-1] - cut) / horizon / HALF_LIFE)))
        bands.append(band[scored])
        for level in LEVELS:
            lower, upper, mean = fc.lower[level][scored], fc.upper[level][scored], fc.mean[scored]
            half = np.where(error >= 0, upper - mean, mean - lower)
            # A lower bound at zero stays there (`widen`): nothing scored falls below it.
            miss = np.where((error < 0) & (lower <= 0), 0.0, np.abs(error))
            ratios[level].append(np.divide(miss, half, out=np.where(miss > 0, np.inf, 0.0), where=half > 0))
    pooled_weights = np.concatenate(weights) if weights else np.ones(0)
    pooled_bands = np.concatenate(bands) if bands else np.zeros(0, dtype=int)
    factors: dict[int, tuple[float, ...]] = {}
    for level, parts in ratios.items():
        pooled = np.concatenate(parts) if parts else np.ones(0)
        needed = []
        for b in range(len(edges) + 1):
            inside = pooled_bands == b
            n = int(inside.sum())
            value = _quantile(pooled[inside], pooled_weights[inside], conformal_share(level, n)) if n else 1.0
            needed.append(float(np.clip(value, *bounds)))
        factors[level] = tuple(needed)
    return Widening(factors, edges)


def widen(forecast: Forecast, widening: Widening) -> Forecast:
    """The bounds moved away from (or towards) the mean by each level's factor, still at least zero; a lower
    bound at zero stays at zero (narrowing must not lift it over the idle hours it covers). The levels stay
    nested: a wider level's interval holds the narrower one's."""
    lower: dict[int, np.ndarray] = {}
    upper: dict[int, np.ndarray] = {}
    narrower = None
    for level in sorted(widening.factors):
        mean, lo, hi = forecast.mean, forecast.lower[level], forecast.upper[level]
        f = widening.at(level, len(mean))
        lower[level] = np.where(lo <= 0, 0.0, np.maximum(mean - f * (mean - lo), 0))
        upper[level] = mean + f * (hi - mean)
        if narrower is not None:
            lower[level] = np.minimum(lower[level], lower[narrower])
            upper[level] = np.maximum(upper[level], upper[narrower])
        narrower = level
    return Forecast(forecast.mean, lower, upper)
