"""Tests for bupo_core.adapter: family lookup, layer checks and the unembedding (logit-lens parity)."""

from __future__ import annotations

import pytest
import torch

from bupo_core.adapter import ROLES, ArchitectureAdapter
from bupo_core.capture import capture_residuals
from bupo_core.errors import BupoError, LayerOutOfRangeError, UnsupportedArchitectureError
from bupo_core.models import tiny_model

IDS = torch.tensor([[3, 17, 42, 7, 99, 5], [0, 0, 11, 12, 13, 14]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])


def test_final_norm_at_last_layer_reproduces_model_logits(tiny):
    """norm="final" applied to the raw H^L gives exactly the model's own logits, on every family."""
    adapter = ArchitectureAdapter(tiny)
    cap = capture_residuals(tiny, IDS, MASK, with_logits=True)
    lens = adapter.logits(cap.resid(adapter.num_layers), norm="final")
    assert lens.dtype == torch.float32
    assert torch.allclose(lens, cap.logits.float(), atol=1e-5, rtol=1e-5)
    # while the paper's raw projection differs (no final norm)
    raw = adapter.logits(cap.resid(adapter.num_layers), norm="none")
    assert not torch.allclose(raw, cap.logits.float(), atol=1e-3)


def test_gemma2_softcap_is_applied_only_with_final_norm():
    model = tiny_model("gemma2")
    adapter = ArchitectureAdapter(model)
    assert adapter.logit_softcap
    h = torch.randn(3, adapter.hidden_size) * 100
    capped = adapter.logits(h, norm="final")
    assert capped.abs().max() <= adapter.logit_softcap + 1e-4


def test_roles_and_layers(tiny):
    adapter = ArchitectureAdapter(tiny)
    for role in ROLES:
        assert isinstance(adapter.module(1, role), torch.nn.Module)
        assert adapter.module(1, role) is not adapter.module(2, role)  # one module per block
    assert adapter.check_layer(0) == 0
    with pytest.raises(LayerOutOfRangeError, match=r"use 0\.\.2"):
        adapter.check_layer(3)
    with pytest.raises(LayerOutOfRangeError, match=r"use 1\.\.2"):
        adapter.block(0)
    with pytest.raises(LayerOutOfRangeError):
        adapter.check_layer(-1)
    with pytest.raises(LayerOutOfRangeError):
        adapter.check_layer(True)  # bools are not layers


def test_unknown_norm_and_role():
    adapter = ArchitectureAdapter(tiny_model("llama"))
    with pytest.raises(ValueError, match="'none'"):
        adapter.logits(torch.zeros(2, adapter.hidden_size), norm="first")
    with pytest.raises(ValueError, match="unknown role"):
        adapter.module(1, "mlp")


def test_upper_parameters_are_above_the_layer():
    model = tiny_model("llama", num_layers=3)
    adapter = ArchitectureAdapter(model)
    upper = {id(p) for p in adapter.upper_parameters(1)}
    assert all(id(p) in upper for p in adapter.block(2).parameters())
    assert not any(id(p) in upper for p in adapter.block(1).parameters())
    assert all(id(p) in upper for p in adapter.final_norm.parameters())


def test_unsupported_family_names_the_fix():
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(
        BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    with pytest.raises(UnsupportedArchitectureError, match="register_family") as err:
        ArchitectureAdapter(model)
    assert isinstance(err.value, BupoError)
    assert "bert" in str(err.value)


def test_logit_lens_parity_on_smollm2(smollm):
    model, tok = smollm
    adapter = ArchitectureAdapter(model)
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    cap = capture_residuals(model, ids, with_logits=True)
    lens = adapter.logits(cap.resid(adapter.num_layers), norm="final")
    assert torch.allclose(lens, cap.logits, atol=1e-4)
    assert adapter.num_layers == 30 and adapter.vocab_size == 49152 and adapter.tied_embeddings
