"""bf16 on CPU (``torch.autocast("cpu", dtype=torch.bfloat16)``) stands in for bf16 on a GPU.

Two claims are proved here:

* training keeps float32 master weights whatever dtype the model was loaded in, so an AdamW step at
  the paper's lr 1e-6 moves the weights; pure-bf16 AdamW at 1e-6 rounds almost every update away;
* log-probs, entropies and lens statistics are computed in float32 inside autocast, so the
  log-probs of raw deep-layer states (norms of hundreds to ~1000, as in SmolLM2's upper layers)
  match float32.

Tolerances (stated once): the float32 head inside autocast agrees with the float32 reference to
``HEAD_ATOL`` nats, while a bf16 head is off by more than ``BF16_HEAD_MIN_ERR`` nats on the
same states.
"""

from __future__ import annotations

import pytest
import torch
from numerics import assert_topk_agrees

from bupo_core.adapter import ArchitectureAdapter
from bupo_core.capture import forward_to_layer
from bupo_core.grpo import token_logprobs
from bupo_core.lens import LensConfig, internal_policy_statistics, policy_statistics
from bupo_core.models import tiny_model
from bupo_core.rewards import register_scorer
from bupo_core.sequences import pack_sequences
from bupo_core.trainer import TrainConfig, Trainer, float32_master_weights, policy_logprobs

HEAD_ATOL = 1e-3  # nats: float32 head inside bf16 autocast vs the float32/float64 reference
BF16_HEAD_MIN_ERR = 0.25  # nats: what a bf16 head gets wrong on raw states of norm ~1000

register_scorer("bf16_test_even_length", lambda text, example: float(len(text) % 2 == 0))

bf16_autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731


def raw_deep_states(n: int = 96, d: int = 576, vocab: int = 4096, norm: float = 1000.0, seed: int = 0):
    """Hidden states of norm ``norm`` (SmolLM2's raw upper-layer states reach ~1000) and an E_u."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(1, n, d, generator=g)
    h = h / h.norm(dim=-1, keepdim=True) * norm
    w = torch.randn(vocab, d, generator=g) * 0.05
    targets = torch.randint(0, vocab, (1, n), generator=g)
    return h, w, targets, torch.ones(1, n)


# --------------------------------------------------------------------------- master weights
def _changed_fraction(before: dict, after: dict) -> float:
    changed = sum(int((after[k] != before[k]).sum()) for k in before)
    return changed / sum(v.numel() for v in before.values())


def test_trainer_keeps_float32_master_weights_and_moves_at_lr_1e6(tmp_path, tiny_llm):
    _, tok = tiny_llm
    model = tiny_model("llama", vocab_size=len(tok), seed=3).to(torch.bfloat16)  # "loaded in bf16"
    cfg = TrainConfig(
        model="tiny-random-llama",
        task="chain_sum",
        task_size=20,
        reward="bf16_test_even_length",
        steps=1,
        prompts_per_step=4,
        group_size=4,
        max_new_tokens=6,
        lr=1e-6,
        num_mini_batches=1,
        micro_batch_size=16,
        precision="bf16",
        device="cpu",
        out_dir=str(tmp_path / "run"),
        seed=1,
    )
    tr = Trainer(cfg, model=model, tokenizer=tok)
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())
    before = {k: v.detach().clone() for k, v in tr.model.named_parameters()}
    row = tr.train_step()
    assert row["updates"] == 1, row
    after = {k: v.detach() for k, v in tr.model.named_parameters()}
    assert all(v.dtype == torch.float32 for v in after.values())
    # AdamW's first step moves every parameter with a gradient by ~lr (plus lr*wd*w): not rounded away
    assert _changed_fraction(before, after) > 0.5
    step = max(float((after[k] - before[k]).abs().max()) for k in before)
    assert 0.5e-6 < step < 3e-6


def test_pure_bf16_adamw_at_lr_1e6_rounds_the_update_away():
    """The contrast: the same AdamW step on bf16 weights leaves almost every weight unchanged."""
    model = tiny_model("llama", seed=3)
    results = {}
    for dtype in (torch.bfloat16, torch.float32):
        m = tiny_model("llama", seed=3).to(dtype)
        params = list(m.parameters())
        g = torch.Generator().manual_seed(0)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(dtype)
        before = {i: p.detach().clone() for i, p in enumerate(params)}
        torch.optim.AdamW(params, lr=1e-6, weight_decay=0.01, foreach=False).step()
        results[dtype] = _changed_fraction(before, {i: p.detach() for i, p in enumerate(params)})
    assert results[torch.bfloat16] < 0.05, results  # ~2%: only weights below ~1e-4 in magnitude move
    assert results[torch.float32] > 0.95, results
    assert float32_master_weights(model.to(torch.bfloat16)) is model
    assert all(p.dtype == torch.float32 for p in model.parameters())


# --------------------------------------------------------------------------- float32 heads in autocast
def test_token_logprobs_of_large_norm_states_are_float32_inside_autocast():
    h, w, t, m = raw_deep_states()
    ref_z = h.double() @ w.double().T
    ref_lp = torch.log_softmax(ref_z, -1).gather(-1, t[..., None]).squeeze(-1)
    ref_ent = -(ref_z.softmax(-1) * ref_z.log_softmax(-1)).sum(-1)
    with bf16_autocast():
        lp, ent = token_logprobs(h, w, t, m, chunk_size=32)
    assert lp.dtype == torch.float32
    assert (lp.double() - ref_lp).abs().max() < HEAD_ATOL
    assert (ent.double() - ref_ent).abs().max() < HEAD_ATOL
    # what the fix prevents: the same projection in bf16 is off by whole nats on such states
    bad = torch.log_softmax((h.bfloat16() @ w.bfloat16().T).float(), -1).gather(-1, t[..., None]).squeeze(-1)
    assert (bad.double() - ref_lp).abs().max() > BF16_HEAD_MIN_ERR


def test_token_logprobs_backward_is_float32_inside_autocast():
    h, w, t, m = raw_deep_states(n=40, vocab=1024)
    grads = {}
    for name, ctx in (("float32", torch.autocast("cpu", enabled=False)), ("autocast", bf16_autocast())):
        hh, ww = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
        with ctx:
            lp, ent = token_logprobs(hh, ww, t, m, chunk_size=16)
            (lp.sum() + 0.1 * ent.sum()).backward()
        grads[name] = (hh.grad, ww.grad)
    for a, b in zip(grads["float32"], grads["autocast"]):
        assert b.dtype == torch.float32
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_policy_statistics_and_adapter_logits_are_float32_inside_autocast():
    model = tiny_model("llama", vocab_size=512, hidden_size=128)
    adapter = ArchitectureAdapter(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 128, generator=g)
    x = x / x.norm(dim=-1, keepdim=True) * 1000
    targets = torch.randint(0, 512, (50,), generator=g)
    ref = policy_statistics(adapter, x, targets=targets, top_k=3)
    with bf16_autocast():
        got = policy_statistics(adapter, x, targets=targets, top_k=3)
        logits = adapter.logits(x)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, adapter.logits(x), atol=1e-3)
    assert (got.entropy - ref.entropy).abs().max() < HEAD_ATOL
    assert (got.logprob - ref.logprob).abs().max() < HEAD_ATOL
    # autocast vs float32 are two arithmetic paths: near-tied tokens may swap places in the top-k
    assert_topk_agrees(got.topk_ids, torch.log_softmax(adapter.logits(x), -1), atol=HEAD_ATOL)


# --------------------------------------------------------------------------- the embedded model
@pytest.fixture(scope="module")
def smollm_batch(smollm):
    model, tok = smollm
    ids = tok("The quick brown fox jumps over the lazy dog. Then 17 + 25 = 42, and so the answer is 42.").input_ids
    return model, pack_sequences([ids[:8]], [ids[8:]], pad_token_id=0)


@pytest.mark.parametrize("layer", [20, 30])
def test_policy_logprobs_head_is_float32_on_raw_deep_states_of_the_embedded_model(smollm_batch, layer):
    """SmolLM2's raw H^20 / H^30 have norms in the hundreds at response positions: the head adds no bf16 error."""
    model, batch = smollm_batch
    adapter = ArchitectureAdapter(model)
    m = batch.prediction_mask.bool()
    with torch.no_grad(), bf16_autocast():
        hidden = forward_to_layer(model, batch.input_ids, layer, batch.attention_mask, adapter=adapter)
        lp_autocast, ent_autocast = policy_logprobs(model, batch, layer=layer, adapter=adapter)
    assert float(hidden.float().norm(dim=-1)[m].mean()) > 150
    with torch.no_grad():  # float32 head on the same (bf16-computed) states
        ref_lp, ref_ent = token_logprobs(hidden.float(), adapter.unembed_weight, batch.targets, batch.prediction_mask)
        bad = torch.log_softmax((hidden.bfloat16() @ adapter.unembed_weight.bfloat16().T).float(), -1)
    bad_lp = bad.gather(-1, batch.targets[..., None]).squeeze(-1)
    assert (lp_autocast - ref_lp)[m].abs().max() < HEAD_ATOL
    assert (ent_autocast - ref_ent)[m].abs().max() < HEAD_ATOL
    assert (bad_lp - ref_lp)[m].abs().max() > BF16_HEAD_MIN_ERR


def test_full_policy_logprobs_under_autocast_close_to_float32(smollm_batch):
    """End to end (bf16 blocks + float32 head) the full policy's log-probs stay within 0.25 nats."""
    model, batch = smollm_batch
    m = batch.prediction_mask.bool()
    with torch.no_grad():
        lp32, _ = policy_logprobs(model, batch)
        with bf16_autocast():
            lp16, _ = policy_logprobs(model, batch)
    assert (lp16 - lp32)[m].abs().max() < 0.25


def test_internal_policy_statistics_are_float32_inside_autocast(smollm_batch):
    """The lens hooks project each captured state in float32 even when the forward runs in autocast."""
    model, batch = smollm_batch
    cfg = LensConfig(kinds=("layer",))
    adapter = ArchitectureAdapter(model)
    with torch.no_grad(), bf16_autocast():
        stats = internal_policy_statistics(
            model,
            batch.input_ids,
            batch.attention_mask,
            positions=batch.prediction_mask,
            targets=batch.targets,
            config=cfg,
            adapter=adapter,
        )
        hidden = forward_to_layer(model, batch.input_ids, 30, batch.attention_mask, adapter=adapter)
    m = batch.prediction_mask.bool()
    ref = policy_statistics(adapter, hidden[m].float(), targets=batch.targets[m])
    assert (stats.logprob["layer"][30] - ref.logprob).abs().max() < HEAD_ATOL
    assert (stats.entropy["layer"][30] - ref.entropy).abs().max() < HEAD_ATOL
