"""The members' weighted and trimmed means (tasks/forecast/combining.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.forecast.combining import combine, trimmed_mean
from tasks.forecast.rules import LEVELS, Forecast


def test_no_trim_is_the_weighted_mean() -> None:
    rng = np.random.default_rng(1)
    values, weights = rng.normal(size=(6, 24)), rng.uniform(0.1, 1, 6)
    expected = np.average(values, axis=0, weights=weights)
    np.testing.assert_allclose(trimmed_mean(values, weights, 0.0), expected)


def test_equal_weights_keep_the_central_members_of_each_step() -> None:
    values = np.array([[1.0, 50.0], [2.0, 4.0], [3.0, 3.0], [4.0, 2.0], [50.0, 1.0]])
    np.testing.assert_allclose(trimmed_mean(values, np.ones(5), 0.2), [3.0, 3.0])


def test_a_member_straddling_a_cut_counts_in_part() -> None:
    # weight 0.5 at 0 keeps its mass from 0.3 to 0.5, 0.3 at 10 from 0.5 to 0.7, 0.2 at 20 none
    assert trimmed_mean(np.array([[0.0], [10.0], [20.0]]), np.array([5, 3, 2]), 0.3)[0] == pytest.approx(5.0)


def test_an_outlying_member_is_left_out_where_the_mean_follows_it() -> None:
    values = np.array([[1.0], [1.1], [0.9], [50.0]])
    assert 0.9 <= trimmed_mean(values, np.ones(4), 0.3)[0] <= 1.1
    assert np.average(values[:, 0]) > 10


def test_trimmed_bounds_stay_around_the_trimmed_mean() -> None:
    """Monotone in every member: members' lower bounds under their means give a trimmed lower bound under
    the trimmed mean, though each step ranks the members differently."""
    rng = np.random.default_rng(7)
    members = []
    for _ in range(8):
        mean = rng.gamma(2, 3, 24)
        spread = {lv: rng.uniform(0, 1, 24) * lv / 40 for lv in LEVELS}
        lower = {lv: np.maximum(mean - s, 0) for lv, s in spread.items()}
        upper = {lv: mean + s * rng.uniform(0.5, 2, 24) for lv, s in spread.items()}
        members.append(Forecast(mean, lower, upper))
    combined = combine(members, rng.uniform(0.01, 1, 8), trim=0.3)
    for lv in LEVELS:
        assert (combined.lower[lv] <= combined.mean + 1e-12).all()
        assert (combined.upper[lv] >= combined.mean - 1e-12).all()
    low, high = np.min([m.mean for m in members], axis=0), np.max([m.mean for m in members], axis=0)
    assert ((low <= combined.mean) & (combined.mean <= high)).all()


@pytest.mark.parametrize("trim", [-0.1, 0.5, 0.7])
def test_a_trim_outside_the_range_is_refused(trim: float) -> None:
    with pytest.raises(ValueError, match=r"trim must be in \[0, 0.5\)"):
        trimmed_mean(np.ones((3, 2)), np.ones(3), trim)
