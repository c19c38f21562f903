"""Tests for bupo_core.lens: internal policies and their chunked per-token statistics."""

from __future__ import annotations

import pytest
import torch
from numerics import assert_topk_agrees

from bupo_core.adapter import ArchitectureAdapter
from bupo_core.capture import capture_residuals
from bupo_core.entropy import entropy_from_logits
from bupo_core.errors import InputFormatError, LayerOutOfRangeError
from bupo_core.lens import (
    KINDS,
    InternalPolicyStatistics,
    LensConfig,
    captured_vectors,
    default_chunk_size,
    internal_attention_policy,
    internal_ffn_policy,
    internal_layer_policy,
    internal_policy_logits,
    internal_policy_statistics,
    policy_statistics,
    top_tokens,
)
from bupo_core.models import tiny_model
from bupo_core.sequences import pack_sequences

IDS = torch.tensor([[3, 17, 42, 7, 99, 5], [0, 0, 11, 12, 13, 14]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
POS = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0]])


def _rows(kind: str, L: int) -> range:
    return range(0, L + 1) if kind == "layer" else range(1, L + 1)


@pytest.mark.parametrize("norm", ["none", "final"])
def test_statistics_match_direct_computation_on_every_family(tiny, norm):
    """Chunked on-the-fly statistics equal full-vocabulary softmaxes of the captured vectors."""
    targets = torch.roll(IDS, -1, dims=1)
    stats = internal_policy_statistics(
        tiny, IDS, MASK, positions=POS, targets=targets, config=LensConfig(norm=norm, top_k=3, chunk_size=2)
    )
    cap = capture_residuals(tiny, IDS, MASK)
    sel = POS.bool()
    assert stats.num_tokens == int(sel.sum()) == 5
    assert stats.positions.tolist() == sel.nonzero().tolist()
    for kind in KINDS:
        for row, layer in enumerate(_rows(kind, stats.num_layers)):
            vec = captured_vectors(cap, kind, layer)[sel]
            logits = internal_policy_logits(tiny, vec, norm)
            assert torch.allclose(stats.entropy[kind][row], entropy_from_logits(logits), atol=1e-4), (kind, layer)
            logp = torch.log_softmax(logits, -1)
            assert torch.allclose(stats.logprob[kind][row], logp.gather(-1, targets[sel][:, None])[:, 0], atol=1e-4)
            assert torch.allclose(stats.vector_norm[kind][row], vec.norm(dim=-1), rtol=1e-5)
            assert_topk_agrees(stats.topk_ids[kind][row][:, 0], logp, atol=1e-4)  # chunked vs dense: ties may swap
            assert torch.allclose(stats.topk_probs[kind][row], logp.topk(3).values.exp(), atol=1e-5)


def test_final_norm_layer_L_is_the_model_policy(tiny):
    """With norm="final" the layer-L entropies and log-probs are those of the model's own output."""
    targets = torch.roll(IDS, -1, dims=1)
    stats = internal_policy_statistics(tiny, IDS, MASK, positions=POS, targets=targets, config=LensConfig(norm="final"))
    logits = tiny(input_ids=IDS, attention_mask=MASK, position_ids=(MASK.cumsum(-1) - 1).clamp(min=0)).logits
    sel = POS.bool()
    own = logits[sel].float()
    L = stats.num_layers
    assert torch.allclose(stats.entropy["layer"][L], entropy_from_logits(own), atol=1e-4)
    own_lp = torch.log_softmax(own, -1).gather(-1, targets[sel][:, None])[:, 0]
    assert torch.allclose(stats.logprob["layer"][L], own_lp, atol=1e-4)


def test_chunk_size_does_not_change_results():
    model = tiny_model("qwen3")
    a = internal_policy_statistics(model, IDS, MASK, config=LensConfig(chunk_size=1))
    b = internal_policy_statistics(model, IDS, MASK, config=LensConfig(chunk_size=1000))
    for kind in KINDS:
        assert torch.allclose(a.entropy[kind], b.entropy[kind], atol=1e-5)


def test_no_more_than_one_chunk_of_logits_at_a_time(monkeypatch):
    """The bound that keeps memory flat: every unembedding call sees at most `chunk_size` vectors."""
    import bupo_core.policy_head as head_module

    model = tiny_model("llama", num_layers=3)
    adapter = ArchitectureAdapter(model)
    seen: list[int] = []
    original = head_module.project

    def spy(x, weight, bias=None, softcap=None, norm=None):
        seen.append(x.reshape(-1, x.shape[-1]).shape[0])
        return original(x, weight, bias, softcap, norm)

    monkeypatch.setattr(head_module, "project", spy)
    ids = torch.randint(0, 128, (3, 40))
    stats = internal_policy_statistics(model, ids, adapter=adapter, config=LensConfig(chunk_size=16))
    assert stats.num_tokens == 120
    assert max(seen) <= 16
    assert len(seen) == (4 + 4 * 3) * 8  # (L+1 + 4L) vectors x ceil(120 / 16) chunks


def test_default_chunk_size_fits_budget():
    assert default_chunk_size(49152, 16) * 49152 * 4 <= 16 * 2**20
    assert default_chunk_size(262144, 16) >= 1
    assert default_chunk_size(10**9, 1) == 1


def test_entropy_change_methods_and_concatenate():
    model = tiny_model("gemma3")
    s1 = internal_policy_statistics(model, IDS, MASK, positions=POS)
    s2 = internal_policy_statistics(model, IDS[:1], positions=POS[:1])
    assert s1.layer_entropy_change().shape == (2, 5)
    assert torch.allclose(s1.ffn_entropy_change(), s1.entropy["ffn"] - s1.entropy["ffn_input"])
    assert torch.allclose(s1.attn_entropy_change(), s1.entropy["attn"] - s1.entropy["attn_input"])
    both = InternalPolicyStatistics.concatenate([s1, s2])
    assert both.num_tokens == 8
    assert both.sequence_index.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert torch.allclose(both.mean_entropy("ffn"), torch.cat([s1.entropy["ffn"], s2.entropy["ffn"]], 1).mean(1))


def test_kinds_subset():
    stats = internal_policy_statistics(tiny_model("gpt2"), IDS, MASK, config=LensConfig(kinds=("layer",)))
    assert set(stats.entropy) == {"layer"}
    with pytest.raises(ValueError, match="not computed"):
        stats.ffn_entropy_change()
    with pytest.raises(ValueError, match="unknown kinds"):
        LensConfig(kinds=("mlp",))


def test_prediction_mask_positions_are_response_predictions():
    """Packing puts the analysed positions exactly at the predictions of response tokens."""
    model = tiny_model("llama")
    batch = pack_sequences([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], pad_token_id=0)
    stats = internal_policy_statistics(
        model, batch.input_ids, batch.attention_mask, positions=batch.prediction_mask, targets=batch.targets
    )
    assert stats.num_tokens == 5  # one per response token
    assert stats.targets.tolist() == [9, 10, 11, 12, 13]


def test_bad_positions_raise_clear_errors():
    model = tiny_model("llama")
    with pytest.raises(InputFormatError, match="nothing to analyse"):
        internal_policy_statistics(model, IDS, MASK, positions=torch.zeros_like(IDS))
    with pytest.raises(InputFormatError, match="padding"):
        internal_policy_statistics(model, IDS, MASK, positions=torch.ones_like(IDS))
    with pytest.raises(InputFormatError, match="prediction_mask"):
        internal_policy_statistics(model, IDS, MASK, positions=torch.ones(6))
    with pytest.raises(ValueError, match="norm must be"):
        LensConfig(norm="ln")


def test_policies_from_a_capture(tiny):
    cap = capture_residuals(tiny, IDS[:1])
    adapter = ArchitectureAdapter(tiny)
    L = adapter.num_layers
    p = internal_layer_policy(tiny, cap, L)
    assert p.shape == (1, 6, adapter.vocab_size)
    assert torch.allclose(p.sum(-1), torch.ones(1, 6), atol=1e-5)
    assert internal_attention_policy(adapter, cap, 1).shape == p.shape
    assert internal_ffn_policy(adapter, cap, L, norm="final").shape == p.shape
    # the right tensors: A^l and F^l taken by our own hooks on the modules that write them
    written = {}
    hooks_ = [
        adapter.module(l, role).register_forward_hook(
            lambda m, a, out, key=(l, role): written.__setitem__(key, out[0] if isinstance(out, tuple) else out)
        )
        for l in range(1, L + 1)
        for role in ("attn_write", "ffn_write")
    ]
    with torch.no_grad():
        tiny(input_ids=IDS[:1])
    for h in hooks_:
        h.remove()
    E = adapter.unembed_weight.detach().float()
    for layer in range(1, L + 1):
        attn = internal_attention_policy(adapter, cap, layer)
        ffn = internal_ffn_policy(adapter, cap, layer)
        assert torch.allclose(attn, torch.softmax(written[(layer, "attn_write")].float() @ E.T, -1), atol=1e-6)
        assert torch.allclose(ffn, torch.softmax(written[(layer, "ffn_write")].float() @ E.T, -1), atol=1e-6)
        # ... and not any of the other vectors of the block (the test can tell them apart)
        # (compared as log-probabilities: the random model's policies are close to uniform)
        for other in (cap.attn_in(layer), cap.ffn_in(layer), cap.resid(layer), cap.resid(layer - 1)):
            wrong = torch.log_softmax(other.float() @ E.T, -1)
            assert not torch.allclose(attn.log(), wrong, atol=1e-3) and not torch.allclose(ffn.log(), wrong, atol=1e-3)
        assert not torch.allclose(attn.log(), ffn.log(), atol=1e-3)
    with pytest.raises(LayerOutOfRangeError):
        internal_layer_policy(tiny, cap, L + 1)
    with pytest.raises(LayerOutOfRangeError):
        internal_ffn_policy(tiny, cap, 0)


def test_bfloat16_model_gives_float32_statistics():
    model = tiny_model("qwen2").to(torch.bfloat16)
    stats = internal_policy_statistics(model, IDS, MASK, positions=POS, targets=torch.roll(IDS, -1, 1))
    assert stats.entropy["layer"].dtype == torch.float32
    cap = capture_residuals(model, IDS, MASK)
    ref = entropy_from_logits(internal_policy_logits(model, cap.resid(2)[POS.bool()]))
    assert torch.allclose(stats.entropy["layer"][2], ref, atol=1e-4)


def test_policy_statistics_targets_shape_check():
    adapter = ArchitectureAdapter(tiny_model("llama"))
    with pytest.raises(ValueError, match="targets"):
        policy_statistics(adapter, torch.randn(4, 64), targets=torch.zeros(3, dtype=torch.long))


def test_smollm2_internal_statistics(smollm):
    """On the embedded model: entropies stay in [0, ln N]; the final-norm top layer is the model's policy."""
    model, tok = smollm
    ids = torch.tensor([tok("What is 3 + 4? 7")["input_ids"]])
    stats = internal_policy_statistics(model, ids, config=LensConfig(norm="final", kinds=("layer",), top_k=2))
    assert stats.num_layers == 30 and stats.vocab_size == 49152
    ent = stats.entropy["layer"]
    assert float(ent.min()) >= -1e-4 and float(ent.max()) <= 10.81
    own = model(input_ids=ids).logits[0].float()
    assert torch.allclose(ent[30], entropy_from_logits(own), atol=2e-3)
    words = [t for t, _ in top_tokens(model, capture_residuals(model, ids).resid(30)[0, -1], tok, k=5, norm="final")]
    assert len(words) == 5
