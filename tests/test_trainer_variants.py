"""The experiment settings of the trainer (ipa_norm, ipa_lr, optimizer reset, frozen layers, layerwise
lr, internal-phase logging) and the step's speed switches (same results up to float rounding)."""

from __future__ import annotations

import pytest
import torch
from numerics import assert_same_adam_trajectory

from bupo_core import step as step_mod
from bupo_core.adapter import ArchitectureAdapter
from bupo_core.errors import InputFormatError, LayerOutOfRangeError
from bupo_core.models import load_model, tiny_model
from bupo_core.policy_head import policy_logprobs
from bupo_core.rewards import register_scorer
from bupo_core.trainer import TrainConfig, Trainer

register_scorer("test_even_length", lambda text, example: float(len(text) % 2 == 0))


def make(tmp_path, name="run", num_layers=3, **kw):
    _, tok = load_model("tiny-random-llama", device="cpu")
    model = tiny_model("llama", vocab_size=len(tok), num_layers=num_layers, seed=1)
    base = dict(
        model="tiny-random-llama",
        task="chain_sum",
        task_size=50,
        reward="test_even_length",
        steps=2,
        prompts_per_step=4,
        group_size=4,
        max_new_tokens=6,
        lr=3e-3,
        micro_batch_size=5,
        num_mini_batches=2,
        out_dir=str(tmp_path / name),
        seed=11,
    )
    base.update(kw)
    return Trainer(TrainConfig(**base), model=model, tokenizer=tok)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def moved(before, model):
    return {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}


def test_freeze_through_layer_trains_only_the_blocks_above(tmp_path):
    tr = make(tmp_path, freeze_through_layer=1, steps=2)
    before = snapshot(tr.model)
    rows = tr.train().metrics
    assert sum(r["updates"] for r in rows) > 0
    changed = moved(before, tr.model)
    assert changed, "nothing was trained"
    # embedding (tied E_u) and block 1 never move; only blocks 2..3 and the final norm do
    assert all(k.startswith(("model.layers.1.", "model.layers.2.", "model.norm.")) for k in changed), sorted(changed)
    assert not any(k.startswith(("model.embed_tokens", "model.layers.0.")) for k in changed)
    assert all(
        not p.requires_grad
        for n, p in tr.model.named_parameters()
        if n.startswith(("model.embed_tokens", "model.layers.0."))
    )


def test_upper_lr_scale_puts_upper_blocks_in_a_scaled_group(tmp_path):
    tr = make(tmp_path, upper_lr_scale=0.1, upper_lr_layer=2, steps=1)
    tr.train()
    groups = {g["name"]: g for g in tr.optimizer.param_groups}
    assert groups["lower"]["lr"] == pytest.approx(3e-3) and groups["upper"]["lr"] == pytest.approx(3e-4)
    adapter = ArchitectureAdapter(tr.model)
    upper_ids = {id(p) for p in adapter.upper_parameters(2)}
    assert {id(p) for p in groups["upper"]["params"]} == upper_ids  # block 3 + final norm (E_u is tied: lower)
    assert not upper_ids & {id(p) for p in groups["lower"]["params"]}


def test_ipa_lr_is_used_in_the_internal_phase_only(tmp_path):
    tr = make(tmp_path, method="bupo", layer=1, inter_steps=1, steps=2, ipa_lr=1e-4)
    rows = tr.train().metrics
    assert [r["lr"] for r in rows] == [pytest.approx(1e-4), pytest.approx(3e-3)]
    assert rows[0]["phase"] == "internal" and rows[1]["phase"] == "full"


def test_reset_optimizer_at_switch_clears_moments(tmp_path, monkeypatch):
    tr = make(
        tmp_path,
        method="bupo",
        layer=1,
        inter_steps=1,
        steps=1,
        reset_optimizer_at_switch=True,
        internal_phase_only=True,
    )
    tr.train()
    assert len(tr.optimizer.state) > 0  # moments of the lower blocks after the internal step
    tr.config.steps = 2
    seen = {}
    orig = step_mod.update_policy

    def spy(*a, **k):
        seen["state_at_update"] = len(tr.optimizer.state)
        return orig(*a, **k)

    monkeypatch.setattr(step_mod, "update_policy", spy)
    tr.train()
    assert seen["state_at_update"] == 0  # the switch step starts from fresh moments


def test_ipa_norm_final_optimises_the_normed_internal_policy(tmp_path):
    tr = make(
        tmp_path,
        method="bupo",
        layer=1,
        inter_steps=2,
        steps=2,
        ipa_norm="final",
        weight_decay=0.1,
        internal_phase_only=True,
    )
    before = snapshot(tr.model)
    rows = tr.train().metrics
    changed = moved(before, tr.model)
    assert any(k.startswith("model.norm.") for k in changed)  # the final norm is part of this policy
    assert not any(k.startswith("model.layers.1.") or k.startswith("model.layers.2.") for k in changed)
    # the logged internal log-prob is that of the normed policy (differs from the raw one)
    assert rows[0]["internal_logprob"] is not None and rows[0]["internal_logprob"] < 0
    batch_model = tiny_model("llama", vocab_size=tr.adapter.vocab_size, num_layers=3, seed=1)
    from bupo_core.sequences import pack_sequences

    b = pack_sequences([[3, 4, 5]], [[7, 8]], pad_token_id=0)
    raw, _ = policy_logprobs(batch_model, b, layer=1)
    normed, _ = policy_logprobs(batch_model, b, layer=1, norm="final")
    adapter = ArchitectureAdapter(batch_model)
    from bupo_core.capture import forward_to_layer

    h = forward_to_layer(batch_model, b.input_ids, 1, b.attention_mask)
    ref = torch.log_softmax(adapter.logits(h, norm="final"), -1).gather(-1, b.targets[..., None]).squeeze(-1)
    m = b.prediction_mask.bool()
    assert torch.allclose(normed[m], ref[m], atol=1e-5) and not torch.allclose(raw[m], normed[m], atol=1e-3)


def test_internal_phase_logs_its_policy(tmp_path):
    rows = make(tmp_path, method="bupo", layer=1, inter_steps=1, steps=2).train().metrics
    internal, full = rows
    for key in ("internal_logprob", "internal_entropy", "clip_frac", "approx_kl", "grad_norm", "entropy"):
        assert internal[key] is not None, key
    assert internal["internal_entropy"] > 0 and internal["internal_logprob"] < 0
    assert full["internal_logprob"] is None and full["internal_entropy"] is None


def test_bad_variant_settings(tmp_path):
    with pytest.raises(InputFormatError, match="ipa_norm"):
        TrainConfig(ipa_norm="layer").validate()
    with pytest.raises(InputFormatError, match="upper_lr_layer"):
        TrainConfig(upper_lr_scale=0.1).validate()
    with pytest.raises(InputFormatError, match="ipa_lr"):
        TrainConfig(ipa_lr=float("nan")).validate()
    with pytest.raises(LayerOutOfRangeError, match="0..2"):
        make(tmp_path, freeze_through_layer=3)


@pytest.mark.parametrize("method", ["grpo", "bupo"])
def test_speed_switches_give_the_same_step(tmp_path, method):
    """score_needed_rows_only and fused AdamW: the same step up to float rounding."""
    kw = dict(method=method, layer=1 if method == "bupo" else None, inter_steps=1, steps=2, ppo_epochs=2)
    fast = make(tmp_path, "fast", **kw)
    slow = make(tmp_path, "slow", score_needed_rows_only=False, fused_optimizer=False, share_prefill=False, **kw)
    start = snapshot(fast.model)
    rf, rs = fast.train().metrics, slow.train().metrics
    updates = sum(r["updates"] for r in rf)
    assert updates > 0
    for a, b in zip(rf, rs):
        assert a["reward_mean"] == b["reward_mean"] and a["updates"] == b["updates"]
        for key in ("loss", "grad_norm", "clip_frac", "approx_kl", "entropy"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), key
    # fused and per-tensor AdamW round differently (by CPU: 1e-5..2e-5 at lr 3e-3 on AVX-512): the
    # tolerance is in units of lr x updates, and the paths must agree in aggregate (tests/numerics.py)
    cfg = fast.config
    assert_same_adam_trajectory(
        fast.model.named_parameters(),
        slow.model.parameters(),
        start,
        lr=cfg.lr,
        updates=updates,
        betas=tuple(cfg.adam_betas),
        weight_decay=cfg.weight_decay,
    )
