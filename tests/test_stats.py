"""Tests of bupo_core.stats against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from bupo_core.stats import compare_to_control, mean_se, min_p_value, paired_differences, sign_flip_test


def test_mean_se_by_hand():
    # values 0.2, 0.4, 0.9: mean 0.5, deviations -0.3 -0.1 0.4, sum of squares 0.26, var 0.13
    m, se = mean_se([0.2, 0.4, 0.9])
    assert m == pytest.approx(0.5)
    assert se == pytest.approx(math.sqrt(0.13 / 3))
    assert mean_se([0.7]) == (0.7, None)
    with pytest.raises(ValueError):
        mean_se([])


def test_paired_differences_use_common_seeds_only():
    assert paired_differences({1: 0.5, 2: 0.25, 7: 0.0}, {2: 0.5, 1: 0.25, 3: 1.0}) == {1: 0.25, 2: -0.25}


def test_sign_flip_exact_by_hand():
    # d = (1, -2, 4): sum 3. Sign patterns give sums +-1 +-2 +-4: {7, -1, 3, -5, 5, -3, 1, -7}
    # |sum| >= 3 for 7, 3, 5, 5(-5), 3(-3), 7(-7) -> 6 of 8
    assert sign_flip_test([1.0, -2.0, 4.0]) == pytest.approx(6 / 8)
    # all differences of one sign and equal size: only the two all-same patterns reach it
    assert sign_flip_test([0.1] * 5) == pytest.approx(2 / 32)
    assert sign_flip_test([-0.1] * 5) == pytest.approx(2 / 32)
    assert sign_flip_test([0.0, 0.0]) == 1.0
    assert sign_flip_test([]) == 1.0
    assert min_p_value(5) == 2 / 32 and min_p_value(3) == 0.25


def test_sign_flip_monte_carlo_matches_exact_and_is_seeded():
    d = [0.3, 0.1, -0.05, 0.2, 0.15, 0.25, -0.1, 0.05, 0.3, 0.2]
    exact = sign_flip_test(d)
    mc = sign_flip_test(d, exact_max_n=4, resamples=20_000, seed=1)
    assert mc == sign_flip_test(d, exact_max_n=4, resamples=20_000, seed=1)
    assert abs(mc - exact) < 0.01
    assert 0 < exact < 0.05


def test_compare_to_control_by_hand():
    arm = {0: 0.50, 1: 0.25, 2: 0.75}
    ctl = {0: 0.25, 1: 0.25, 2: 0.25}
    r = compare_to_control(arm, ctl)
    # diffs 0.25, 0, 0.5: mean 0.25, sd 0.25, se 0.25/sqrt(3)
    assert r["diff_mean"] == pytest.approx(0.25)
    assert r["se"] == pytest.approx(0.25 / math.sqrt(3))
    # sums over signs of (0.25, 0, 0.5): |+-0.25 +-0.5| in {0.75, 0.25}; 0.75 reached by 4 of 8
    assert r["p_value"] == pytest.approx(0.5)
    assert r["per_seed"] == [[0, 0.25], [1, 0.0], [2, 0.5]]
    assert compare_to_control({0: 1.0}, {1: 1.0})["diff_mean"] is None
