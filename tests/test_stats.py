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


# ----------------------------------------------------------------------------- issue 20: r, unpaired test, power
from bupo_core.stats import (  # noqa: E402
    correlation,
    detectable_difference,
    label_permutation_test,
    min_p_value_unpaired,
    seeds_needed,
    t_cdf,
    t_quantile,
)


def test_correlation_by_hand():
    # x = 1, 2, 3; y = 2, 4, 7: deviations (-1, 0, 1) and (-7/3, -1/3, 8/3); sxy = 5, sxx = 2, syy = 114/9
    assert correlation({0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 1: 4.0, 2: 7.0}) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert correlation({0: 1.0, 1: 2.0, 2: 3.0}, {0: 3.0, 1: 2.0, 2: 1.0}) == pytest.approx(-1.0)
    assert correlation({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}) is None  # fewer than 3 seeds
    assert correlation({0: 1.0, 1: 1.0, 2: 1.0}, {0: 1.0, 1: 2.0, 2: 3.0}) is None  # no variation
    assert correlation({0: 1.0, 1: 2.0, 2: 3.0, 9: 5.0}, {0: 1.0, 1: 2.0, 2: 3.0}) == pytest.approx(
        1.0
    )  # common seeds only


def test_label_permutation_exact_by_hand():
    # pool (1, 2, 3, 4), arm = {1, 2}: mean gap |1.5 - 3.5| = 2; of the 6 splits only {1,2} and {3,4} reach 2
    assert label_permutation_test([1.0, 2.0], [3.0, 4.0]) == pytest.approx(2 / 6)
    assert label_permutation_test([5.0, 6.0, 7.0], [1.0, 2.0, 3.0]) == pytest.approx(2 / 20) == min_p_value_unpaired(3)
    assert label_permutation_test([1.0, 1.0], [1.0, 1.0]) == 1.0 and label_permutation_test([], [1.0]) == 1.0
    assert min_p_value_unpaired(4) == pytest.approx(2 / 70)


def test_label_permutation_monte_carlo_matches_exact_and_is_seeded():
    a = [0.31, 0.22, 0.40, 0.35, 0.28, 0.33, 0.37]
    c = [0.20, 0.25, 0.18, 0.30, 0.21, 0.27, 0.24]
    exact = label_permutation_test(a, c)  # C(14, 7) = 3432 splits, enumerated
    mc = label_permutation_test(a, c, exact_max_splits=10, resamples=20_000, seed=3)
    assert mc == label_permutation_test(a, c, exact_max_splits=10, resamples=20_000, seed=3)
    # Monte Carlo SE of a p near 0.005 over 20,000 draws is about 0.0005
    assert abs(mc - exact) < 0.003 and exact < 0.05


def test_t_distribution_against_tabulated_values():
    # textbook t tables: t_{0.975, 10} = 2.228, t_{0.975, 24} = 2.064, t_{0.8, 5} = 0.920; df = 1 is Cauchy
    assert t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-4)
    assert t_quantile(0.975, 24) == pytest.approx(2.0639, abs=1e-4)
    assert t_quantile(0.8, 5) == pytest.approx(0.9195, abs=1e-4)
    assert t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)  # Cauchy: 1/2 + atan(1)/pi
    assert t_quantile(0.025, 10) == pytest.approx(-t_quantile(0.975, 10))


def test_detectable_difference_and_seeds_needed():
    # paired: (t_{.975,24} + t_{.8,24}) * 0.051 / 5 = (2.0639 + 0.8569) * 0.0102
    assert detectable_difference(0.051, 25) == pytest.approx((2.0639 + 0.8569) * 0.051 / 5, rel=1e-4)
    # unpaired: df 2n - 2, SE = sd / sqrt(n) with sd = sqrt(Var A + Var C)
    assert detectable_difference(0.07, 8, paired=False) == pytest.approx(
        (t_quantile(0.975, 14) + t_quantile(0.8, 14)) * 0.07 / math.sqrt(8)
    )
    assert (
        detectable_difference(0.05, 5) is None and detectable_difference(0.05, 6) is not None
    )  # sign-flip floor 2/2^n
    assert (
        detectable_difference(0.05, 3, paired=False) is None
        and detectable_difference(0.05, 4, paired=False) is not None
    )
    assert detectable_difference(None, 10) is None
    n = seeds_needed(0.051, 0.03)
    assert detectable_difference(0.051, n) <= 0.03 < detectable_difference(0.051, n - 1)
    assert seeds_needed(0.051, 0.03, minimum=40) == 40
    # issue 20's figures: main's 8 pairs at paired SD 0.0806 detect about 0.093; the paper's effect needs about 650 pairs
    assert detectable_difference(0.0806, 8) == pytest.approx(0.093, abs=0.001)
    assert 600 <= seeds_needed(0.0806, 0.0089) <= 700
    with pytest.raises(ValueError):
        seeds_needed(0.05, 0.0)


def test_compare_to_control_reports_both_tests_and_r():
    arm = {0: 0.30, 1: 0.10, 2: 0.25, 3: 0.05}
    ctl = {0: 0.20, 1: 0.15, 2: 0.10, 3: 0.12, 4: 0.90}  # seed 4 has no pair: left out everywhere
    r = compare_to_control(arm, ctl)
    seeds = [0, 1, 2, 3]
    a, c = [arm[s] for s in seeds], [ctl[s] for s in seeds]
    assert r["n_pairs"] == 4 and r["control_mean"] == pytest.approx(sum(c) / 4)
    assert r["p_value_unpaired"] == pytest.approx(label_permutation_test(a, c))
    assert r["correlation"] == pytest.approx(correlation(arm, ctl))
    var = lambda xs: sum((x - sum(xs) / len(xs)) ** 2 for x in xs) / (len(xs) - 1)  # noqa: E731
    assert r["sd_unpaired"] == pytest.approx(math.sqrt(var(a) + var(c)))
    assert r["supported_test"] == ("paired" if r["correlation"] > 0 else "unpaired")
    assert r["detectable_diff"] is None  # 4 pairs: the sign-flip test cannot reach p < 0.05
    assert r["detectable_diff_unpaired"] == pytest.approx(detectable_difference(r["sd_unpaired"], 4, paired=False))
    # pairing helps exactly when r > 0: the paired SD is below the unpaired one
    assert (r["sd_paired"] < r["sd_unpaired"]) == (r["correlation"] > 0)
