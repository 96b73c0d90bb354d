"""Forecast backtests, the combination and the single-model choice, gap handling, fallbacks and interval
coverage, on real Helios and LoRA slices (tests/data, see SOURCES.md) and on series whose right answer is
known."""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tasks.forecast.batch import SeriesJob, forecast_many
from tasks.forecast.intervals import WIDENING_RANGE
from tasks.forecast.models import (
    BACKTEST_ORIGINS,
    COMBINATION,
    INTERMITTENT,
    MODELS,
    TRIM,
    TRIM_MARGIN,
    WEIGHT_POWER,
    Candidate,
    Cleaned,
    Forecast,
    backtest,
    calibration,
    clean,
    combine,
    common_idle_runs,
    forecast_series,
    mase_scale,
    widen,
)
from tasks.forecast.rules import EWM_ALPHAS, MEDIAN_WINDOWS, tune_level

DATA = Path(__file__).parents[2] / "data"


def helios_hourly(vc: str) -> np.ndarray:
    """Mean running GPUs per hour of a Helios virtual cluster (May 2020, 744 hours)."""
    sums: dict[str, float] = defaultdict(float)
    with gzip.open(DATA / "forecast" / f"{vc}_cluster_sequence_vc_slice.csv.gz", "rt") as handle:
        for row in csv.DictReader(handle):
            sums[row["time"][:13]] += float(row["running_gpu_num"]) / 60
    return np.array([sums[k] for k in sorted(sums)])


def lora_customer_hourly() -> np.ndarray:
    """The busiest customer of the real LoRA request trace slice, GPU-hours per hour: intermittent."""
    per_customer: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    with (DATA / "usage" / "lora_request_trace_slice.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["exec_time_seconds"]:
                per_customer[row["groupId"]][row["gmt_create"][:13]] += float(row["exec_time_seconds"]) / 3600
    busiest = max(per_customer.values(), key=lambda hours: sum(hours.values()))
    first = datetime.strptime(min(busiest), "%Y-%m-%d %H")
    last = datetime.strptime(max(busiest), "%Y-%m-%d %H")
    hours = int((last - first).total_seconds() // 3600) + 1
    values = np.zeros(max(hours, 60))
    for key, value in busiest.items():
        values[int((datetime.strptime(key, "%Y-%m-%d %H") - first).total_seconds() // 3600)] = value
    return values


def test_the_real_platform_outage_is_found_across_clusters_and_left_out() -> None:
    """2020-05-10 00:00 is hour 216: every Helios cluster reported nothing for about a day at once. That is
    the evidence of a platform outage; one cluster's own quiet day is not."""
    clusters = {vc: helios_hourly(vc) for vc in ("vc6YE", "vc8Sj", "vcJLV")}
    down = common_idle_runs(list(clusters.values()))
    assert any(start <= 216 < start + length and length >= 20 for start, length in down)
    cleaned = clean(clusters["vc6YE"], 24, down)
    assert not cleaned.observed[216:236].any()
    assert (cleaned.values[216:236] > 0).all(), "filled from the seasonal profile for fitting"
    alone = clean(clusters["vc6YE"], 24)
    assert alone.outages == [] and alone.observed[216:236].all() and (alone.values[216:236] == 0).all()
    assert common_idle_runs(list(clusters.values())[:2]) == [], "two quiet series are not evidence"


def test_a_quiet_night_is_not_an_outage_but_missing_hours_are_gaps() -> None:
    day = np.r_[np.zeros(8), np.full(16, 5.0)]  # idle every night: that is the pattern, not an outage
    y = np.tile(day, 10)
    y[60] = np.nan  # hour 12 of the third day
    cleaned = clean(y, 24)
    assert cleaned.outages == [] and cleaned.missing == 1 and not cleaned.observed[60]
    assert cleaned.values[60] == 5.0


def _ordered(fc: Forecast) -> bool:
    return bool(
        (fc.lower[99] <= fc.lower[95]).all()
        and (fc.lower[95] <= fc.lower[80]).all()
        and (fc.lower[80] <= fc.upper[80]).all()
        and (fc.upper[80] <= fc.upper[95]).all()
        and (fc.upper[95] <= fc.upper[99]).all()
        and (fc.lower[99] >= 0).all()
    )


@pytest.mark.parametrize("vc", ["vc6YE", "vcJLV", "vc8Sj"])
def test_the_combination_weighs_the_models_by_their_backtest(vc: str) -> None:
    result = forecast_series(vc, helios_hourly(vc), season=24, horizon=24)
    bt = result.backtest
    assert bt is not None and bt.origins == BACKTEST_ORIGINS == 14 and result.model == COMBINATION
    assert set(bt.mase) | set(bt.failed) == {*MODELS, COMBINATION}
    singles = {m: v for m, v in bt.mase.items() if m not in (COMBINATION, "seasonal_naive")}
    assert set(bt.weights) == set(singles) and sum(bt.weights.values()) == pytest.approx(1)
    best, worst = min(singles, key=singles.__getitem__), max(singles, key=singles.__getitem__)
    assert list(bt.weights)[0] == best and bt.weights[best] > bt.weights[worst]
    assert bt.weights[best] / bt.weights[worst] == pytest.approx(
        (singles[worst] / singles[best]) ** WEIGHT_POWER
    )
    assert result.reason.startswith(f"backtest: MASE {bt.mase[COMBINATION]:.3f} over 14 origins")
    assert f"{best} {bt.weights[best]:.2f}" in result.reason
    factors = bt.widening.factors
    assert set(factors) == {80, 95, 99} and all(
        WIDENING_RANGE[0] <= f <= 3 for fs in factors.values() for f in fs
    )
    assert len(result.forecast.mean) == 24 and _ordered(result.forecast)


def test_seasonal_naive_joins_the_combination_only_when_it_beat_the_models_on_the_backtest() -> None:
    """A cluster that repeats its day: the level model alone loses to seasonal naive on the backtest, so
    seasonal naive joins the combination, weighted by its MASE like any member; the reason says so."""
    rng = np.random.default_rng(3)
    day = np.zeros(24)
    day[9:12], day[20] = [8, 12, 8], 5
    y = np.maximum(np.tile(day, 28) + rng.normal(0, 0.3, 24 * 28), 0)
    bt, _ = backtest(clean(y, 24), season=24, horizon=24, origins=14, models=("seasonal_naive", "ses"))
    assert bt.mase["seasonal_naive"] < bt.mase["ses"]
    assert list(bt.weights) == ["seasonal_naive", "ses"]
    assert bt.weights["seasonal_naive"] / bt.weights["ses"] == pytest.approx(
        (bt.mase["ses"] / bt.mase["seasonal_naive"]) ** WEIGHT_POWER
    )
    assert bt.mase[COMBINATION] < bt.mase["ses"]
    result = forecast_series("daily", y, season=24, horizon=24, models=("seasonal_naive", "ses"))
    assert "seasonal naive joined" in result.reason
    # where the models' combination wins, seasonal naive stays the yardstick only
    level = 10 + np.cumsum(rng.normal(0, 0.5, 24 * 28))
    bt, _ = backtest(clean(level, 24), season=24, horizon=24, origins=14, models=("seasonal_naive", "ses"))
    assert bt.mase[COMBINATION] <= bt.mase["seasonal_naive"] and list(bt.weights) == ["ses"]


@pytest.mark.parametrize(("vc", "trimmed"), [("vc8Sj", True), ("vc6YE", False)])
def test_the_trimmed_mean_is_used_only_where_it_beat_the_weighted_mean_on_the_backtest(
    vc: str, trimmed: bool
) -> None:
    """The members' backtest forecasts recomputed from outside: the combination is their weighted trimmed
    mean exactly where that scored at least 2 % under their weighted mean (vc8Sj in May), and its backtest
    MASE and the reason say which."""
    y = clean(helios_hourly(vc), 24)
    n = len(y.values)
    cuts, first = [n - (14 - i) * 24 for i in range(14)], n - 14 * 24
    bt, _ = backtest(y, 24, 24, 14)
    requests = [(c, 24) for c in cuts]
    paths = [Candidate(m, y.values[:first], 24).forecasts(y.values, requests) for m in bt.weights]

    def mase(trim: float) -> float:
        errors = []
        for i, c in enumerate(cuts):
            fc = combine([p[i] for p in paths], list(bt.weights.values()), trim)
            scale = mase_scale(y.values[:c], y.observed[:c], 24)
            errors.append(np.abs(fc.mean - y.values[c : c + 24])[y.observed[c : c + 24]].mean() / scale)
        return float(np.mean(errors))

    mean, trim = mase(0.0), mase(TRIM)
    assert (trim < TRIM_MARGIN * mean) is trimmed and bt.trim == (TRIM if trimmed else 0.0)
    assert bt.mase[COMBINATION] == pytest.approx(trim if trimmed else mean)
    result = forecast_series(vc, helios_hourly(vc), season=24, horizon=24)
    assert ("trimmed mean, the central 40 % of the weight" in result.reason) is trimmed
    assert _ordered(result.forecast)


def test_the_calibrated_intervals_cover_their_level_on_the_backtest() -> None:
    """Split-conformal: widened by its factor, each level covers at least that share of the backtest's
    scored hours (the factor is the smallest that does, within its range)."""
    y = clean(helios_hourly("vc8Sj"), 24)
    bt, _ = backtest(y, 24, 24, 14)
    n = len(y.values)
    cuts = [n - (14 - i) * 24 for i in range(14)]
    narrow = Forecast(np.full(24, 1.0), {lv: np.full(24, 0.9) for lv in (80, 95, 99)},
                      {lv: np.full(24, 1.1) for lv in (80, 95, 99)})  # fmt: skip
    factors = calibration([narrow] * 14, y, cuts, 24)
    assert all(wide >= narrow for wide, narrow in zip(factors[95], factors[80], strict=True))
    assert all(WIDENING_RANGE[0] <= f <= 3 for fs in factors.factors.values() for f in fs)
    wide = widen(narrow, factors)
    assert (wide.upper[95] >= wide.upper[80]).all() and (wide.lower[95] >= 0).all()
    exact = Forecast(np.full(24, 2.0), {lv: np.full(24, 1.0) for lv in (80, 95, 99)},
                     {lv: np.full(24, 3.0) for lv in (80, 95, 99)})  # fmt: skip
    flat = Cleaned(np.full(n, 2.0), np.ones(n, dtype=bool), [], 0)
    narrowest = WIDENING_RANGE[0]
    never_wrong = calibration([exact] * 14, flat, cuts, 24).factors
    assert never_wrong == dict.fromkeys((80, 95, 99), (narrowest, narrowest))
    assert bt.widening and bt.coverage80[COMBINATION] <= 1


@pytest.mark.parametrize("vc", ["vc6YE", "vcJLV", "vc8Sj"])
def test_the_best_single_model_is_never_worse_than_seasonal_naive_on_the_backtest(vc: str) -> None:
    result = forecast_series(vc, helios_hourly(vc), season=24, horizon=24, method="best")
    bt = result.backtest
    assert bt is not None and result.model in MODELS
    singles = {m: v for m, v in bt.mase.items() if m != COMBINATION}
    assert bt.mase[result.model] == min(singles.values()) <= bt.mase["seasonal_naive"]
    assert _ordered(result.forecast)
    with pytest.raises(ValueError, match="unknown method 'oracle'"):
        forecast_series(vc, helios_hourly(vc), season=24, horizon=24, method="oracle")


@pytest.mark.parametrize("model", MODELS)
def test_a_backtest_forecast_sees_nothing_after_its_origin(model: str) -> None:
    """One filtering pass serves every origin; each forecast (mean and intervals) must equal the one made
    from the history cut at that origin, so the backtest never looks ahead."""
    y = clean(helios_hourly("vcJLV"), 24).values
    origin = len(y) - 72
    candidate = Candidate(model, y[: origin - 96], 24)
    inside = candidate.forecasts(y, [(origin, 24)])[0]
    cut = candidate.forecasts(y[:origin], [(origin, 24)])[0]
    np.testing.assert_allclose(inside.mean, cut.mean, rtol=1e-9, atol=1e-9)
    for level in (80, 95, 99):
        np.testing.assert_allclose(inside.upper[level], cut.upper[level], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(inside.lower[level], cut.lower[level], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="whole horizon"):
        candidate.forecasts(y, [(len(y) - 10, 24)])


def test_the_median_levels_ignore_a_spike_and_follow_a_lasting_step() -> None:
    """A job that ran one hour is not the cluster's new level; seven hours at a new level are (for the
    median of 12: more than half its window). Bounds are the quantiles of the rule's own past errors."""
    rng = np.random.default_rng(7)
    base = 10 + rng.normal(0, 0.5, 24 * 6)
    spike = np.append(base, 50.0)
    step = np.append(base, np.full(7, 20.0))
    for name, k in (("median_3", 3), ("median_12", 12)):
        candidate = Candidate(name, base, 24)
        calm = candidate.forecasts(spike, [(len(spike), 30)])[0]
        np.testing.assert_allclose(calm.mean, np.median(spike[-k:]))
        assert abs(calm.mean[0] - 10) < 1.5 and _ordered(calm)
        assert len(calm.mean) == 30 and (calm.upper[95][24:] >= calm.upper[95][23]).all()
        moved = candidate.forecasts(step, [(len(step), 24)])[0]
        assert moved.mean[0] == 20.0
        # one step ahead, the 80 % bounds are the 10th and 90th percentiles of the rule's past errors
        levels = np.array([np.median(base[i : i + k]) for i in range(len(base) - k)])
        errors = base[k:] - levels
        at = candidate.forecasts(base, [(len(base), 1)])[0]
        level = np.median(base[-k:])
        assert at.lower[80][0] == pytest.approx(level + np.quantile(errors, 0.1))
        assert at.upper[80][0] == pytest.approx(level + np.quantile(errors, 0.9))
    with pytest.raises(ValueError, match="median_12 needs more than 12 steps"):
        Candidate("median_12", base[:12], 24)


def test_the_tuned_levels_choose_the_memory_with_the_least_day_ahead_error() -> None:
    """A random walk: the last values are the best forecast a day ahead (a short memory). Noise around a
    fixed level: the longest memory. Either way the choice has the least mean absolute error 1 to 24 steps
    ahead over the history, recomputed here step by step; a one-hour spike does not move the median."""
    rng = np.random.default_rng(11)
    walk = 100 + np.cumsum(rng.normal(0, 1, 24 * 20))
    noise = 10 + rng.normal(0, 1, 24 * 20)
    assert tune_level(walk, "ewm", 24) > 0.5 and tune_level(walk, "median", 24) <= 3
    assert tune_level(noise, "ewm", 24) < 0.05 and tune_level(noise, "median", 24) == max(MEDIAN_WINDOWS)

    def day_ahead_error(y: np.ndarray, alpha: float) -> float:
        level, levels = y[0], []
        for value in y:
            level = alpha * value + (1 - alpha) * level
            levels.append(level)
        return float(
            np.mean([abs(y[t + j] - levels[t]) for j in range(1, 25) for t in range(48, len(y) - j)])
        )

    mixed = 20 + np.cumsum(rng.normal(0, 0.2, 24 * 10)) + rng.normal(0, 1, 24 * 10)
    chosen = tune_level(mixed, "ewm", 24)
    assert 0.005 < chosen < 1
    assert day_ahead_error(mixed, chosen) <= min(day_ahead_error(mixed, a) for a in EWM_ALPHAS) + 1e-12
    spiked = np.append(noise, 60.0)
    calm = Candidate("median_mae", noise, 24).forecasts(spiked, [(len(spiked), 24)])[0]
    assert abs(calm.mean[0] - 10) < 0.5 and _ordered(calm)
    with pytest.raises(ValueError, match="at least 4 steps"):
        Candidate("ses_mae", noise[:3], 24)


def test_the_combination_averages_means_and_bounds() -> None:
    a = Forecast(np.array([1.0, 2.0]), {lv: np.array([0.0, 1.0]) for lv in (80, 95, 99)},
                 {lv: np.array([2.0, 3.0]) for lv in (80, 95, 99)})  # fmt: skip
    b = Forecast(np.array([3.0, 4.0]), {lv: np.array([2.0, 3.0]) for lv in (80, 95, 99)},
                 {lv: np.array([6.0, 5.0]) for lv in (80, 95, 99)})  # fmt: skip
    both = combine([a, b])
    np.testing.assert_allclose(both.mean, [2.0, 3.0])
    np.testing.assert_allclose(both.lower[95], [1.0, 2.0])
    np.testing.assert_allclose(both.upper[80], [4.0, 4.0])
    weighted = combine([a, b], [0.75, 0.25])
    np.testing.assert_allclose(weighted.mean, [1.5, 2.5])


def test_short_and_intermittent_histories_fall_back_and_say_so() -> None:
    short = forecast_series("short", helios_hourly("vcJLV")[:40], season=24, horizon=24)
    assert short.model == "seasonal_naive" and short.reason.startswith("fallback: short history (40 steps")
    tiny = forecast_series("tiny", np.array([1.0, 2.0, 0.0]), season=24, horizon=5)
    assert tiny.model == "croston_sba" and "< 1 season" in tiny.reason and len(tiny.forecast.mean) == 5
    intermittent = forecast_series("lora", lora_customer_hourly(), season=24, horizon=24)
    assert intermittent.model == INTERMITTENT and intermittent.reason.startswith("intermittent (")
    assert intermittent.backtest is None and intermittent.forecast.mean.sum() > 0
    assert (intermittent.forecast.mean >= 0).all() and _ordered(intermittent.forecast)


def test_coverage_counts_only_scored_points_across_origins() -> None:
    """A perfectly periodic history gives seasonal naive zero-width intervals: exactly the points changed
    in the last window fall outside, and missing points are not scored."""
    y = np.tile(10.0 + np.arange(24), 4)  # 96 hours; origins at 48 and 72
    y[72:78] += 3.0  # six changed points in the last window...
    y[72:76] = np.nan  # ...four of which are missing
    result, _ = backtest(clean(y, 24), season=24, horizon=24, origins=2, models=("seasonal_naive",))
    assert result.coverage80["seasonal_naive"] == pytest.approx(42 / 44)  # 24 + 18 inside, 44 scored
    assert result.coverage95["seasonal_naive"] == pytest.approx(42 / 44)


def test_many_series_on_two_processes_keep_their_order() -> None:
    jobs = [SeriesJob(vc, helios_hourly(vc), 24, 24) for vc in ("vc6YE", "vcJLV", "vc8Sj")]
    jobs.append(SeriesJob("vc6YE-copy", jobs[0].values, 24, 24))
    results = forecast_many(jobs, workers=2)
    assert [r.key for r in results] == ["vc6YE", "vcJLV", "vc8Sj", "vc6YE-copy"]
    assert results[0].model == results[3].model
    np.testing.assert_allclose(results[0].forecast.mean, results[3].forecast.mean)
