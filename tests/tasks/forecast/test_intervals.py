"""Interval calibration (tasks/forecast/intervals.py): split-conformal on the backtest, the zero floor, the
recency weights, the intermittent rule's calibration, and one BLAS thread per forecast."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from tasks.forecast import models
from tasks.forecast.intervals import (
    HALF_LIFE,
    LEAD_BANDS,
    WIDENING_RANGE,
    Widening,
    calibration,
    conformal_share,
    widen,
)
from tasks.forecast.models import INTERMITTENT, Cleaned, Forecast, forecast_series, intermittent
from tasks.forecast.rules import LEVELS


def _flat(mean: float, half: float, n: int = 24) -> Forecast:
    return Forecast(
        np.full(n, mean),
        {lv: np.full(n, max(mean - half, 0.0)) for lv in LEVELS},
        {lv: np.full(n, mean + half) for lv in LEVELS},
    )


def test_a_lower_bound_at_zero_stays_at_zero_and_the_levels_stay_nested() -> None:
    fc = Forecast(
        np.array([1.0, 5.0]),
        {80: np.array([0.0, 4.0]), 95: np.array([0.0, 3.0]), 99: np.array([0.0, 2.0])},
        {80: np.array([2.0, 6.0]), 95: np.array([3.0, 7.0]), 99: np.array([4.0, 8.0])},
    )
    narrowed = widen(fc, Widening.uniform({80: 0.5, 95: 0.5, 99: 0.5}))
    assert narrowed.lower[80][0] == 0.0, "narrowing must not lift a bound off zero: idle hours sit there"
    assert narrowed.lower[80][1] == pytest.approx(4.5) and narrowed.upper[80][1] == pytest.approx(5.5)
    # a narrower factor on a wider level never leaves it inside the narrower level's interval
    crossed = widen(fc, Widening.uniform({80: 3.0, 95: 0.5, 99: 0.5}))
    assert (crossed.upper[95] >= crossed.upper[80]).all() and (crossed.upper[99] >= crossed.upper[95]).all()
    assert (crossed.lower[95] <= crossed.lower[80]).all() and (crossed.lower[80] >= 0).all()


def test_idle_hours_under_a_zero_lower_bound_are_covered_whatever_the_factor() -> None:
    """A customer idle 22 hours a day: forecast 1 with bounds [0, 2]. Only the two busy hours can miss, so
    the 80 % factor is decided by them alone and the interval is not widened for the idle hours."""
    n, cuts = 24 * 20, [24 * (6 + i) for i in range(14)]
    y = np.zeros(n)
    y[10::24], y[11::24] = 1.5, 1.8  # the busy hours: inside [0, 2]
    cleaned = Cleaned(y, np.ones(n, dtype=bool), [], 0)
    factors = calibration([_flat(1.0, 1.0)] * 14, cleaned, cuts, 24)
    narrowest = WIDENING_RANGE[0]
    assert set(factors[80]) == {narrowest}, "nothing missed even at the narrowest"
    # at 95 % the busy hours are more than the tail of their band: the factor they need (0.8), no more
    assert max(factors[95]) == pytest.approx(0.8)


def test_the_later_origins_count_more() -> None:
    """The same errors on 4 of the 14 origins (29 % of the hours, more than the 80 % interval's tail),
    first or last: the interval follows the recent days (an origin HALF_LIFE days older counts half), so
    errors that have died away narrow it and errors that began widen it."""
    n, cuts = 24 * 20, [24 * (6 + i) for i in range(14)]
    early, late = np.full(n, 10.0), np.full(n, 10.0)
    rng = np.random.default_rng(0)
    noise = rng.choice([-1, 1], n) * rng.uniform(1.5, 2.5, n)  # outside a half-width of 1
    early[cuts[0] : cuts[4]] += noise[cuts[0] : cuts[4]]
    late[cuts[10] : cuts[-1] + 24] += noise[cuts[10] : cuts[-1] + 24]
    observed = np.ones(n, dtype=bool)
    forecasts = [_flat(10.0, 1.0)] * 14
    after_early = calibration(forecasts, Cleaned(early, observed, [], 0), cuts, 24)
    after_late = calibration(forecasts, Cleaned(late, observed, [], 0), cuts, 24)
    assert HALF_LIFE == 7
    assert min(after_late[80]) > 1.5 and set(after_early[80]) == {WIDENING_RANGE[0]}, (
        after_late,
        after_early,
    )


def test_the_first_hours_ahead_and_the_rest_are_calibrated_apart() -> None:
    """A level that holds for the first hours and wanders later (the pods' staircases): one factor would
    leave the next hours too wide and the end of the day too narrow. Each band gets the factor its own hours
    needed; past the calibrated horizon the last band's holds."""
    n, cuts = 24 * 20, [24 * (6 + i) for i in range(14)]
    (edge,) = LEAD_BANDS
    y = np.full(n, 10.0)
    rng = np.random.default_rng(1)
    for cut in cuts:
        y[cut + edge : cut + 24] += rng.choice([-1, 1], 24 - edge) * rng.uniform(1.5, 2.5, 24 - edge)
    cleaned = Cleaned(y, np.ones(n, dtype=bool), [], 0)
    factors = calibration([_flat(10.0, 1.0)] * 14, cleaned, cuts, 24)
    assert factors.edges == (edge,)
    assert factors[80][0] == WIDENING_RANGE[0] and factors[80][1] > 1.5
    wide = widen(_flat(10.0, 1.0, n=30), factors)
    assert wide.upper[80][edge - 1] == pytest.approx(10 + WIDENING_RANGE[0])
    assert wide.upper[80][edge] == wide.upper[80][29] == pytest.approx(10 + factors[80][1])
    pooled = calibration([_flat(10.0, 1.0)] * 14, cleaned, cuts, 24, edges=())
    assert len(pooled[80]) == 1 and WIDENING_RANGE[0] < pooled[80][0] < factors[80][1]


def test_the_factor_covers_the_conformal_share_of_the_calibration_hours() -> None:
    """Split conformal's finite-sample correction: to cover 80 % of the next hour, the factor must have
    covered ceil(0.8 (n + 1)) of n calibration hours. Ten hours missed by 0.1 to 1.0 half-widths: the plain
    80th percentile (0.8) would leave the next hour short; the corrected factor is 0.9."""
    assert conformal_share(80, 10) == pytest.approx(0.9) and conformal_share(80, 84) == pytest.approx(68 / 84)
    assert conformal_share(99, 10) == 1.0 and conformal_share(80, 4) == 1.0
    y = np.full(24, 10.0)
    y[:10] += np.arange(1, 11) / 10  # one origin, ten scored hours, all in the first band
    observed = np.zeros(24, dtype=bool)
    observed[:10] = True
    factors = calibration(
        [_flat(10.0, 1.0)], Cleaned(y, observed, [], 0), [0], 24, bounds=(0.0, 3.0), edges=()
    )
    assert factors[80] == pytest.approx((0.9,))


def _sporadic_customer(days: int = 28, seed: int = 5) -> np.ndarray:
    """Busy an hour or two at a time, on most days, at hours that wander: most hours are zero."""
    rng = np.random.default_rng(seed)
    y = np.zeros(24 * days)
    for day in range(days):
        if rng.random() < 0.8:
            start = day * 24 + int(rng.integers(8, 20))
            y[start : start + int(rng.integers(1, 3))] = rng.uniform(0.5, 4.0)
    return y


def test_an_intermittent_customer_s_intervals_are_calibrated_on_its_own_rule() -> None:
    """The rule's raw bounds (seasonal naive's normal spread) cover nearly every hour of a customer idle
    nineteen hours in twenty; calibrated on the rule's last 14 daily origins, the 80 % upper bound comes
    down, lower bounds at zero stay there, and the rule's own backtest is still covered at the level."""
    y = _sporadic_customer()
    result = forecast_series("customer", y, season=24, horizon=24)
    assert result.model == INTERMITTENT
    assert result.reason.endswith("intervals calibrated on 14 daily origins")
    raw = intermittent(y, 24, 24)
    fc = result.forecast
    np.testing.assert_allclose(fc.mean, raw.mean)
    assert (fc.lower[80][raw.lower[80] == 0] == 0).all(), "a lower bound at zero stays there"
    assert fc.upper[80].sum() < raw.upper[80].sum() and (fc.upper[80] >= fc.mean).all()
    cuts = [len(y) - (14 - i) * 24 for i in range(14)]
    factors = calibration(
        [intermittent(y[:c], 24, 24) for c in cuts], Cleaned(y, np.ones(len(y), dtype=bool), [], 0), cuts, 24,
        bounds=(0.0, 3.0), edges=(),
    )  # fmt: skip
    past = [widen(intermittent(y[:c], 24, 24), factors) for c in cuts]
    inside = [
        ((f.lower[80] <= y[c : c + 24]) & (y[c : c + 24] <= f.upper[80])).mean()
        for c, f in zip(cuts, past, strict=True)
    ]
    assert np.mean(inside) >= 0.8


def test_a_forecast_runs_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The models' matrices are tiny: more BLAS threads only spin, and the batch runs a process per core."""
    seen: list[int] = []
    real = models._modelled

    def watching(*args: object, **kwargs: object) -> object:
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "_modelled", watching)
    forecast_series("x", np.tile(np.arange(24.0), 3), season=24, horizon=24)
    assert seen and set(seen) == {1}
