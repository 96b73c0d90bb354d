"""Forecasts of GPU usage series with statsmodels, driven per series by a rolling-origin backtest.

Models: seasonal naive (the baseline), two ETS forms (`ETSModel`, additive errors: simple exponential
smoothing, level + daily season), SARIMAX (AR(1) errors around Fourier terms for
the daily season), STL + ETS, two robust levels (the median of the last 3 and 12 hours, with empirical
bounds from the same rule's past errors) and two levels tuned for the day ahead (an exponentially weighted
level and a median, their weight or window the one with the least absolute error 1-24 steps ahead over the
history, bounds as the robust levels'). Each is scored by a rolling-origin backtest (14 daily origins):
mean MASE over the origins (scale: the in-sample seasonal-naive error of each origin's history), its
parameters estimated once at the first origin and applied at the later ones.

Two methods use that backtest:
- `combination` (the default): the statistical models weighted by their backtest MASE to the eighth power,
  their weighted mean, or their weighted trimmed mean where that beat the mean by 2 % on the backtest, its
  intervals calibrated on its own backtest (split-conformal). Seasonal naive is the yardstick, not a
  member (it repeats yesterday, so it cannot follow a cluster that turns busy or idle), unless it beat the
  models' combination on the backtest: then it joins, weighted like the others. Most clusters wander
  in level (simple exponential smoothing fits them), some follow the day; the weights let the backtest say
  which without betting on a noisy ranking (see the README's benchmark).
- `best`: the single model with the lowest backtest MASE, seasonal naive winning ties, so the choice is never
  worse than seasonal naive on the backtest.

Short histories (under two seasons or too short for one origin) and intermittent series (mostly zeros) fall
back explicitly, and the result says why.

Gaps: missing hours and outages (a run of zeros where the same hours of other days were busy) are not
fitted as if real: they are filled from the seasonal profile for fitting and left out of every score.

Intervals: 80, 95 and 99 % (99 % is what the anomaly alerts use); the backtest reports the empirical
coverage of 80 and 95 %. The combination's and the intermittent rule's are calibrated on their own backtest
(tasks/forecast/intervals.py). Usage cannot be negative, so bounds are clipped at zero.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from tasks.forecast.combining import combine
from tasks.forecast.gaps import MIN_OUTAGE, Cleaned, clean, common_idle_runs, seasonal_profile
from tasks.forecast.intervals import RULE_WIDENING_RANGE, Widening, calibration, widen
from tasks.forecast.regimes import current_regime
from tasks.forecast.rules import (
    LEVEL_FAMILIES,
    LEVELS,
    Forecast,
    croston_sba,
    flat_level,
    median_levels,
    normal_bounds,
    seasonal_median,
    seasonal_naive,
    tune_level,
)

# Re-exported from combining.py, gaps.py and intervals.py: callers take the forecast's vocabulary here.
__all__ = [
    "MIN_OUTAGE",
    "Cleaned",
    "calibration",
    "clean",
    "combine",
    "common_idle_runs",
    "seasonal_profile",
    "widen",
]

BASELINE = "seasonal_naive"
# Robust levels: the median of the last 3 or 12 hours. Absolute error (what MASE scores) is least at the
# median, and a median ignores the short spike (a job that ran an hour) that an exponentially weighted level
# chases for the rest of the day; it follows a lasting step within half its window.
MEDIANS = {"median_3": 3, "median_12": 12}
# Levels tuned for the day ahead (tasks/forecast/rules.py:tune_level): an exponentially weighted level and a
# median whose smoothing weight or window had the least absolute error 1 to 24 hours ahead in the history.
TUNED = {"ses_mae": "ewm", "median_mae": "median"}
MODELS = (BASELINE, "ses", "ets_seasonal", "sarimax", "stl_ets", *MEDIANS, *TUNED)
# The combination weighs each model by its backtest MASE to this power: sharp enough that a model that
# cannot follow a series (a level model on a strongly daily one, or the reverse) hardly counts, soft enough
# that a month of hourly data's noisy ranking does not pick one model outright (see the README's benchmark:
# 4 before the day-ahead levels joined; with them, 8 was better on every dataset, the holdout included).
WEIGHT_POWER = 8
# Where the members disagree, the weighted trimmed mean leaves out those at either end of each step (a
# seasonal model's daily swing on a cluster that wanders, a level left behind by a step): the central 40 %
# of the weight. Used where it beat the weighted mean by 2 % or more on the series' own backtest; on the pods'
# staircases the backtest favoured it by less, and the mean's hedge won on the held-out weeks (the README).
TRIM, TRIM_MARGIN = 0.3, 0.98
BACKTEST_ORIGINS = 14  # daily origins: a week ranked the models too noisily on the benchmark
# ETS forms by (damped trend, daily season): simple exponential smoothing follows a level that wanders (most
# clusters), the seasonal form a daily rhythm. The damped-trend seasonal form was dropped: it forecast about
# what the seasonal form does, so the combination counted that forecast twice (see the README).
ETS_FORMS = {"ses": (False, False), "ets_seasonal": (False, True)}
STL_ETS_FORM = (True, False)  # STL + ETS: the ETS on the seasonally adjusted series, damped trend, no season
COMBINATION = "combination"
METHODS = (COMBINATION, "best")
INTERMITTENT_ZERO_SHARE = 0.5
INTERMITTENT = "intermittent"  # the model name of the intermittent forecast
SPORADIC_RUN = 2  # intermittent demand comes in short spells; long idle/busy regimes are modelled instead


@dataclass(slots=True)
class Backtest:
    origins: int
    mase: dict[str, float] = field(default_factory=dict)
    coverage80: dict[str, float] = field(default_factory=dict)
    coverage95: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)  # the combination's members and their weights
    widening: Widening = field(default_factory=lambda: Widening({}))  # the combination's interval factors
    trim: float = 0.0  # the combination's trimmed share at each end (0: the weighted mean)


@dataclass(frozen=True, slots=True)
class SeriesForecast:
    key: str
    model: str
    reason: str  # why this model: the backtest, or the explicit fallback
    forecast: Forecast  # `horizon` steps, plus any extra asked for (a customer's reach to month end)
    backtest: Backtest | None
    cleaned: Cleaned
    horizon: int  # the steps reported as "the next hours"; one home, nobody re-slices by hand

    def total(self, level: int | None = None, side: str = "mean") -> float:
        """Sum over the horizon of the mean, or of the lower/upper bound at `level`."""
        values = self.forecast.mean if level is None else getattr(self.forecast, side)[level]
        return float(values[: self.horizon].sum())


# ------------------------------------------------------------------------------------------------ models


Request = tuple[int, int]  # (origin, steps): forecast `steps` ahead using only the history before `origin`


class Candidate:
    """One model with its parameters estimated once, on the history before the first backtest origin.

    `forecasts(y, requests)` applies those parameters to a longer history and forecasts from every requested
    origin, each from the data before it only. The ETS forms and SARIMAX filter the history once and predict
    dynamically from inside it (statsmodels' `get_prediction(dynamic=0)`), so the backtest's origins cost one
    filtering pass, not one each. Initial states are the ones estimated
    with the parameters, so a longer history never changes them. `start`, a fit of the same model on a
    shorter history, warm-starts ETS's optimiser (ETS and STL's ETS) for the refit on the whole history.
    """

    def __init__(self, name: str, train: np.ndarray, season: int, start: Candidate | None = None) -> None:
        if name not in MODELS:
            raise ValueError(f"unknown model {name}")
        self.name, self.season = name, season
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; a failed fit raises and is reported
            self._fit(np.asarray(train, dtype=float), start)

    def forecasts(self, y: np.ndarray, requests: list[Request]) -> list[Forecast]:
        y = np.asarray(y, dtype=float)
        if any(origin > len(y) or (origin < len(y) < origin + steps) for origin, steps in requests):
            raise ValueError("an origin must leave its whole horizon inside the history, or be its end")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.name == "seasonal_naive":
                return [seasonal_naive(y[:origin], steps, self.season) for origin, steps in requests]
            if self.name in ETS_FORMS:
                return self._ets_forecasts(y, requests)
            if self.name == "sarimax":
                return self._sarimax_forecasts(y, requests)
            if self.name in MEDIANS or self.name in TUNED:
                return self._level_forecasts(y, requests)
            return self._stl_forecasts(y, requests)

    # -- estimation, once

    def _fit(self, y: np.ndarray, start: Candidate | None) -> None:
        from statsmodels.tsa.seasonal import STL

        m = self.season
        if self.name in ETS_FORMS:
            self._fit_ets(y, ETS_FORMS[self.name], start)
        elif self.name == "sarimax":
            # A regression on Fourier terms for the daily season with AR(1) errors, in statsmodels' ARIMA (its
            # SARIMAX state-space model) estimated by feasible GLS with Yule-Walker: on the Helios series the
            # AR and Fourier coefficients of the full MLE within about 0.001, in a third of the time.
            fit = self._arima(y).fit(method="yule_walker")
            self.params = fit.params
        elif self.name == "stl_ets":
            self._fit_ets(y - STL(y, period=m).fit().seasonal, STL_ETS_FORM, start)
        elif self.name in MEDIANS and len(y) <= MEDIANS[self.name]:
            raise ValueError(f"{self.name} needs more than {MEDIANS[self.name]} steps")
        elif self.name in TUNED:
            self.params = tune_level(y, TUNED[self.name], m)

    def _fit_ets(self, y: np.ndarray, form: tuple[bool, bool], start: Candidate | None) -> None:
        """Smoothing parameters by maximum likelihood, from heuristic initial states that are then kept."""
        trend, seasonal = form
        fit = self._ets(y, "heuristic", trend, seasonal).fit(disp=False, start_params=start and start.params)
        self.params = fit.params
        self.initial = {"initial_level": fit.initial_level}
        if trend:
            self.initial["initial_trend"] = fit.initial_trend
        if seasonal:
            self.initial["initial_seasonal"] = fit.initial_seasonal

    def _ets(self, y: np.ndarray, init: str, trend: bool, seasonal: bool, **initial: object) -> object:
        """Additive errors (usage is often zero, so multiplicative forms cannot fit), a damped trend or none,
        an additive daily season or none."""
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        season = {"seasonal": "add", "seasonal_periods": self.season} if seasonal else {}
        return ETSModel(
            pd.Series(y),
            error="add",
            trend="add" if trend else None,
            damped_trend=trend,
            initialization_method=init,
            **season,
            **initial,
        )

    def _arima(self, y: np.ndarray) -> object:
        from statsmodels.tsa.arima.model import ARIMA

        return ARIMA(y, exog=fourier(len(y), self.season), order=(1, 0, 0), trend="c")

    # -- forecasts from many origins

    @staticmethod
    def _dynamic(fit: object, origin: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of the forecast from `origin` (in sample: dynamic, so only data before it)."""
        prediction = fit.get_prediction(start=origin, end=origin + steps - 1, dynamic=0)  # type: ignore[attr-defined]
        return np.asarray(prediction.predicted_mean), np.asarray(prediction.var_pred_mean)

    def _ets_forecasts(self, y: np.ndarray, requests: list[Request]) -> list[Forecast]:
        fit = self._ets(y, "known", *ETS_FORMS[self.name], **self.initial).smooth(self.params)  # type: ignore[attr-defined]
        squared = np.asarray(fit.resid) ** 2
        out = []
        for origin, steps in requests:
            mean, variance = self._dynamic(fit, origin, steps)
            # The variance is the residual mean square times a factor of the parameters; use the residuals
            # before the origin, as a fit on that history alone would.
            ratio = squared[:origin].mean() / fit.mse if fit.mse > 0 else 1.0
            out.append(normal_bounds(mean, np.sqrt(variance * ratio)))
        return out

    def _sarimax_forecasts(self, y: np.ndarray, requests: list[Request]) -> list[Forecast]:
        n, m = len(y), self.season
        fit = self._arima(y).filter(self.params)  # type: ignore[attr-defined]
        out = []
        for origin, steps in requests:
            if origin < n:
                mean, variance = self._dynamic(fit, origin, steps)
            else:
                prediction = fit.get_forecast(steps, exog=fourier(n + steps, m)[n:])
                mean, variance = np.asarray(prediction.predicted_mean), np.asarray(prediction.var_pred_mean)
            out.append(normal_bounds(mean, np.sqrt(variance)))
        return out

    def _level_forecasts(self, y: np.ndarray, requests: list[Request]) -> list[Forecast]:
        """The robust and tuned levels: the level path once (it is causal: each step's level uses only the
        steps up to it), the flat forecast from each origin with bounds from the errors before it."""
        if self.name in MEDIANS:
            levels = median_levels(y, MEDIANS[self.name])
        else:
            path, _ = LEVEL_FAMILIES[TUNED[self.name]]
            levels = path(y, self.params)
        return [flat_level(y[:origin], levels[:origin], steps, self.season) for origin, steps in requests]

    def _stl_forecasts(self, y: np.ndarray, requests: list[Request]) -> list[Forecast]:
        """STL + ETS as statsmodels' STLForecast does it (ETS on the seasonally adjusted series, the last
        season of the seasonal component repeated), with the decomposition redone at each origin: STL's
        smoothing is two-sided, so one decomposition of the whole history would see past the origin."""
        from statsmodels.tsa.seasonal import STL

        m = self.season
        out = []
        for origin, steps in requests:
            seasonal = np.asarray(STL(y[:origin], period=m).fit().seasonal)
            adjusted = y[:origin] - seasonal
            fit = self._ets(adjusted, "known", *STL_ETS_FORM, **self.initial).smooth(self.params)  # type: ignore[attr-defined]
            mean, variance = self._dynamic(fit, origin, steps)
            repeated = np.array([seasonal[origin - m + i % m] for i in range(steps)])
            out.append(normal_bounds(mean + repeated, np.sqrt(variance)))
        return out


def fourier(n: int, season: int, pairs: int = 3) -> np.ndarray:
    t = np.arange(n)
    return np.column_stack(
        [f(2 * np.pi * k * t / season) for k in range(1, pairs + 1) for f in (np.sin, np.cos)]
    )


# ------------------------------------------------------------------------------------------------ selection


def _median_nonzero_run(y: np.ndarray) -> float:
    """Median length of the runs of non-zero steps (0 when there are none)."""
    runs, current = [], 0
    for value in y:
        if value > 0:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return float(np.median(runs)) if runs else 0.0


def mase_scale(train: np.ndarray, observed: np.ndarray, season: int) -> float:
    both = observed[season:] & observed[:-season]
    diffs = np.abs(train[season:] - train[:-season])[both]
    scale = float(diffs.mean()) if diffs.size else 0.0
    if scale <= 0:  # a flat history: fall back to the mean level, so MASE stays finite
        scale = float(np.abs(train[observed]).mean()) if observed.any() else 0.0
    return scale if scale > 0 else 1.0


def _finite(forecast: Forecast) -> bool:
    bounds = [*forecast.lower.values(), *forecast.upper.values()]
    return bool(np.isfinite(forecast.mean).all() and all(np.isfinite(b).all() for b in bounds))


def weigh(mase: dict[str, float], with_baseline: bool = False) -> dict[str, float]:
    """Weights of the combination's members from their backtest MASE (`WEIGHT_POWER`), summing to 1, best
    first. Seasonal naive is the yardstick, not a member, unless it beat the models' combination on the
    backtest (`with_baseline`): it repeats yesterday, so it pulls a forecast back to an idle day after a
    cluster woke, or to a busy one after it emptied."""
    raw = {
        name: max(value, 1e-9) ** -WEIGHT_POWER
        for name, value in mase.items()
        if name != COMBINATION and (with_baseline or name != BASELINE)
    }
    if not raw:  # only seasonal naive fitted
        return {BASELINE: 1.0}
    total = sum(raw.values())
    return {name: raw[name] / total for name in sorted(raw, key=raw.__getitem__, reverse=True)}


def scored_origins(cleaned: Cleaned, horizon: int, origins: int) -> list[int]:
    """The rolling origins n - k*horizon (k = origins..1) with an observed step in their horizon: the ones a
    backtest can score."""
    n = len(cleaned.values)
    cuts = [n - (origins - i) * horizon for i in range(origins)]
    return [c for c in cuts if cleaned.observed[c : c + horizon].any()]


def backtest(
    cleaned: Cleaned, season: int, horizon: int, origins: int, models: tuple[str, ...] = MODELS
) -> tuple[Backtest, dict[str, Candidate]]:
    """Rolling origins at n - k*horizon. Each model's parameters are estimated once, at the first origin
    (nothing after it is seen), and applied at every later origin: a fixed-parameter rolling origin. The
    combination is scored from its members' backtest forecasts. Returns the models as fitted at the first
    origin, for a final forecast where a refit on the whole history fails."""
    y, observed = cleaned.values, cleaned.observed
    first = len(y) - origins * horizon
    scored = scored_origins(cleaned, horizon, origins)
    if not scored:
        raise ValueError("no backtest origin has an observed hour")
    # The in-sample seasonal-naive error of each origin's history: the same for every model.
    scales = [mase_scale(y[:c], observed[:c], season) for c in scored]
    result = Backtest(origins)
    paths: dict[str, list[Forecast]] = {}
    fitted: dict[str, Candidate] = {}
    for name in models:
        try:
            candidate = Candidate(name, y[:first], season)
            forecasts = candidate.forecasts(y, [(c, horizon) for c in scored])
            if not all(_finite(f) for f in forecasts):
                raise ValueError("non-finite forecast")
        except Exception as exc:  # noqa: BLE001 - a model that cannot fit this series is reported, not fatal
            result.failed[name] = f"{type(exc).__name__}: {exc}"[:200]
            continue
        paths[name], fitted[name] = forecasts, candidate
        _score(result, name, forecasts, cleaned, scored, scales, horizon)
    if not paths:
        raise ValueError(f"every model failed: {result.failed}")
    singles = dict(result.mase)
    for with_baseline in (False, True):
        result.weights = weigh(singles, with_baseline)
        weights = list(result.weights.values())
        combined = [combine([paths[m][i] for m in result.weights], weights) for i in range(len(scored))]
        _score(result, COMBINATION, combined, cleaned, scored, scales, horizon)
        # The yardstick beat the models' combination on this backtest (a series that follows the day more
        # than its level): it joins, weighted by its MASE like the others, rather than being left out.
        if result.mase[COMBINATION] <= singles.get(BASELINE, math.inf):
            break
    trimmed = [combine([paths[m][i] for m in result.weights], weights, TRIM) for i in range(len(scored))]
    scores = _scores(trimmed, cleaned, scored, scales, horizon)
    if scores[0] < TRIM_MARGIN * result.mase[COMBINATION]:
        result.trim, combined = TRIM, trimmed
        result.mase[COMBINATION], result.coverage80[COMBINATION], result.coverage95[COMBINATION] = scores
    result.widening = calibration(combined, cleaned, scored, horizon)
    return result, fitted


def final_forecast(name: str, fitted: Candidate, y: np.ndarray, steps: int) -> tuple[Forecast, bool]:
    """The model refitted on the whole history, forecasting from its end; where that refit fails, the
    parameters from the backtest (the flag says which)."""
    try:
        forecast = Candidate(name, y, fitted.season, start=fitted).forecasts(y, [(len(y), steps)])[0]
        if _finite(forecast):
            return forecast, True
    except Exception:  # noqa: BLE001, S110 - the backtested parameters are the fallback
        pass
    return fitted.forecasts(y, [(len(y), steps)])[0], False


def _score(
    result: Backtest,
    name: str,
    forecasts: list[Forecast],
    cleaned: Cleaned,
    cuts: list[int],
    scales: list[float],
    horizon: int,
) -> None:
    result.mase[name], result.coverage80[name], result.coverage95[name] = _scores(
        forecasts, cleaned, cuts, scales, horizon
    )


def _scores(
    forecasts: list[Forecast], cleaned: Cleaned, cuts: list[int], scales: list[float], horizon: int
) -> tuple[float, float, float]:
    """Mean MASE over the origins (`scales`: each origin's MASE scale) and the share of scored points
    inside the 80 and 95 % intervals."""
    y, observed = cleaned.values, cleaned.observed
    errors, inside80, inside95, points = [], 0, 0, 0
    for cut, scale, fc in zip(cuts, scales, forecasts, strict=True):
        actual, scored = y[cut : cut + horizon], observed[cut : cut + horizon]
        errors.append(float(np.abs(fc.mean - actual)[scored].mean()) / scale)
        inside80 += int(((actual >= fc.lower[80]) & (actual <= fc.upper[80]))[scored].sum())
        inside95 += int(((actual >= fc.lower[95]) & (actual <= fc.upper[95]))[scored].sum())
        points += int(scored.sum())
    return float(np.mean(errors)), inside80 / points, inside95 / points


def choose(result: Backtest, method: str = COMBINATION) -> tuple[str, str]:
    """`combination`: the trimmed mean of the models (the default; see the README for why). `best`: the
    single model with the lowest backtest MASE, seasonal naive winning ties, so never worse than it there."""
    baseline = result.mase.get(BASELINE, math.inf)
    if method == COMBINATION:
        why = "combination weighted by backtest MASE: " + ", ".join(
            f"{name} {weight:.2f}" for name, weight in result.weights.items()
        )
        if BASELINE in result.weights and len(result.weights) > 1:
            why += " (seasonal naive joined: it beat the models alone on this backtest)"
        if result.trim:
            why += (
                f"; trimmed mean, the central {100 * (1 - 2 * result.trim):.0f} % of the weight at each step "
                f"(it beat the weighted mean by {100 * (1 - TRIM_MARGIN):.0f} % or more on this backtest)"
            )
        if result.mase[COMBINATION] > baseline:
            why += "; seasonal naive was better on this backtest"
        return COMBINATION, why
    if method != "best":
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    singles = {name: value for name, value in result.mase.items() if name != COMBINATION}
    best = min(singles, key=lambda name: (singles[name], name != BASELINE))
    return best, "lowest MASE of the single models"


def forecast_series(
    key: str,
    values: np.ndarray,
    season: int,
    horizon: int,
    origins: int = BACKTEST_ORIGINS,
    extra_horizon: int = 0,
    models: tuple[str, ...] = MODELS,
    method: str = COMBINATION,
    outages: Sequence[tuple[int, int]] = (),
) -> SeriesForecast:
    """Clean (missing steps and declared outages), backtest (or fall back explicitly), forecast
    `horizon + extra_horizon` steps with the chosen model or the combination, then follow the current regime
    (idle stays idle, a cluster that woke up stays busy)."""
    cleaned = clean(values, season, outages)
    # One BLAS thread: the models' matrices are tiny, so more threads only spin (about 30 % more CPU for the
    # same wall time on 2 cores), and forecast_many already runs a process per core.
    with threadpool_limits(limits=1, user_api="blas"):
        modelled = _modelled(key, cleaned, season, horizon, origins, extra_horizon, models, method)
    return _following(modelled, season)


def _modelled(
    key: str,
    cleaned: Cleaned,
    season: int,
    horizon: int,
    origins: int,
    extra_horizon: int,
    models: tuple[str, ...],
    method: str,
) -> SeriesForecast:
    y = cleaned.values
    steps = horizon + extra_horizon
    n = len(y)
    zero_share = float(np.mean(y[cleaned.observed] == 0)) if cleaned.observed.any() else 1.0
    busy_run = _median_nonzero_run(y)
    if n < 2 * season:
        if n >= season:
            reason = f"fallback: short history ({n} steps < 2 seasons of {season}): seasonal naive"
            return SeriesForecast(
                key, "seasonal_naive", reason, seasonal_naive(y, steps, season), None, cleaned, horizon
            )
        reason = f"fallback: short history ({n} steps < 1 season of {season}): Croston/mean level"
        return SeriesForecast(key, "croston_sba", reason, croston_sba(y, steps), None, cleaned, horizon)
    if zero_share > INTERMITTENT_ZERO_SHARE and busy_run <= SPORADIC_RUN:
        forecast, calibrated = _intermittent(cleaned, season, horizon, steps, origins)
        reason = (
            f"intermittent ({zero_share:.0%} of steps are zero, busy spells of {busy_run:g} step(s)): the "
            "mean of seasonal naive and the seasonal median of the last 7 days"
            + (f", intervals calibrated on {calibrated} daily origins" if calibrated else "")
        )
        return SeriesForecast(key, INTERMITTENT, reason, forecast, None, cleaned, horizon)
    usable_origins = min(origins, (n - 2 * season) // horizon)
    if usable_origins < 1:
        reason = f"fallback: history too short for a backtest origin ({n} steps): seasonal naive"
        return SeriesForecast(
            key, "seasonal_naive", reason, seasonal_naive(y, steps, season), None, cleaned, horizon
        )
    try:
        result, fitted = backtest(cleaned, season, horizon, usable_origins, models)
    except ValueError as exc:  # every origin in an outage, or no model could fit
        reason = f"fallback: no usable backtest ({exc}): seasonal naive"
        return SeriesForecast(
            key, "seasonal_naive", reason, seasonal_naive(y, steps, season), None, cleaned, horizon
        )
    chosen, why = choose(result, method)
    weights = result.weights if chosen == COMBINATION else {chosen: 1.0}
    finals = {name: final_forecast(name, fitted[name], y, steps) for name in weights}
    trim = result.trim if chosen == COMBINATION else 0.0
    forecast = combine([f for f, _ in finals.values()], list(weights.values()), trim)
    if chosen == COMBINATION:
        forecast = widen(forecast, result.widening)
    kept = [name for name, (_, refitted) in finals.items() if not refitted]
    reason = (
        f"backtest: MASE {result.mase[chosen]:.3f} over {usable_origins} origins "
        f"(seasonal naive {result.mase.get('seasonal_naive', math.inf):.3f}); {why}"
        + (f"; refit failed, backtest parameters kept for {', '.join(kept)}" if kept else "")
    )
    return SeriesForecast(key, chosen, reason, forecast, result, cleaned, horizon)


def intermittent(y: np.ndarray, steps: int, season: int) -> Forecast:
    """The rule for intermittent usage: the mean of seasonal naive and the seasonal median."""
    return combine([seasonal_naive(y, steps, season), seasonal_median(y, steps, season)])


def _intermittent(
    cleaned: Cleaned, season: int, horizon: int, steps: int, origins: int
) -> tuple[Forecast, int]:
    """The intermittent rule, its intervals calibrated (split-conformal, as the combination's) on the rule's
    own forecasts from the last `origins` daily origins: nothing is estimated, so it costs little, and the
    rule's raw bounds (seasonal naive's normal spread, the window's quantiles) cover far more than they say
    when most hours are zero. Returns the forecast and how many origins calibrated it (0: too short)."""
    y = cleaned.values
    cuts = [c for c in scored_origins(cleaned, horizon, origins) if c >= season]
    forecast = intermittent(y, steps, season)
    if not cuts:
        return forecast, 0
    past = [intermittent(y[:c], horizon, season) for c in cuts]
    # One band: the rule repeats the day, so its errors do not grow with the lead (banded, GenAI's 80 %
    # coverage went from 85 to 87.5 %).
    widening = calibration(past, cleaned, cuts, horizon, RULE_WIDENING_RANGE, edges=())
    return widen(forecast, widening), len(cuts)


def _following(result: SeriesForecast, season: int) -> SeriesForecast:
    """The forecast after the current regime (tasks/forecast/regimes.py): idle stays idle, woken stays
    busy. Intermittent series are left alone: a quiet day and a burst are their normal, not a shift."""
    cleaned = result.cleaned
    if result.model == INTERMITTENT:
        return result
    regime = current_regime(cleaned.values, cleaned.observed, season)
    if regime.kind == "steady":
        return result
    fc, steps = result.forecast, len(result.forecast.mean)
    if regime.kind == "idle":
        zeros = np.zeros(steps)
        forecast = Forecast(zeros, {lv: zeros for lv in LEVELS}, fc.upper)
    else:
        since = cleaned.values[cleaned.observed][-regime.steps :]
        sigma = max(float(np.std(since)), 0.25 * regime.level)
        forecast = normal_bounds(np.full(steps, regime.level), sigma * np.sqrt(1 + np.arange(steps) / season))
    return replace(result, forecast=forecast, reason=f"{result.reason}; {regime.describe()}")
