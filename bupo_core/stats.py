"""Statistics across training seeds: means, paired and unpaired tests, correlation, power.

A sweep trains every arm with the same seeds; a seed fixes the training prompts, the sampling
draws and the evaluation problems, so an arm's result at seed ``s`` and the control's at seed
``s`` form a *pair*. Whether pairing helps is an empirical question: the paired difference removes
the variation the two cells share, and only that. With a correlation ``r`` between arm and control
across seeds, ``Var(arm - control) = Var(arm) + Var(control) - 2 r SD(arm) SD(control)``: pairing
shrinks the variance when ``r > 0`` and *inflates* it when ``r < 0``. At this scale training
diverges chaotically after a few steps, so ``r`` is small and can be negative (``results/main``:
``r = -0.48`` for ``bupo_l5`` vs ``grpo``, paired SD 0.081 against 0.066 unpaired; ``results/long``:
``r = +0.55``). Every comparison therefore reports both tests and the correlation, and says which
test the data support (:func:`compare_to_control`).

* :func:`mean_se`: mean and standard error ``sd / sqrt(n)`` (sample sd, ``ddof=1``).
* :func:`paired_differences`: ``arm[s] - control[s]`` over the seeds both have.
* :func:`sign_flip_test`: the paired permutation test. Under the null hypothesis "the arm and the
  control are exchangeable", each difference is as likely to have either sign; the p-value is the
  share of the ``2^n`` sign assignments whose ``|mean|`` is at least the observed ``|mean|``
  (two-sided). Exact enumeration up to :data:`EXACT_MAX_N` pairs, seeded Monte Carlo beyond. With
  ``n`` pairs the smallest possible exact p-value is ``2 / 2^n`` (0.0625 for 5 seeds, 0.25 for 3),
  so 3 seeds can never give p < 0.05: they show direction and size, not significance.
* :func:`label_permutation_test`: the unpaired test: the arm and control labels of the ``2n``
  results are permuted (pairing ignored); valid whatever the correlation. Smallest p-value
  ``2 / C(2n, n)`` (0.1 for 3 seeds per arm, 0.029 for 4).
* :func:`correlation`: Pearson correlation of arm and control across their common seeds.
* :func:`detectable_difference` and :func:`seeds_needed`: power stated before a run. The smallest
  true difference a test at level ``alpha`` detects with probability ``power`` is
  ``(t_{1-alpha/2, df} + t_{power, df}) * SE``, ``SE = sd / sqrt(n)`` (paired: ``sd`` of the
  differences, ``df = n - 1``; unpaired: ``sd = sqrt(Var(arm) + Var(control))``, ``df = 2n - 2``),
  and ``None`` when ``n`` seeds cannot give the permutation test a p-value below ``alpha`` at all.

All functions are pure (lists of floats in, floats out).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence

import numpy as np

EXACT_MAX_N = 16
EXACT_MAX_SPLITS = 20_000  # label_permutation_test enumerates every split up to this many
ALPHA = 0.05
POWER = 0.8


def mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (``None`` for fewer than 2 values).

    >>> m, se = mean_se([1.0, 2.0, 3.0]); m, round(se, 6)
    (2.0, 0.57735)
    >>> mean_se([4.0])
    (4.0, None)
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_se needs at least one value")
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def paired_differences(arm: Mapping[int, float], control: Mapping[int, float]) -> dict[int, float]:
    """``arm[s] - control[s]`` for every seed ``s`` present in both, in seed order.

    >>> paired_differences({0: 0.5, 1: 0.25, 2: 1.0}, {0: 0.25, 1: 0.5})
    {0: 0.25, 1: -0.25}
    """
    return {s: float(arm[s]) - float(control[s]) for s in sorted(set(arm) & set(control))}


def sign_flip_test(
    diffs: Sequence[float], *, exact_max_n: int = EXACT_MAX_N, resamples: int = 20_000, seed: int = 0
) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of ``mean(diffs) = 0``.

    Args:
        diffs: paired differences (one per seed).
        exact_max_n: enumerate all ``2^n`` sign assignments when ``n <= exact_max_n``.
        resamples: Monte Carlo draws otherwise; the p-value is ``(1 + hits) / (1 + resamples)``.
        seed: seed of the Monte Carlo draws.

    Returns:
        The p-value in (0, 1]; 1.0 when every difference is 0 or there are none.

    >>> sign_flip_test([1.0, 2.0, 3.0])  # sums 6 and -6 of 8 reach |6|
    0.25
    >>> sign_flip_test([1.0, 1.0, 1.0, 1.0, 1.0])
    0.0625
    """
    d = [float(x) for x in diffs]
    n = len(d)
    if n == 0 or all(x == 0 for x in d):
        return 1.0
    observed = abs(sum(d))
    tol = 1e-12 * max(1.0, sum(abs(x) for x in d))
    if n <= exact_max_n:
        hits = 0
        for signs in itertools.product((1.0, -1.0), repeat=n):
            if abs(sum(s * x for s, x in zip(signs, d))) >= observed - tol:
                hits += 1
        return hits / 2**n
    rng = random.Random(seed)
    hits = 0
    for _ in range(resamples):
        if abs(sum(x if rng.random() < 0.5 else -x for x in d)) >= observed - tol:
            hits += 1
    return (1 + hits) / (1 + resamples)


def _sd(xs: Sequence[float]) -> float | None:
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def correlation(arm: Mapping[int, float], control: Mapping[int, float]) -> float | None:
    """Pearson correlation of ``arm[s]`` and ``control[s]`` across their common seeds.

    ``None`` with fewer than 3 common seeds or when either side does not vary. Positive: the seed
    moves both cells the same way and pairing removes variance; negative: pairing adds variance.

    >>> round(correlation({0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 1: 4.0, 2: 7.0}), 4)
    0.9934
    >>> correlation({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}) is None
    True
    """
    seeds = sorted(set(arm) & set(control))
    if len(seeds) < 3:
        return None
    a = [float(arm[s]) for s in seeds]
    c = [float(control[s]) for s in seeds]
    ma, mc = sum(a) / len(a), sum(c) / len(c)
    saa = sum((x - ma) ** 2 for x in a)
    scc = sum((y - mc) ** 2 for y in c)
    if saa <= 0 or scc <= 0:
        return None
    return sum((x - ma) * (y - mc) for x, y in zip(a, c)) / math.sqrt(saa * scc)


def label_permutation_test(
    arm: Sequence[float],
    control: Sequence[float],
    *,
    exact_max_splits: int = EXACT_MAX_SPLITS,
    resamples: int = 20_000,
    seed: int = 0,
) -> float:
    """Two-sided p-value of the unpaired permutation test of ``mean(arm) = mean(control)``.

    The ``len(arm) + len(control)`` values are pooled; every way of labelling ``len(arm)`` of them
    "arm" is equally likely under the null hypothesis. The p-value is the share of labellings whose
    ``|mean(arm) - mean(control)|`` reaches the observed one: exact when there are at most
    ``exact_max_splits`` labellings, else ``(1 + hits) / (1 + resamples)`` over seeded random ones.
    1.0 when a side is empty or every value is equal.

    >>> label_permutation_test([1.0, 2.0], [3.0, 4.0])  # 6 splits; {1,2} and {3,4} reach |-2|
    0.3333333333333333
    >>> label_permutation_test([5.0, 6.0, 7.0], [1.0, 2.0, 3.0])  # 2 of C(6, 3) = 20
    0.1
    """
    a = [float(x) for x in arm]
    c = [float(x) for x in control]
    if not a or not c:
        return 1.0
    pool = a + c
    if max(pool) == min(pool):
        return 1.0
    n, total = len(a), sum(pool)
    n_c = len(pool) - n

    def gap(sum_arm: float) -> float:
        return abs(sum_arm / n - (total - sum_arm) / n_c)

    observed = gap(sum(a))
    tol = 1e-12 * max(1.0, sum(abs(x) for x in pool))
    if math.comb(len(pool), n) <= exact_max_splits:
        hits = count = 0
        for idx in itertools.combinations(range(len(pool)), n):
            count += 1
            hits += gap(sum(pool[i] for i in idx)) >= observed - tol
        return hits / count

    rng = np.random.default_rng(seed)
    values = np.asarray(pool, dtype=float)
    sums = np.empty(resamples)
    for start in range(0, resamples, 4096):  # blocks bound the memory of the permutation matrix
        rows = min(4096, resamples - start)
        perm = rng.permuted(np.tile(values, (rows, 1)), axis=1)
        sums[start : start + rows] = perm[:, :n].sum(axis=1)
    hits = int(np.sum(np.abs(sums / n - (total - sums) / n_c) >= observed - tol))
    return (1 + hits) / (1 + resamples)


def min_p_value_unpaired(n_arm: int, n_control: int | None = None) -> float:
    """Smallest two-sided p-value :func:`label_permutation_test` can give (``2 / C(n_a + n_c, n_a)`` for equal sizes).

    >>> min_p_value_unpaired(3), round(min_p_value_unpaired(4), 4)
    (0.1, 0.0286)
    """
    n_c = n_arm if n_control is None else n_control
    if n_arm < 1 or n_c < 1:
        return 1.0
    k = math.comb(n_arm + n_c, n_arm)
    return min(1.0, (2.0 if n_arm == n_c else 1.0) / k)


# ----------------------------------------------------------------------------- power
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom.

    >>> round(t_cdf(2.0, 10), 6), t_cdf(0.0, 3)
    (0.963306, 0.5)
    """
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Inverse of :func:`t_cdf` (bisection to 1e-12).

    >>> round(t_quantile(0.975, 10), 4), round(t_quantile(0.8, 24), 4)
    (2.2281, 0.8569)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def detectable_difference(
    sd: float | None, n: int, *, paired: bool = True, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """Smallest true difference a two-sided test at level ``alpha`` detects with probability ``power``.

    Args:
        sd: paired: the SD of the per-seed differences; unpaired: ``sqrt(Var(arm) + Var(control))``.
        n: seeds per arm (= pairs).
        paired: the sign-flip (paired) design, else the label-permutation (unpaired) one.

    Returns:
        ``(t_{1-alpha/2, df} + t_{power, df}) * sd / sqrt(n)`` (``df = n - 1`` paired, ``2n - 2``
        unpaired): the t-test's minimum detectable difference, which the permutation tests match
        closely for ``n`` beyond a handful. ``None`` without an ``sd``, with fewer than 2 seeds, or
        when ``n`` seeds cannot give that permutation test a p-value below ``alpha``
        (:func:`min_p_value`, :func:`min_p_value_unpaired`).

    >>> round(detectable_difference(0.051, 25), 4)  # results/long's paired SD, 25 pairs
    0.0298
    >>> detectable_difference(0.05, 3) is None  # 3 pairs: the sign-flip test never reaches p < 0.05
    True
    """
    if sd is None or n < 2 or math.isnan(sd):
        return None
    floor = min_p_value(n) if paired else min_p_value_unpaired(n)
    if floor >= alpha:
        return None
    df = n - 1 if paired else 2 * n - 2
    return (t_quantile(1.0 - alpha / 2.0, df) + t_quantile(power, df)) * sd / math.sqrt(n)


def seeds_needed(
    sd: float,
    target: float,
    *,
    paired: bool = True,
    alpha: float = ALPHA,
    power: float = POWER,
    minimum: int = 2,
    maximum: int = 100_000,
) -> int:
    """Fewest seeds per arm at which :func:`detectable_difference` is at most ``target``.

    >>> seeds_needed(0.051, 0.03)  # results/long's paired SD, a 0.03 Avg@8 difference
    25
    >>> seeds_needed(0.051, 0.03, minimum=30)
    30
    """
    if target <= 0 or sd is None or sd < 0:
        raise ValueError(f"need a target difference > 0 and an sd >= 0, got target={target}, sd={sd}")
    n = max(2, minimum)
    while n <= maximum:
        d = detectable_difference(sd, n, paired=paired, alpha=alpha, power=power)
        if d is not None and d <= target:
            return n
        n += 1
    raise ValueError(f"more than {maximum} seeds would be needed to detect {target} with sd {sd}")


def compare_to_control(
    arm: Mapping[int, float], control: Mapping[int, float], *, alpha: float = ALPHA, power: float = POWER, **kwargs
) -> dict:
    """Comparison of one metric over the seeds both sides have.

    Returns ``{"diff_mean", "se", "p_value", "n_pairs", "per_seed", "p_value_unpaired", "correlation",
    "sd_paired", "sd_unpaired", "supported_test", "detectable_diff", "detectable_diff_unpaired",
    "control_mean"}``:

    * ``diff_mean``, ``se``: mean and SE of the paired differences ``arm[s] - control[s]``;
    * ``p_value``: the paired sign-flip test (:func:`sign_flip_test`; the sweeps' verdicts use it);
    * ``p_value_unpaired``: the label-permutation test on the same seeds (:func:`label_permutation_test`);
    * ``correlation``: of arm and control across the seeds (:func:`correlation`);
    * ``sd_paired``: SD of the differences; ``sd_unpaired``: ``sqrt(Var(arm) + Var(control))``, what
      the SD of the differences would be without the pairing;
    * ``supported_test``: ``"paired"`` when the correlation is positive (pairing removed variance),
      ``"unpaired"`` when it is zero or negative (pairing added variance), ``None`` below 3 seeds;
    * ``detectable_diff``: :func:`detectable_difference` of the paired test at these seeds and this
      SD (``None`` when the seeds cannot resolve anything); ``detectable_diff_unpaired`` likewise;
    * ``control_mean``: the control's mean over these same seeds;
    * ``per_seed``: ``[seed, difference]`` pairs.

    With no common seed every number is ``None``.

    >>> r = compare_to_control({0: 0.5, 1: 0.75}, {0: 0.25, 1: 0.25})
    >>> r["diff_mean"], round(r["se"], 4), r["p_value"], r["n_pairs"], r["control_mean"]
    (0.375, 0.125, 0.5, 2, 0.25)
    """
    diffs = paired_differences(arm, control)
    if not diffs:
        return {
            "diff_mean": None,
            "se": None,
            "p_value": None,
            "n_pairs": 0,
            "per_seed": [],
            "p_value_unpaired": None,
            "correlation": None,
            "sd_paired": None,
            "sd_unpaired": None,
            "supported_test": None,
            "detectable_diff": None,
            "detectable_diff_unpaired": None,
            "control_mean": None,
        }
    seeds = list(diffs)
    a = [float(arm[s]) for s in seeds]
    c = [float(control[s]) for s in seeds]
    m, se = mean_se(list(diffs.values()))
    r = correlation(arm, control)
    sd_p = _sd(list(diffs.values()))
    sd_a, sd_c = _sd(a), _sd(c)
    sd_u = math.sqrt(sd_a**2 + sd_c**2) if sd_a is not None and sd_c is not None else None
    n = len(seeds)
    return {
        "diff_mean": m,
        "se": se,
        "p_value": sign_flip_test(list(diffs.values()), **kwargs),
        "n_pairs": n,
        "per_seed": [[s, v] for s, v in diffs.items()],
        "p_value_unpaired": label_permutation_test(a, c, seed=kwargs.get("seed", 0)),
        "correlation": r,
        "sd_paired": sd_p,
        "sd_unpaired": sd_u,
        "supported_test": None if r is None else ("paired" if r > 0 else "unpaired"),
        "detectable_diff": detectable_difference(sd_p, n, paired=True, alpha=alpha, power=power),
        "detectable_diff_unpaired": detectable_difference(sd_u, n, paired=False, alpha=alpha, power=power),
        "control_mean": sum(c) / n,
    }


def min_p_value(n: int) -> float:
    """Smallest two-sided p-value the exact sign-flip test can give with ``n`` pairs (``2 / 2^n``).

    >>> min_p_value(3), min_p_value(5)
    (0.25, 0.0625)
    """
    return 1.0 if n < 1 else min(1.0, 2.0 / 2**n)
