"""Tests for bupo_core.capture: the additive residual decomposition and truncated forwards."""

from __future__ import annotations

import pytest
import torch

from bupo_core.adapter import ArchitectureAdapter
from bupo_core.capture import capture_residuals, forward_to_layer, position_ids_from_mask
from bupo_core.errors import LayerOutOfRangeError

IDS = torch.tensor([[3, 17, 42, 7, 99, 5], [0, 0, 11, 12, 13, 14]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])


def test_decomposition_is_exact_on_every_family(tiny):
    """H^L = H^0 + sum_l (A^l + F^l) to < 1e-5 relative in float32, with left padding."""
    cap = capture_residuals(tiny, IDS, MASK)
    assert cap.num_layers == ArchitectureAdapter(tiny).num_layers
    assert cap.decomposition_error() < 1e-5
    # and layer by layer: H^l = H^{l-1} + A^l + F^l
    for l in range(1, cap.num_layers + 1):
        step = cap.resid(l - 1).double() + cap.attn_out(l).double() + cap.ffn_out(l).double()
        rel = (cap.resid(l).double() - step).abs().max() / cap.resid(l).abs().max()
        assert rel < 1e-5, l


def test_captured_module_inputs_are_the_norm_outputs(tiny):
    adapter = ArchitectureAdapter(tiny)
    cap = capture_residuals(tiny, IDS[:1])
    ln1 = adapter.module(1, "ln1")
    assert torch.allclose(cap.attn_in(1), ln1(cap.resid(0)), atol=1e-5)
    ln2 = adapter.module(1, "ln2")
    assert torch.allclose(cap.ffn_in(1), ln2(cap.resid(0) + cap.attn_out(1)), atol=1e-5)


def test_positions_subset_and_logits(tiny):
    full = capture_residuals(tiny, IDS, MASK, with_logits=True)
    keep = torch.tensor([False, False, False, True, True, False])
    part = capture_residuals(tiny, IDS, MASK, positions=keep, with_logits=True)
    assert part.resid(2).shape[1] == 2
    assert torch.allclose(part.ffn_out(1), full.ffn_out(1)[:, keep])
    assert torch.allclose(part.logits, full.logits[:, keep])


def test_hooks_leave_the_model_unchanged(tiny):
    before = tiny(input_ids=IDS[:1]).logits
    capture_residuals(tiny, IDS[:1])
    after = tiny(input_ids=IDS[:1]).logits
    assert torch.equal(before, after)
    adapter = ArchitectureAdapter(tiny)
    assert not adapter.block(1)._forward_hooks and not adapter.block(1)._forward_pre_hooks


def test_forward_to_layer_matches_capture(tiny):
    cap = capture_residuals(tiny, IDS, MASK)
    for l in range(0, cap.num_layers + 1):
        h = forward_to_layer(tiny, IDS, l, MASK)
        assert torch.allclose(h, cap.resid(l), atol=1e-5), l
    with pytest.raises(LayerOutOfRangeError, match="0..2"):
        forward_to_layer(tiny, IDS, 3)


def test_capture_layer_accessors_range():
    from bupo_core.models import tiny_model

    cap = capture_residuals(tiny_model("llama"), IDS[:1])
    with pytest.raises(LayerOutOfRangeError):
        cap.attn_out(0)  # modules exist for layers 1..L only
    with pytest.raises(LayerOutOfRangeError):
        cap.resid(3)


def test_position_ids_skip_left_padding():
    assert position_ids_from_mask(MASK)[1].tolist() == [0, 0, 0, 1, 2, 3]


def test_decomposition_on_smollm2(smollm):
    """SmolLM2 in float32: relative error ~1e-6, i.e. ~1e-3 absolute because |H^L| reaches thousands.

    The residual stream of SmolLM2 grows to norms of ~2000 (see notebook 02), so float32 rounding of
    the sum of 60 module writes leaves an absolute error near 1e-3; relative to max|H^L| it stays
    below 1e-5 (measured 1.1e-6).
    """
    model, tok = smollm
    ids = torch.tensor([tok("Two plus two is four, and three plus three is six.")["input_ids"]])
    cap = capture_residuals(model, ids)
    assert cap.decomposition_error() < 1e-5
    absolute = (cap.resid(30).double() - cap.reconstructed_final()).abs().max().item()
    assert absolute < 1e-2
