"""Tests of the GRPO/BuPO loop on tiny models: IPA leaves the upper blocks bit-identical, exact resume,
checkpoints loadable by from_pretrained, Ctrl-C, non-finite updates, OOM and bad-config messages."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from bupo_core import step as step_mod
from bupo_core.adapter import ArchitectureAdapter
from bupo_core.errors import ConfigMismatchError, InputFormatError, LayerOutOfRangeError
from bupo_core.loop import TrainingOutOfMemoryError
from bupo_core.models import load_model, tiny_model
from bupo_core.policy_head import policy_logprobs
from bupo_core.rewards import register_scorer
from bupo_core.runs import latest_checkpoint, read_metrics
from bupo_core.sequences import pack_sequences
from bupo_core.step import TrainingError, score_batch, split_groups, update_policy
from bupo_core.trainer import TrainConfig, Trainer

# A reward with mixed values for a random model: even-length reply text.
register_scorer("test_even_length", lambda text, example: float(len(text) % 2 == 0))
register_scorer("test_always_one", lambda text, example: 1.0)

VOLATILE = {"time_generate", "time_score", "time_update", "tokens_per_s"}


def small_config(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(
        model="tiny-random-llama",
        task="chain_sum",
        task_size=50,
        reward="test_even_length",
        steps=4,
        prompts_per_step=3,
        group_size=4,
        max_new_tokens=6,
        lr=3e-3,
        micro_batch_size=5,
        num_mini_batches=2,
        out_dir=str(tmp_path / name),
        seed=7,
    )
    base.update(kw)
    return TrainConfig(**base)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def stable(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma2", "gpt2"])
def test_policy_logprobs_match_model_logits_and_internal_policy(family):
    model = tiny_model(family)
    adapter = ArchitectureAdapter(model)
    batch = pack_sequences([[3, 4, 5], [6]], [[7, 8], [9, 10, 11]], pad_token_id=0)
    with torch.no_grad():
        lp, ent = policy_logprobs(model, batch, chunk_size=3)
        ref = torch.log_softmax(
            model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=(batch.attention_mask.cumsum(-1) - 1).clamp(min=0),
            ).logits.float(),
            -1,
        )
        m = batch.prediction_mask.bool()
        assert torch.allclose(lp[m], ref.gather(-1, batch.targets[..., None]).squeeze(-1)[m], atol=1e-4)
        # internal policy: raw H^1 through E_u, no norm (adapter.logits(h, norm="none"))
        from bupo_core.capture import capture_residuals

        cap = capture_residuals(model, batch.input_ids, batch.attention_mask)
        ref1 = torch.log_softmax(adapter.logits(cap.resid(1), norm="none"), -1)
        lp1, _ = policy_logprobs(model, batch, layer=1, chunk_size=2)
        assert torch.allclose(lp1[m], ref1.gather(-1, batch.targets[..., None]).squeeze(-1)[m], atol=1e-4)


def test_internal_phase_leaves_upper_blocks_and_final_norm_bit_identical(tmp_path):
    model, tok = load_model("tiny-random-llama", device="cpu")
    # three layers so that block 3 (and 2) lie above the target layer 1
    model3 = tiny_model("llama", vocab_size=len(tok), num_layers=3, seed=1)
    cfg = small_config(
        tmp_path, method="bupo", layer=1, inter_steps=2, steps=2, weight_decay=0.1, internal_phase_only=True
    )
    tr = Trainer(cfg, model=model3, tokenizer=tok)
    adapter = ArchitectureAdapter(model3)
    upper = {id(p) for p in adapter.upper_parameters(1)}
    names_upper = [n for n, p in model3.named_parameters() if id(p) in upper]
    assert any(n.startswith("model.layers.2.") for n in names_upper) and "model.norm.weight" in names_upper
    before = weights(model3)
    res = tr.train()
    after = weights(model3)
    assert all(r["phase"] == "internal" for r in res.metrics)
    assert sum(r["updates"] for r in res.metrics) > 0
    for n in names_upper:
        assert torch.equal(before[n], after[n]), n
    lower_changed = [
        n
        for n in before
        if n.startswith(("model.layers.0.", "model.embed_tokens")) and not torch.equal(before[n], after[n])
    ]
    assert lower_changed, "IPA should move the embedding and block 1"
    # then the full phase moves the upper blocks too
    cfg2 = small_config(tmp_path, "run2", method="bupo", layer=1, inter_steps=1, steps=2)
    tr2 = Trainer(cfg2, model=model3, tokenizer=tok)
    before = weights(model3)
    res = tr2.train()
    assert [r["phase"] for r in res.metrics] == ["internal", "full"]
    assert res.metrics[0]["internal_entropy"] is not None and res.metrics[1]["internal_entropy"] is None
    assert any(not torch.equal(before[n], weights(model3)[n]) for n in names_upper)


def test_exact_resume_matches_uninterrupted_run(tmp_path):
    cfg_a = small_config(tmp_path, "straight", method="bupo", layer=1, inter_steps=1)
    res_a = Trainer(cfg_a).train()
    w_a = weights(_load(res_a.last_checkpoint))

    cfg_b = small_config(tmp_path, "split", method="bupo", layer=1, inter_steps=1, steps=2)
    Trainer(cfg_b).train()
    cfg_b4 = small_config(tmp_path, "split", method="bupo", layer=1, inter_steps=1, steps=4)
    res_b = Trainer(cfg_b4, resume=True).train()
    assert res_b.step == 4 and [r["step"] for r in res_b.metrics] == [3, 4]
    rows_a = read_metrics(cfg_a.out_dir)
    rows_b = read_metrics(cfg_b4.out_dir)
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4]
    assert stable(rows_a) == stable(rows_b)
    w_b = weights(_load(res_b.last_checkpoint))
    for k in w_a:
        assert torch.equal(w_a[k], w_b[k]), k


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def test_checkpoint_layout_and_from_pretrained(tmp_path):
    cfg = small_config(tmp_path, steps=2, save_every=1)
    tr = Trainer(cfg)
    res = tr.train()
    ck = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    c2 = ck / "checkpoint-2"
    assert {
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "trainer_state.json",
        "bupo-checkpoint.json",
    } <= {p.name for p in c2.iterdir()}
    assert not list(c2.glob("*.pt")) and not list(c2.glob("*.bin"))  # nothing pickled
    state = json.loads((c2 / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["data_position"] == 6
    loaded = _load(c2)
    for k, v in tr.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    rows = read_metrics(tmp_path / "run")
    needed = {
        "step",
        "phase",
        "reward_mean",
        "reward_std",
        "loss",
        "zero_adv_group_frac",
        "clip_frac",
        "approx_kl",
        "entropy",
        "internal_entropy",
        "response_length_mean",
        "time_generate",
        "time_score",
        "time_update",
        "tokens_per_s",
    }
    assert needed <= set(rows[0]) and rows[0]["step"] == 1 and rows[0]["phase"] == "full"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 2
    assert res.last_checkpoint == c2
    # keep_checkpoints prunes old ones
    cfg3 = small_config(tmp_path, "pruned", steps=3, save_every=1, keep_checkpoints=1)
    Trainer(cfg3).train()
    assert [p.name for p in (tmp_path / "pruned" / "checkpoints").iterdir()] == ["checkpoint-3"]


def test_keyboard_interrupt_writes_checkpoint_and_resumes(tmp_path):
    cfg = small_config(tmp_path, steps=4)
    tr = Trainer(cfg)

    def stop(row):
        if row["step"] == 2:
            raise KeyboardInterrupt

    res = tr.train(callback=stop)
    assert res.interrupted and res.step == 2
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "checkpoint-2"
    res2 = Trainer(cfg, resume=True).train()
    assert res2.step == 4 and not res2.interrupted


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_update_finishes_the_step_first(tmp_path, sig, monkeypatch):
    """Ctrl-C and SIGTERM (kill, a scheduler's preemption) both checkpoint the last finished step."""
    cfg = small_config(tmp_path, steps=3)
    tr = Trainer(cfg)
    original = step_mod.update_policy
    before = signal.getsignal(signal.SIGTERM)

    def update_then_interrupt(*a, **k):
        os.kill(os.getpid(), sig)  # arrives while the update runs
        return original(*a, **k)

    monkeypatch.setattr(step_mod, "update_policy", update_then_interrupt)
    res = tr.train()
    monkeypatch.undo()
    assert res.interrupted and res.step == 1
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1]
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "checkpoint-1"
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is restored after training
    assert Trainer(cfg, resume=True).train().step == 3


def test_all_equal_rewards_warn_count_and_skip(tmp_path):
    cfg = small_config(tmp_path, steps=1, reward="test_always_one")
    tr = Trainer(cfg)
    before = weights(tr.model)
    with pytest.warns(UserWarning, match="every group has equal rewards"):
        res = tr.train()
    row = res.metrics[0]
    assert row["zero_adv_group_frac"] == 1.0 and row["updates"] == 0 and row["skipped_updates"] == 2
    after = weights(tr.model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # no weight-decay drift either


def test_nonfinite_updates_are_skipped_then_training_stops(tmp_path, monkeypatch):
    import dataclasses

    from bupo_core.losses import POLICY_LOSSES

    real = POLICY_LOSSES["grpo"].fn

    def nan_loss(*a, **k):
        out = real(*a, **k)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setitem(POLICY_LOSSES, "grpo", dataclasses.replace(POLICY_LOSSES["grpo"], fn=nan_loss))
    cfg = small_config(tmp_path, steps=4, max_nonfinite_updates=3)
    tr = Trainer(cfg)
    before = weights(tr.model)
    with (
        pytest.warns(UserWarning, match="non-finite"),
        pytest.raises(TrainingError, match="consecutive updates had a non-finite.*Lower lr"),
    ):
        tr.train()
    after = weights(tr.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    rows = read_metrics(tmp_path / "run")
    assert rows and rows[0]["nonfinite_updates"] >= 1 and rows[0]["updates"] == 0


def test_out_of_memory_message(tmp_path, monkeypatch):
    cfg = small_config(tmp_path, steps=1)
    tr = Trainer(cfg)

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tr, "train_step", oom)
    with pytest.raises(TrainingOutOfMemoryError, match="micro_batch_size.*max_new_tokens.*gradient_checkpointing"):
        tr.train()


def test_bad_configs(tmp_path):
    with pytest.raises(InputFormatError, match="group_size must be at least 2"):
        small_config(tmp_path, group_size=1).validate()
    with pytest.raises(InputFormatError, match="needs layer"):
        small_config(tmp_path, method="bupo").validate()
    with pytest.raises(LayerOutOfRangeError, match="use 1..2"):
        Trainer(small_config(tmp_path, method="bupo", layer=3, inter_steps=1))
    with pytest.raises(LayerOutOfRangeError):
        Trainer(small_config(tmp_path, method="bupo", layer=0, inter_steps=1))
    with pytest.raises(InputFormatError, match="unknown task 'nope'.*chain_sum"):
        Trainer(small_config(tmp_path, task="nope"))
    with pytest.raises(InputFormatError, match="num_mini_batches"):
        small_config(tmp_path, num_mini_batches=9).validate()


def test_resume_with_mismatched_config(tmp_path):
    Trainer(small_config(tmp_path, steps=1)).train()
    with pytest.raises(ConfigMismatchError, match=r"lr: saved 0.003, now 0.1"):
        Trainer(small_config(tmp_path, steps=2, lr=0.1), resume=True)
    with pytest.raises(ConfigMismatchError, match="no run to resume"):
        Trainer(small_config(tmp_path, "empty", steps=2), resume=True)
    # steps may change
    res = Trainer(small_config(tmp_path, steps=2), resume=True).train()
    assert res.step == 2


def test_sequence_mean_kl_and_gradient_checkpointing_run(tmp_path):
    cfg = small_config(
        tmp_path,
        steps=1,
        loss_aggregation="sequence-mean",
        kl_coef=0.05,
        gradient_checkpointing=True,
        method="bupo",
        layer=2,
        inter_steps=1,
        internal_phase_only=True,
    )
    res = Trainer(cfg).train()
    assert res.metrics[0]["updates"] >= 1 and res.metrics[0]["kl_ref"] >= 0


def test_split_groups():
    assert split_groups(4, 2) == [[0, 1], [2, 3]]
    assert split_groups(3, 3) == [[0], [1], [2]]


def _trainer_and_batch(tmp_path, name, **kw):
    """A tiny trainer and a fixed packed batch of 2 groups x 2 responses (no sampling involved)."""
    torch.manual_seed(0)
    kw = {"num_mini_batches": 2, **kw}
    cfg = small_config(tmp_path, name, prompts_per_step=2, group_size=2, **kw)
    tr = Trainer(cfg)
    batch = pack_sequences(
        [[3, 4, 5], [3, 4, 5], [6, 7], [6, 7]], [[8, 9, 10], [11, 12], [13, 14, 15, 16], [17]], pad_token_id=0
    )
    old_logp = score_batch(tr, batch, None)[0]
    return tr, batch, old_logp


def test_skip_zero_advantage_rows_gives_an_identical_update(tmp_path, monkeypatch):
    # one mini-batch holding a group with signal and one without (a mini-batch whose rows are all
    # skipped takes no optimizer step at all, which is not the same as AdamW's step on zero gradients)
    adv = torch.tensor([1.0, -1.0, 0.0, 0.0])
    results = {}
    for skip in (True, False):
        tr, batch, old = _trainer_and_batch(
            tmp_path, f"skip{skip}", skip_zero_advantage_rows=skip, micro_batch_size=1, num_mini_batches=1
        )
        calls = []
        real = step_mod.logprobs
        monkeypatch.setattr(
            step_mod,
            "logprobs",
            lambda run, sub, layer, model=None, *, calls=calls, real=real: (
                calls.append(len(sub)),
                real(run, sub, layer, model),
            )[1],
        )
        stats = update_policy(tr, batch, adv, None, old_logp=old)
        monkeypatch.undo()
        results[skip] = (weights(tr.model), stats, len(calls))
    (w_skip, s_skip, n_skip), (w_all, s_all, n_all) = results[True], results[False]
    assert n_skip == 2 and n_all == 4  # the zero-advantage rows were not run
    assert s_skip["updates"] == s_all["updates"] == 1
    assert all(torch.equal(w_skip[k], w_all[k]) for k in w_skip)  # ... and the weights are bit-identical
    assert any(
        not torch.equal(w_skip[k], v) for k, v in weights(load_model("tiny-random-llama", device="cpu")[0]).items()
    )


def test_ppo_epochs_reuse_the_step_old_logprobs(tmp_path):
    """ppo_epochs=2 is two passes over the same rollout with the same old log-probs (not recomputed)."""
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    tr2, batch, old = _trainer_and_batch(tmp_path, "epochs2", ppo_epochs=2)
    stats = update_policy(tr2, batch, adv, None, old_logp=old)
    assert stats["updates"] == 4
    assert stats["approx_kl"] > 0  # later mini-batches see a policy that has moved away from old_logp
    tr1, batch1, old1 = _trainer_and_batch(tmp_path, "epochs1", ppo_epochs=1)
    assert torch.equal(old1, old)
    update_policy(tr1, batch1, adv, None, old_logp=old1)
    once = weights(tr1.model)
    update_policy(tr1, batch1, adv, None, old_logp=old1)
    twice = weights(tr1.model)
    w2 = weights(tr2.model)
    assert all(torch.equal(w2[k], twice[k]) for k in w2)
    assert any(not torch.equal(w2[k], once[k]) for k in w2)  # the second epoch did change the weights
