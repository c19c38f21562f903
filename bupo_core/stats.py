"""Statistics across training seeds: mean and standard error, paired differences, sign-flip test.

A sweep trains every arm with the same seeds; a seed fixes the training prompts, the sampling
draws and the evaluation problems, so an arm's result at seed ``s`` and the control's at seed
``s`` form a *pair*. The paired difference removes the variation the two share (which prompts,
which evaluation draw), which is most of it at small scale.

* :func:`mean_se`: mean and standard error ``sd / sqrt(n)`` (sample sd, ``ddof=1``).
* :func:`paired_differences`: ``arm[s] - control[s]`` over the seeds both have.
* :func:`sign_flip_test`: the paired permutation test. Under the null hypothesis "the arm and the
  control are exchangeable", each difference is as likely to have either sign; the p-value is the
  share of the ``2^n`` sign assignments whose ``|mean|`` is at least the observed ``|mean|``
  (two-sided). Exact enumeration up to :data:`EXACT_MAX_N` pairs, seeded Monte Carlo beyond. With
  ``n`` pairs the smallest possible exact p-value is ``2 / 2^n`` (0.0625 for 5 seeds, 0.25 for 3),
  so 3 seeds can never give p < 0.05: they show direction and size, not significance.

All functions are pure (lists of floats in, floats out).
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Mapping, Sequence

EXACT_MAX_N = 16


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


def sign_flip_test(diffs: Sequence[float], *, exact_max_n: int = EXACT_MAX_N, resamples: int = 20_000, seed: int = 0) -> float:
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


def compare_to_control(arm: Mapping[int, float], control: Mapping[int, float], **kwargs) -> dict:
    """Paired comparison of one metric: ``{"diff_mean", "se", "p_value", "n_pairs", "per_seed"}``.

    ``per_seed`` lists ``[seed, difference]`` pairs. With no common seed every number is ``None``.

    >>> r = compare_to_control({0: 0.5, 1: 0.75}, {0: 0.25, 1: 0.25})
    >>> r["diff_mean"], round(r["se"], 4), r["p_value"], r["n_pairs"]
    (0.375, 0.125, 0.5, 2)
    """
    diffs = paired_differences(arm, control)
    if not diffs:
        return {"diff_mean": None, "se": None, "p_value": None, "n_pairs": 0, "per_seed": []}
    m, se = mean_se(list(diffs.values()))
    return {"diff_mean": m, "se": se, "p_value": sign_flip_test(list(diffs.values()), **kwargs), "n_pairs": len(diffs),
            "per_seed": [[s, v] for s, v in diffs.items()]}


def min_p_value(n: int) -> float:
    """Smallest two-sided p-value the exact sign-flip test can give with ``n`` pairs (``2 / 2^n``).

    >>> min_p_value(3), min_p_value(5)
    (0.25, 0.0625)
    """
    return 1.0 if n < 1 else min(1.0, 2.0 / 2**n)
