"""Tests of the dtype-aware tolerance helper used by every notebook assert."""

from __future__ import annotations

import pytest
import torch

from bupo_core.tolerances import Tolerance, assert_close, tolerance


def test_tolerance_follows_the_dtype():
    assert tolerance(torch.float32, atol=1e-6) == Tolerance(1e-6, 0.0)
    assert tolerance(torch.float64, atol=1e-6, rtol=1e-4) == Tolerance(1e-6, 1e-4)
    assert tolerance(torch.bfloat16, atol=1e-6) == Tolerance(0.1, 0.0)
    assert tolerance(torch.bfloat16, atol=0.2, rtol=1e-4) == Tolerance(0.2, 0.02)  # never tighter than asked
    assert tolerance("bfloat16", atol=1e-6).atol == tolerance(torch.bfloat16, atol=1e-6).atol
    assert tolerance(torch.float16, atol=1e-6).atol == 0.02


def test_assert_close_passes_and_fails_with_a_clear_message():
    x = torch.tensor([1.0, -2.0, 3.0])
    assert assert_close(x, x + 1e-7, dtype=torch.float32, what="x") < 1e-6
    with pytest.raises(
        AssertionError, match=r"log-probs: largest difference 0\.01 exceeds the torch.float32 tolerance atol=0\.0001"
    ):
        assert_close(x, x + torch.tensor([0.0, 0.01, 0.0]), dtype=torch.float32, what="log-probs", atol=1e-4)
    # the same difference passes in bf16, where two equal computations differ by ~2^-8 relative
    assert_close(x, x + torch.tensor([0.0, 0.01, 0.0]), dtype=torch.bfloat16, what="log-probs", atol=1e-4)
    with pytest.raises(AssertionError):
        assert_close(x, x + 1.0, dtype=torch.bfloat16, what="x")
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([float("nan")]), torch.tensor([0.0]), dtype=torch.float32, what="nan")
    assert_close(100.0, 101.0, dtype=torch.bfloat16, what="ppl", atol=0.0, rtol=1e-4)  # 2% relative in bf16


def test_bf16_round_trip_of_real_quantities_is_within_the_bf16_tolerance():
    """Log-probs of logits rounded to bf16 (what a bf16 lm_head returns) agree within the bf16 rule."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 1000, generator=g) * 8
    exact = torch.log_softmax(logits, -1)[:, 0]
    rounded = torch.log_softmax(logits.bfloat16().float(), -1)[:, 0]
    assert_close(rounded, exact, dtype=torch.bfloat16, what="bf16 log-probs", atol=1e-4)
    assert (rounded - exact).abs().max() > 0.03  # a real bf16 error, far beyond the float32 tolerance
    with pytest.raises(AssertionError):
        assert_close(rounded, exact, dtype=torch.float32, what="bf16 log-probs", atol=1e-4)
