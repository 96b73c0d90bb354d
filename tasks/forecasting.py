"""Forecasts of GPU usage series with statsmodels, the model chosen per series by a rolling-origin backtest.

Candidates: seasonal naive (the baseline), ETS (`ETSModel`, additive damped), damped Holt-Winters, SARIMAX
(AR(1) with Fourier terms for the daily season, so one fit takes a fraction of a second), and STL + ETS.
Selection: mean MASE over rolling origins (scale: the in-sample seasonal-naive error of each training
window), each model's parameters estimated once at the first origin and its states filtered up to each
later origin; the baseline is a candidate and wins ties, so the choice is never worse than seasonal naive on
the backtest. Short histories (under two seasons or too short for one origin) and intermittent series
(mostly zeros) fall back explicitly, and the result says why.

Gaps: missing hours and outages (a run of zeros where the same hours of other days were busy) are not
fitted as if real: they are filled from the seasonal profile for fitting and left out of every score.

Intervals: 80, 95 and 99 % (99 % is what the anomaly alerts use); the backtest reports the empirical
coverage of 80 and 95 %. Usage cannot be negative, so bounds are clipped at zero.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

LEVELS = (80, 95, 99)
MODELS = ("seasonal_naive", "ets", "holt_winters_damped", "sarimax", "stl_ets")
INTERMITTENT_ZERO_SHARE = 0.5
SPORADIC_RUN = 2  # intermittent demand comes in short spells; long idle/busy regimes are modelled instead
MIN_OUTAGE = 6  # consecutive zero steps before a zero run can be an outage


@dataclass(frozen=True, slots=True)
class Forecast:
    mean: np.ndarray
    lower: dict[int, np.ndarray]  # level → bound
    upper: dict[int, np.ndarray]


@dataclass(frozen=True, slots=True)
class Cleaned:
    values: np.ndarray  # gaps filled for fitting
    observed: np.ndarray  # False where missing or in an outage: never scored
    outages: list[tuple[int, int]]  # (first index, length) of zero runs treated as outages
    missing: int


@dataclass(slots=True)
class Backtest:
    origins: int
    mase: dict[str, float] = field(default_factory=dict)
    coverage80: dict[str, float] = field(default_factory=dict)
    coverage95: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SeriesForecast:
    key: str
    model: str
    reason: str  # why this model: the backtest, or the explicit fallback
    forecast: Forecast
    backtest: Backtest | None
    cleaned: Cleaned


# ------------------------------------------------------------------------------------------------ gaps


def seasonal_profile(values: np.ndarray, usable: np.ndarray, season: int) -> np.ndarray:
    """Median of the usable values at each phase of the season (NaN where a phase has none)."""
    profile = np.full(season, np.nan)
    phases = np.arange(len(values)) % season
    for phase in range(season):
        picked = values[(phases == phase) & usable]
        if picked.size:
            profile[phase] = np.median(picked)
    return profile


def clean(values: np.ndarray, season: int, min_outage: int = MIN_OUTAGE) -> Cleaned:
    """Detect missing steps and outages, fill both from the seasonal profile for fitting."""
    values = np.asarray(values, dtype=float)
    missing = np.isnan(values)
    usable = ~missing
    outages: list[tuple[int, int]] = []
    zero = (values == 0) & usable
    run_start = None
    for i in range(len(values) + 1):
        if i < len(values) and zero[i]:
            run_start = i if run_start is None else run_start
            continue
        if run_start is not None and i - run_start >= min_outage:
            outages.append((run_start, i - run_start))
        run_start = None
    in_runs = np.zeros(len(values), dtype=bool)
    for start, length in outages:
        in_runs[start : start + length] = True
    profile = seasonal_profile(values, usable & ~in_runs, season)
    phases = np.arange(len(values)) % season
    confirmed = []
    for start, length in outages:
        expected = profile[phases[start : start + length]]
        # An outage only where the rest of the history says these hours are busy, not a quiet night.
        if np.nanmean(np.nan_to_num(expected) > 0) >= 0.8 and np.nanmedian(expected) > 0:
            confirmed.append((start, length))
    observed = usable.copy()
    for start, length in confirmed:
        observed[start : start + length] = False
    profile = seasonal_profile(values, observed, season)
    fallback = float(np.nanmedian(values[observed])) if observed.any() else 0.0
    filled = values.copy()
    gaps = ~observed
    filled[gaps] = np.nan_to_num(profile[phases[gaps]], nan=fallback)
    return Cleaned(filled, observed, confirmed, int(missing.sum()))


# ------------------------------------------------------------------------------------------------ models


def _bounds(mean: np.ndarray, sigma: np.ndarray) -> Forecast:
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
    return _bounds(mean, sigma * np.sqrt(k))


def _frame_bounds(frames: Callable[[float], pd.DataFrame], lower: str, upper: str) -> Forecast:
    lo, hi = {}, {}
    mean = None
    for level in LEVELS:
        frame = frames(1 - level / 100)
        mean = frame["mean"].to_numpy()
        lo[level] = np.maximum(frame[lower].to_numpy(), 0)
        hi[level] = np.maximum(frame[upper].to_numpy(), 0)
    assert mean is not None
    return Forecast(np.maximum(mean, 0), lo, hi)


class Fitted:
    """A model fitted once; `forecast_from(y)` re-applies its parameters to a longer history (the rolling
    origins), which is how the backtest stays within a second per series."""

    def __init__(self, name: str, y: np.ndarray, season: int) -> None:
        self.name, self.season = name, season
        self.state: object = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; a failed fit raises and is reported
            self.state = self._fit(y, None)

    def _fit(self, y: np.ndarray, previous: object) -> object:
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel
        from statsmodels.tsa.forecasting.stl import STLForecast
        from statsmodels.tsa.holtwinters import ExponentialSmoothing
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        series = pd.Series(y)
        m = self.season
        if self.name == "seasonal_naive":
            return y
        if self.name == "ets":
            model = ETSModel(
                series,
                error="add",
                trend="add",
                damped_trend=True,
                seasonal="add",
                seasonal_periods=m,
                initialization_method="heuristic",
            )
            return model.fit(disp=False) if previous is None else model.smooth(previous.params)  # type: ignore[attr-defined]
        if self.name == "holt_winters_damped":
            model = ExponentialSmoothing(
                series,
                trend="add",
                damped_trend=True,
                seasonal="add",
                seasonal_periods=m,
                initialization_method="heuristic",
            )
            if previous is None:
                return model.fit(
                    use_brute=False
                )  # the grid search of starting values costs more than it gains
            p = previous.params  # type: ignore[attr-defined]
            return model.fit(
                smoothing_level=p["smoothing_level"],
                smoothing_trend=p["smoothing_trend"],
                smoothing_seasonal=p["smoothing_seasonal"],
                damping_trend=p["damping_trend"],
                optimized=False,
            )
        if self.name == "sarimax":
            exog = fourier(len(y), m)
            if previous is None:
                return SARIMAX(series, exog=exog, order=(1, 0, 0), trend="c").fit(disp=False, maxiter=50)
            return previous.apply(series, exog=exog)  # type: ignore[attr-defined]
        if self.name == "stl_ets":
            model_kwargs = {
                "error": "add",
                "trend": "add",
                "damped_trend": True,
                "initialization_method": "heuristic",  # no initial states to estimate: faster refits
            }
            return STLForecast(series, ETSModel, model_kwargs=model_kwargs, period=m).fit(
                fit_kwargs={"disp": False}
            )
        raise ValueError(f"unknown model {self.name}")

    def forecast_from(self, y: np.ndarray, h: int) -> Forecast:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = self.state if len(y) == self._fitted_length() else self._fit(y, self.state)
            return self._forecast(state, len(y), h)

    def _fitted_length(self) -> int:
        if self.name == "seasonal_naive":
            return len(self.state)  # type: ignore[arg-type]
        return int(self.state.model.nobs) if self.name != "stl_ets" else -1  # type: ignore[attr-defined]

    def _forecast(self, state: object, n: int, h: int) -> Forecast:
        m = self.season
        if self.name == "seasonal_naive":
            return seasonal_naive(np.asarray(state), h, m)
        if self.name == "ets":
            prediction = state.get_prediction(start=n, end=n + h - 1)  # type: ignore[attr-defined]
            return _frame_bounds(lambda a: prediction.summary_frame(alpha=a), "pi_lower", "pi_upper")
        if self.name == "stl_ets":
            prediction = state.get_prediction(start=n, end=n + h - 1)  # type: ignore[attr-defined]
            return _frame_bounds(
                lambda a: prediction.summary_frame(alpha=a), "mean_ci_lower", "mean_ci_upper"
            )
        if self.name == "sarimax":
            prediction = state.get_forecast(h, exog=fourier(n + h, m)[n:])  # type: ignore[attr-defined]
            return _frame_bounds(
                lambda a: prediction.summary_frame(alpha=a), "mean_ci_lower", "mean_ci_upper"
            )
        # Holt-Winters has no closed-form intervals: simulate its own error process.
        mean = np.asarray(state.forecast(h))  # type: ignore[attr-defined]
        paths = np.asarray(state.simulate(h, repetitions=400, error="add", anchor="end", random_state=0))  # type: ignore[attr-defined]
        lower = {lv: np.maximum(np.percentile(paths, 50 - lv / 2, axis=1), 0) for lv in LEVELS}
        upper = {lv: np.maximum(np.percentile(paths, 50 + lv / 2, axis=1), 0) for lv in LEVELS}
        return Forecast(np.maximum(mean, 0), lower, upper)


def fourier(n: int, season: int, pairs: int = 3) -> np.ndarray:
    t = np.arange(n)
    return np.column_stack(
        [f(2 * np.pi * k * t / season) for k in range(1, pairs + 1) for f in (np.sin, np.cos)]
    )


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


def backtest(
    cleaned: Cleaned, season: int, horizon: int, origins: int, models: tuple[str, ...] = MODELS
) -> tuple[Backtest, dict[str, Fitted]]:
    """Rolling origins at n - k*horizon. Each model is fitted once, at the first origin (nothing after it
    is seen), and its parameters are applied to every later origin's history: a fixed-parameter rolling
    origin, in a fraction of the time of refits."""
    y, observed = cleaned.values, cleaned.observed
    n = len(y)
    cuts = [n - (origins - i) * horizon for i in range(origins)]
    result = Backtest(origins)
    fitted: dict[str, Fitted] = {}
    for name in models:
        try:
            model = Fitted(name, y[: cuts[0]], season)
            errors, inside80, inside95, points = 0.0, 0, 0, 0
            for cut in cuts:
                fc = model.forecast_from(y[:cut], horizon)
                actual, scored = y[cut : cut + horizon], observed[cut : cut + horizon]
                if not scored.any():
                    continue
                scale = mase_scale(y[:cut], observed[:cut], season)
                errors += float(np.abs(fc.mean - actual)[scored].mean()) / scale
                inside80 += int(((actual >= fc.lower[80]) & (actual <= fc.upper[80]))[scored].sum())
                inside95 += int(((actual >= fc.lower[95]) & (actual <= fc.upper[95]))[scored].sum())
                points += int(scored.sum())
            scored_origins = sum(observed[c : c + horizon].any() for c in cuts)
            if not scored_origins or not math.isfinite(errors):
                raise ValueError("no scored origin")
            result.mase[name] = errors / scored_origins
            result.coverage80[name] = inside80 / points
            result.coverage95[name] = inside95 / points
            fitted[name] = model
        except Exception as exc:  # noqa: BLE001 - a model that cannot fit this series is reported, not fatal
            result.failed[name] = f"{type(exc).__name__}: {exc}"[:200]
    return result, fitted


def choose(result: Backtest) -> tuple[str, str]:
    """The lowest backtest MASE; seasonal naive wins ties, so the choice is never worse than it."""
    best = min(result.mase, key=lambda name: (result.mase[name], name != "seasonal_naive"))
    return best, "lowest MASE"


def forecast_series(
    key: str,
    values: np.ndarray,
    season: int,
    horizon: int,
    origins: int = 7,
    extra_horizon: int = 0,
    models: tuple[str, ...] = MODELS,
) -> SeriesForecast:
    """Clean, choose (backtest or explicit fallback), refit the choice on the whole history, forecast
    `horizon + extra_horizon` steps."""
    cleaned = clean(values, season)
    y = cleaned.values
    steps = horizon + extra_horizon
    n = len(y)
    zero_share = float(np.mean(y[cleaned.observed] == 0)) if cleaned.observed.any() else 1.0
    busy_run = _median_nonzero_run(y)
    if n < 2 * season:
        if n >= season:
            reason = f"fallback: short history ({n} steps < 2 seasons of {season}): seasonal naive"
            return SeriesForecast(
                key, "seasonal_naive", reason, seasonal_naive(y, steps, season), None, cleaned
            )
        reason = f"fallback: short history ({n} steps < 1 season of {season}): Croston/mean level"
        return SeriesForecast(key, "croston_sba", reason, croston_sba(y, steps), None, cleaned)
    if zero_share > INTERMITTENT_ZERO_SHARE and busy_run <= SPORADIC_RUN:
        reason = (
            f"fallback: intermittent ({zero_share:.0%} of steps are zero, busy spells of {busy_run:g} "
            "step(s)): Croston (SBA)"
        )
        return SeriesForecast(key, "croston_sba", reason, croston_sba(y, steps), None, cleaned)
    usable_origins = min(origins, (n - 2 * season) // horizon)
    if usable_origins < 1:
        reason = f"fallback: history too short for a backtest origin ({n} steps): seasonal naive"
        return SeriesForecast(key, "seasonal_naive", reason, seasonal_naive(y, steps, season), None, cleaned)
    result, fitted = backtest(cleaned, season, horizon, usable_origins, models)
    best, why = choose(result)
    reason = (
        f"backtest: MASE {result.mase[best]:.3f} over {usable_origins} origins "
        f"(seasonal naive {result.mase.get('seasonal_naive', math.inf):.3f}); {why}"
    )
    final = Fitted(best, y, season) if best != "seasonal_naive" else fitted[best]
    forecast = final.forecast_from(y, steps)
    return SeriesForecast(key, best, reason, forecast, result, cleaned)


# ------------------------------------------------------------------------------------------------ many series


@dataclass(frozen=True, slots=True)
class SeriesJob:
    key: str
    values: np.ndarray
    season: int
    horizon: int
    extra_horizon: int = 0


def _run_batch(jobs: list[SeriesJob]) -> list[SeriesForecast]:
    return [
        forecast_series(j.key, j.values, j.season, j.horizon, extra_horizon=j.extra_horizon) for j in jobs
    ]


def forecast_many(jobs: list[SeriesJob], workers: int | None = None) -> list[SeriesForecast]:
    """Every job, in order, on `workers` processes (default: every core), in batches: one process start and
    one statsmodels import per worker, not per series."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1 or len(jobs) < 4:
        return _run_batch(jobs)
    # Interleaved batches balance long and short series; spawn, because the caller may hold threads.
    batches = [jobs[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_run_batch, batches))
    by_key = {f.key: f for batch in results for f in batch}
    return [by_key[j.key] for j in jobs]
