"""Precision chosen by the card: bf16 from compute capability 8.0, fp16 with loss scaling below, fp32 without a GPU.

Every mode is exercised on the CPU (CPU autocast takes bf16 and fp16, and torch's GradScaler runs
on CPU), with stated tolerances:

* the full policy's log-probs under autocast agree with float32 within ``LOGP_ATOL[mode]`` nats:
  0.25 for bf16 (measured 0.08 on the embedded model), 0.25 / 8 for fp16 (fp16 keeps 3 more
  mantissa bits: its unit roundoff is 2^-11 against bf16's 2^-8; measured 0.011);
* one training step at lr 1e-6 moves the float32 master weights by ~lr (AdamW's first step) in every
  mode: the largest change lies in (0.5e-6, 3e-6) and most weights change.
"""

from __future__ import annotations

import json

import pytest
import torch

import bupo_core
from bupo_core import precision as prec
from bupo_core.cli import main
from bupo_core.errors import InputFormatError
from bupo_core.models import tiny_model
from bupo_core.precision import LossScaler, choose_precision, resolve_precision
from bupo_core.rewards import register_scorer
from bupo_core.runtime import default_dtype
from bupo_core.sequences import pack_sequences
from bupo_core.step import optimizer_step
from bupo_core.trainer import TrainConfig, Trainer, policy_logprobs

LOGP_ATOL = {"bf16": 0.25, "fp16": 0.25 / 8, "fp32": 1e-5}
MODES = ("bf16", "fp16", "fp32")

register_scorer("precision_test_even_length", lambda text, example: float(len(text) % 2 == 0))


def test_choose_precision_by_capability():
    assert bupo_core.choose_precision is choose_precision
    assert choose_precision((7, 5)) == "fp16"  # T4
    assert choose_precision((7, 0)) == choose_precision((6, 0)) == "fp16"  # V100, P100
    assert (
        choose_precision((8, 0))
        == choose_precision((8, 6))
        == choose_precision((8, 9))
        == choose_precision((9, 0))
        == "bf16"
    )
    assert choose_precision(None) == "fp32"


def test_auto_uses_the_capability_never_is_bf16_supported(monkeypatch):
    def boom():
        raise AssertionError("is_bf16_supported() says True on a T4 (emulation); it must not decide")

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", boom)
    t4 = resolve_precision("auto", "cpu", capability=(7, 5))
    assert t4.mode == "fp16" and "no native bfloat16" in t4.reason and "loss scaling" in t4.reason
    a100 = resolve_precision("auto", "cpu", capability=(8, 0))
    assert a100.mode == "bf16" and "native bfloat16" in a100.reason
    assert resolve_precision("auto", "cpu").mode == "fp32"
    assert resolve_precision("bf16", "cpu", capability=(7, 5)).reason.count("emulates bf16") == 1
    for cap, dtype in (((7, 5), torch.float32), ((8, 0), torch.bfloat16), (None, torch.float32)):
        monkeypatch.setattr(prec, "cuda_capability", lambda dev, cap=cap: cap)
        assert default_dtype("cuda") == dtype, cap
    with pytest.raises(InputFormatError, match="auto, bf16, fp16, fp32"):
        resolve_precision("half", "cpu")


@pytest.mark.parametrize("cap, mode", [((7, 5), "fp16"), ((8, 0), "bf16")])
def test_bupo_train_precision_auto_on_a_faked_card(monkeypatch, tmp_path, capsys, cap, mode):
    """`bupo train --precision auto` on a faked card: the choice is printed with its reason and used."""
    monkeypatch.setattr(prec, "cuda_capability", lambda dev: cap)
    seen = []
    original = Trainer.train_step

    def spy(self):
        seen.append((self.precision.mode, self.scaler.enabled, torch.is_autocast_enabled("cpu")))
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", spy)
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--model",
            "tiny-random-llama",
            "--task",
            "chain_sum",
            "--prompts-per-step",
            "2",
            "--group-size",
            "2",
            "--max-new-tokens",
            "4",
            "--task-size",
            "20",
            "--quiet",
            "--steps",
            "1",
            "--precision",
            "auto",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"precision: {mode} (auto: " in printed and f"compute capability {cap[0]}.{cap[1]}" in printed
    assert seen == [(mode, mode == "fp16", False)]
    assert json.loads((out / "config.json").read_text())["precision"] == "auto"


def test_precision_flag_rejects_unknown_values(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", "tiny-random-llama", "--precision", "fp8", "--out", str(tmp_path / "x")])
    assert "fp8" in capsys.readouterr().err


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_moves_float32_weights_at_lr_1e6_with_finite_losses(tmp_path, tiny_llm, mode):
    _, tok = tiny_llm
    model = tiny_model("llama", vocab_size=len(tok), seed=3)
    cfg = TrainConfig(
        model="tiny-random-llama",
        task="chain_sum",
        task_size=20,
        reward="precision_test_even_length",
        steps=1,
        prompts_per_step=4,
        group_size=4,
        max_new_tokens=6,
        lr=1e-6,
        num_mini_batches=1,
        micro_batch_size=16,
        precision=mode,
        device="cpu",
        out_dir=str(tmp_path / "run"),
        seed=1,
    )
    tr = Trainer(cfg, model=model, tokenizer=tok)
    assert tr.precision.mode == mode and tr.scaler.enabled == (mode == "fp16")
    with tr.precision.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == prec.COMPUTE_DTYPE[mode]
    before = {k: v.detach().clone() for k, v in tr.model.named_parameters()}
    row = tr.train_step()
    assert row["updates"] == 1 and row["nonfinite_updates"] == 0, row
    assert all(torch.isfinite(torch.tensor(row[k])) for k in ("loss", "grad_norm", "entropy"))
    after = {k: v.detach() for k, v in tr.model.named_parameters()}
    assert all(v.dtype == torch.float32 for v in after.values())
    changed = sum(int((after[k] != before[k]).sum()) for k in before) / sum(v.numel() for v in before.values())
    assert changed > 0.5
    step = max(float((after[k] - before[k]).abs().max()) for k in before)
    assert 0.5e-6 < step < 3e-6, step
    if mode == "fp16":
        ckpt = tr.save_checkpoint()
        state = json.loads((ckpt / "trainer_state.json").read_text())
        assert state["loss_scaler"]["scaler"]["scale"] == tr.scaler.scale


@pytest.fixture(scope="module")
def smollm_batch(smollm):
    model, tok = smollm
    ids = tok("The quick brown fox jumps over the lazy dog. Then 17 + 25 = 42, and so the answer is 42.").input_ids
    return model, pack_sequences([ids[:8]], [ids[8:]], pad_token_id=0)


@pytest.mark.parametrize("mode", MODES)
def test_full_policy_logprobs_of_each_mode_within_the_stated_tolerance(smollm_batch, mode):
    model, batch = smollm_batch
    m = batch.prediction_mask.bool()
    with torch.no_grad():
        ref, ref_ent = policy_logprobs(model, batch)
        with prec.autocast_context(mode, "cpu"):
            lp, ent = policy_logprobs(model, batch)
    assert lp.dtype == ent.dtype == torch.float32  # the head is float32 in every mode
    assert (lp - ref)[m].abs().max() < LOGP_ATOL[mode]
    assert (ent - ref_ent)[m].abs().max() < LOGP_ATOL[mode]


def test_fp16_overflow_halves_the_scale_and_skips_without_stopping(tmp_path, tiny_llm):
    _, tok = tiny_llm
    cfg = TrainConfig(
        model="tiny-random-llama",
        task="chain_sum",
        task_size=20,
        reward="precision_test_even_length",
        steps=1,
        prompts_per_step=2,
        group_size=2,
        max_new_tokens=4,
        precision="fp16",
        device="cpu",
        out_dir=str(tmp_path / "run"),
        max_nonfinite_updates=1,
    )
    tr = Trainer(cfg, model=tiny_model("llama", vocab_size=len(tok)), tokenizer=tok)
    scale = tr.scaler.scale
    before = [p.detach().clone() for p in tr.params]
    for _ in range(3):  # more overflows than max_nonfinite_updates: not a divergence, so no TrainingError
        for p in tr.params:
            p.grad = torch.full_like(p, float("inf"))
        assert optimizer_step(tr, 0.5, None) is None
    assert tr.scaler.scale == scale / 8 and tr.nonfinite_streak == 0
    assert all(torch.equal(a, b) for a, b in zip(before, tr.params))


def test_loss_scaler_state_round_trip():
    a = LossScaler("fp16", "cpu", init_scale=1024.0)
    a.skip()
    b = LossScaler("fp16", "cpu")
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.scale == 512.0
    plain = LossScaler("bf16", "cpu")
    assert not plain.enabled and plain.scale == 1.0 and plain.state_dict() == {"mode": "bf16"}


def test_simulate_switch(monkeypatch):
    monkeypatch.delenv(prec.SIMULATE_ENV, raising=False)
    assert prec.simulated_dtype() is None and default_dtype("cpu") == torch.float32
    monkeypatch.setenv(prec.SIMULATE_ENV, "bfloat16")
    assert default_dtype("cpu") == torch.bfloat16
    choice = resolve_precision("auto", "cpu")
    assert choice.mode == "bf16" and "BUPO_SIMULATE_DTYPE" in choice.reason
    assert resolve_precision("fp32", "cpu").mode == "fp32"  # an explicit setting wins
    monkeypatch.setenv(prec.SIMULATE_ENV, "float16")
    assert default_dtype("cpu") == torch.float16 and resolve_precision("auto", "cpu").mode == "fp16"
    monkeypatch.setenv(prec.SIMULATE_ENV, "int8")
    with pytest.raises(InputFormatError, match="bfloat16 or float16"):
        prec.simulated_dtype()


def test_ci_runs_every_notebook_under_the_bf16_switch():
    from pathlib import Path  # noqa: PLC0415

    root = Path(__file__).resolve().parents[1]
    make = (root / "Makefile").read_text()
    target = make[make.index("test-notebooks-bf16: install") :].split("\n\n")[0]
    assert (
        "BUPO_SIMULATE_DTYPE=bfloat16" in target
        and "BUPO_FAST=1" in target
        and "--nbval-lax" in target
        and "notebooks/*.ipynb" in target
    )
    assert "make test-notebooks-bf16" in (root / ".ci" / "run").read_text()
