"""Tolerances for tests that compare results of two different arithmetic paths.

Two computations that are equal in exact arithmetic (fused vs per-tensor AdamW, chunked vs dense
softmax, bf16 autocast vs float32) round differently, and by how much depends on the CPU's vector
width (AVX2 vs AVX-512 kernels sum in a different order) and the thread count. A test that
compares such paths must therefore use a tolerance that follows from the computation, never
bit-equality and never a fixed ``atol`` picked on one machine. (A resumed run against an
uninterrupted one runs the *same* path and stays bit-exact; those tests keep ``torch.equal``.)

Weights after AdamW
-------------------
One AdamW update moves an element by ``lr * m_hat / (sqrt(v_hat) + eps)`` (plus the decoupled
weight decay ``lr * wd * |w|``). Kingma & Ba (2015, section 2.1) bound the Adam part by
``lr * max(1, (1 - beta1) / sqrt(1 - beta2))``; so after ``n`` updates each element has moved by
at most ``n`` such units. Rounding can flip the sign of a gradient element that is itself at the
rounding level, which Adam's normalisation turns into a full-size step, so a single element of two
paths can differ by up to twice that bound (:func:`adam_movement_bound`). That per-element bound is
checked, and the *aggregate* is what tells rounding from a different step: the norm of the
difference between the two paths must be a small fraction (``rel``) of the norm of the weights'
movement (:func:`assert_same_adam_trajectory`). Measured on an AVX-512 Xeon with 8 updates at
lr 3e-3: largest element difference 5e-4 of ``lr * updates``, norm ratio 3e-6 (a different
sample, loss or learning rate gives a ratio of order 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def adam_movement_bound(
    lr: float,
    updates: int,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    max_abs_weight: float = 0.0,
) -> float:
    """Largest distance one weight element can move in ``updates`` AdamW updates at learning rate ``lr``.

    ``lr * updates * max(1, (1 - beta1) / sqrt(1 - beta2))`` plus the weight decay's
    ``lr * updates * weight_decay * max_abs_weight``.

    >>> round(adam_movement_bound(1e-3, 10), 6)
    0.031623
    >>> adam_movement_bound(1e-3, 10, betas=(0.9, 0.9))
    0.01
    """
    b1, b2 = betas
    per_update = max(1.0, (1.0 - b1) / math.sqrt(1.0 - b2)) + weight_decay * max_abs_weight
    return lr * updates * per_update


def assert_same_adam_trajectory(
    a: Iterable[tuple[str, torch.Tensor]],
    b: Iterable[torch.Tensor],
    start: dict[str, torch.Tensor],
    *,
    lr: float,
    updates: int,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    rel: float = 1e-3,
) -> dict[str, float]:
    """Assert that two models trained from ``start`` by two arithmetic paths took the same AdamW steps.

    Args:
        a: ``named_parameters()`` of the first model.
        b: ``parameters()`` of the second (same order).
        start: the first model's weights before training, ``{name: tensor}`` (any shape).
        lr, updates, betas, weight_decay: the optimizer's settings and the number of updates taken.
        rel: largest allowed ``||a - b|| / ||a - start||`` over all elements (rounding gives ~1e-6).

    Returns:
        ``{"max_diff_units": largest |a - b| / (lr * updates), "norm_ratio": ...}`` for reports.
    """
    diff_sq = moved_sq = 0.0
    max_diff = 0.0
    max_w = max(float(w.abs().max()) for w in start.values())
    bound = 2 * adam_movement_bound(
        lr, updates, betas, weight_decay, max_abs_weight=max_w + adam_movement_bound(lr, updates, betas)
    )
    for (name, p), q in zip(a, b):
        d = p.detach().double() - q.detach().double()
        worst = float(d.abs().max()) if d.numel() else 0.0
        assert worst <= bound, (
            f"{name}: the two paths differ by {worst:.3g}, more than two AdamW trajectories can ({bound:.3g})"
        )
        max_diff = max(max_diff, worst)
        diff_sq += float(d.pow(2).sum())
        moved_sq += float((p.detach().double() - start[name].double()).pow(2).sum())
    assert moved_sq > 0, "the weights did not move: nothing to compare"
    ratio = math.sqrt(diff_sq / moved_sq)
    assert ratio <= rel, (
        f"the two paths' weights differ by {ratio:.3g} of the distance they moved (> {rel}): not the same step"
    )
    return {"max_diff_units": max_diff / (lr * updates), "norm_ratio": ratio}


def assert_topk_agrees(ids: torch.Tensor, ref_logp: torch.Tensor, *, atol: float) -> None:
    """Top-k ids of one path against the reference log-probs of another: ties within ``atol`` may swap.

    Args:
        ids: ``[N, k]`` (or ``[N]`` for an argmax) token ids chosen by the path under test.
        ref_logp: ``[N, V]`` reference log-probabilities (or logits).
        atol: how far apart two values may be and still count as tied (the comparison's own tolerance).

    Each chosen id must be distinct in its row and its reference value must equal the reference's
    own i-th largest value within ``atol``; so a swap of two (near-)equal entries passes, a wrong id
    does not.
    """
    ids2 = ids if ids.dim() == 2 else ids[:, None]
    k = ids2.shape[1]
    ref_vals = ref_logp.topk(k, dim=-1).values
    got_vals = ref_logp.gather(-1, ids2.long())
    assert all(len(set(row.tolist())) == k for row in ids2), "an id is chosen twice in one row"
    worst = float((got_vals - ref_vals).abs().max()) if got_vals.numel() else 0.0
    assert worst <= atol, (
        f"the chosen ids' reference values differ from the reference top-{k} by {worst:.3g} (> {atol})"
    )
