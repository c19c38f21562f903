"""Tests for bupo_core.entropy: entropy maths, entropy change and the boundary-layer rule."""

from __future__ import annotations

import math

import pytest
import torch

from bupo_core.entropy import (
    BoundaryLayer,
    attn_entropy_change,
    boundary_layer,
    entropy_from_logits,
    ffn_entropy_change,
    layer_entropy_change,
    max_entropy,
    token_weighted_mean,
)


def test_entropy_uniform_and_one_hot():
    assert entropy_from_logits(torch.zeros(49152)).item() == pytest.approx(math.log(49152), abs=1e-4)
    assert max_entropy(49152) == pytest.approx(10.8027, abs=1e-3)
    one_hot = torch.full((10,), -1e4)
    one_hot[3] = 0
    assert entropy_from_logits(one_hot).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_matches_definition_and_is_float32_for_bf16():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 300) * 3
    p = torch.softmax(logits.double(), -1)
    ref = -(p * p.log()).sum(-1)
    got = entropy_from_logits(logits)
    assert got.shape == (5, 7)
    assert torch.allclose(got.double(), ref, atol=1e-5)
    got_bf16 = entropy_from_logits(logits.bfloat16())
    assert got_bf16.dtype == torch.float32


def test_entropy_handles_minus_inf_logits():
    logits = torch.tensor([0.0, 0.0, float("-inf")])
    assert entropy_from_logits(logits).item() == pytest.approx(math.log(2), abs=1e-6)


def test_entropy_is_invariant_to_a_constant_shift():
    logits = torch.randn(4, 50)
    assert torch.allclose(entropy_from_logits(logits), entropy_from_logits(logits + 100.0), atol=1e-5)


def test_entropy_changes():
    layer = torch.tensor([[9.0, 8.0], [7.0, 8.5], [1.0, 2.0]])  # [L+1=3, P=2]
    assert layer_entropy_change(layer).tolist() == [[-2.0, 0.5], [-6.0, -6.5]]
    a, a_in = torch.tensor([3.0, 4.0]), torch.tensor([5.0, 1.0])
    assert attn_entropy_change(a, a_in).tolist() == [-2.0, 3.0]
    assert ffn_entropy_change(a_in, a).tolist() == [2.0, -3.0]


def test_token_weighted_mean_counts_every_token_once():
    # two samples: 1 token with value 0, 3 tokens with value 4 -> token mean 3 (sample mean would be 2)
    values = torch.tensor([[0.0, 4.0, 4.0, 4.0]])
    assert token_weighted_mean(values).tolist() == [3.0]
    assert token_weighted_mean(values, torch.tensor([1, 1, 0, 0])).tolist() == [2.0]
    with pytest.raises(ValueError):
        token_weighted_mean(values, torch.zeros(4))


@pytest.mark.parametrize(
    "changes, layer, run",
    [
        ([0.3, 0.2, 0.1, 0.4, 0.2, 0.1, -0.1, 0.0, 0.2], 6, (1, 6)),  # Qwen3-4B-like: layers 1..6 expand
        ([-0.5, 0.1, 0.2, -0.1, 0.3], 3, (2, 3)),  # first run need not start at layer 1
        ([-0.1, -0.2, 0.5], 3, (3, 3)),  # Llama-like: only the top expands
        ([0.1, 0.1], 2, (1, 2)),
    ],
)
def test_boundary_layer_rule(changes, layer, run):
    b = boundary_layer(changes)
    assert isinstance(b, BoundaryLayer)
    assert b.layer == layer and b.run == run and int(b) == layer
    assert f"{run[0]}..{run[1]}" in b.reason


def test_boundary_layer_accepts_tensors_and_threshold():
    t = torch.tensor([0.01, 0.5, 0.4, -0.2])
    assert boundary_layer(t).layer == 3
    assert boundary_layer(t, threshold=0.05).run == (2, 3)


def test_boundary_layer_none_has_a_reason():
    b = boundary_layer([-0.1, 0.0, -0.3])
    assert b.layer is None and b.run is None
    assert "no layer" in b.reason and "layer 2" in b.reason  # names the maximum
    with pytest.raises(ValueError, match="no boundary layer"):
        int(b)
    assert boundary_layer([]).layer is None
    assert "NaN" in boundary_layer([0.1, float("nan")]).reason


def test_entropy_from_logits_is_differentiable():
    logits = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
    entropy_from_logits(logits).sum().backward()
    p = torch.softmax(logits.detach(), -1)
    lp = p.log()
    # dH/dz = -p (log p + H)
    assert torch.allclose(logits.grad, -p * (lp + (-(p * lp).sum(-1, keepdim=True))), atol=1e-6)
