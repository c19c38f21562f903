"""The cross-path tolerances of tests/numerics.py accept rounding and reject a different step."""

from __future__ import annotations

import pytest
import torch
from numerics import adam_movement_bound, assert_same_adam_trajectory, assert_topk_agrees


def _adam_run(lr: float, grads: list[torch.Tensor], fused: bool) -> torch.nn.Parameter:
    p = torch.nn.Parameter(torch.zeros(grads[0].shape))
    opt = torch.optim.AdamW([p], lr=lr, weight_decay=0.0, **({"fused": True} if fused else {"foreach": False}))
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p


def test_adam_trajectory_accepts_rounding_and_rejects_another_step():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(64, 32, generator=g) for _ in range(4)]
    start = {"w": torch.zeros(64, 32)}
    a = _adam_run(1e-3, grads, fused=True)
    # rounding-level gradient noise (1 ulp-ish) on the other path: the same step
    b = _adam_run(1e-3, [x * (1 + 1e-7 * torch.randn(x.shape, generator=g)) for x in grads], fused=False)
    out = assert_same_adam_trajectory([("w", a)], [b], start, lr=1e-3, updates=4)
    assert out["norm_ratio"] < 1e-4
    assert all(float((a - start["w"]).abs().max()) <= adam_movement_bound(1e-3, 4) for a in [a, b])
    # another learning rate, or other gradients, is a different step
    with pytest.raises(AssertionError, match="not the same step"):
        assert_same_adam_trajectory([("w", a)], [_adam_run(2e-3, grads, fused=False)], start, lr=1e-3, updates=4)
    with pytest.raises(AssertionError, match="not the same step"):
        assert_same_adam_trajectory([("w", a)], [_adam_run(1e-3, grads[::-1], fused=False)], start, lr=1e-3, updates=4)


def test_topk_agrees_allows_tie_swaps_only():
    logp = torch.log_softmax(torch.tensor([[0.0, 1.0, 1.0 + 1e-7, -3.0]]), -1)
    assert_topk_agrees(torch.tensor([[1, 2]]), logp, atol=1e-5)  # the near-tie swapped
    assert_topk_agrees(torch.tensor([[2, 1]]), logp, atol=1e-5)
    with pytest.raises(AssertionError):
        assert_topk_agrees(torch.tensor([[2, 0]]), logp, atol=1e-5)  # a wrong id
    with pytest.raises(AssertionError):
        assert_topk_agrees(torch.tensor([[2, 2]]), logp, atol=1e-5)  # an id twice
