"""The TRL-based BuPO trainer (bupo_core/trl_bupo.py): layouts, settings, equality with our Trainer, 2-process CPU run.

Equality (test_one_internal_and_one_full_update_equal_ours): from the same weights, the same batch
(same rows, same order) and the same advantages, one internal-phase update (layer 1) followed by one
full update of the TRL-based trainer and of our :class:`~bupo_core.trainer.Trainer` give

* the same loss, within ``LOSS_ATOL = 1e-5``: the loss is a token mean over n <= 48 tokens of
  per-token terms |A| * ratio <= 1.5 * 1.2 = 1.8; float32 sums in a different order differ by at most
  n * eps32 * 1.8 = 48 * 1.2e-7 * 1.8 ~ 1e-5;
* the same parameter change, elementwise within ``PARAM_ATOL = 1e-3 * lr``: AdamW's first steps move
  each weight by lr * m / (sqrt(v) + eps), which is invariant to the gradient's scale; a rounding
  difference delta_g in a gradient element g changes the step by at most lr * delta_g * eps / (|g| + eps)^2
  <= lr * delta_g / (4 eps); with delta_g <= 1e-12 (float32 rounding of gradients of size <= 1e-5) that is
  <= 2.5e-5 * lr, and an element whose true gradient is 0 moves by at most lr * delta_g / eps = 1e-4 * lr.
  1e-3 * lr bounds both with margin, and is 1,000x smaller than the changes compared (about lr);
* and the blocks above layer 1 (and the final norm) bit-identical after the internal-phase update.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bupo_core.errors import InputFormatError
from bupo_core.sequences import pack_sequences
from bupo_core.trl_bupo import (
    BupoTRLConfig,
    completion_to_packed,
    estimate_memory_gib,
    pack_prompt_completion,
    packed_to_completion,
)

trl = pytest.importorskip("trl")

ROOT = Path(__file__).resolve().parents[1]
LR = 1e-3
LOSS_ATOL = 1e-5
EPS = 1e-8
PARAM_ATOL = 1e-3 * LR


def test_trl_is_imported_lazily():
    code = "import sys, bupo_core, bupo_core.trl_bupo; print('trl' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_pack_prompt_completion_matches_our_packing():
    prompts, comps = [[5, 6, 7], [8]], [[9, 10], [11, 12, 13]]
    P, C = 3, 3
    p_ids = torch.zeros(2, P, dtype=torch.long)
    p_mask = torch.zeros(2, P, dtype=torch.long)
    c_ids = torch.zeros(2, C, dtype=torch.long)
    c_mask = torch.zeros(2, C, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, comps)):
        p_ids[i, P - len(p) :], p_mask[i, P - len(p) :] = torch.tensor(p), 1
        c_ids[i, : len(c)], c_mask[i, : len(c)] = torch.tensor(c), 1
    batch, rows = pack_prompt_completion(p_ids, p_mask, c_ids, c_mask, 0)
    ref = pack_sequences(prompts, comps, 0)
    assert rows == [0, 1]
    for k in ("input_ids", "attention_mask", "prediction_mask", "targets"):
        assert torch.equal(getattr(batch, k), getattr(ref, k)), k
    # completion grid <-> packed grid: value j of a completion sits where token j is predicted
    grid = torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]])
    packed = completion_to_packed(grid, batch)
    assert torch.equal(packed * batch.prediction_mask, packed)
    assert torch.equal(packed[batch.prediction_mask.bool()], torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert torch.equal(packed_to_completion(packed, batch, C), grid)
    # an empty completion is left out
    c_mask[0] = 0
    _, rows = pack_prompt_completion(p_ids, p_mask, c_ids, c_mask, 0)
    assert rows == [1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "bupo", "layer": None}, "needs layer"),
        ({"layer": 1, "inter_steps": -1}, "inter_steps"),
        ({"layer": 1, "ipa_norm": "x"}, "ipa_norm"),
        ({"layer": 1, "dual_clip": 1.0}, "dual_clip"),
        ({"layer": 1, "loss": "nope"}, "unknown loss"),
    ],
)
def test_config_rejects_bad_settings(kwargs, match):
    with pytest.raises(InputFormatError, match=match):
        BupoTRLConfig(**kwargs).validate()


def test_task_reward_function_grades_with_our_grader():
    from bupo_core.rewards import Grader
    from bupo_core.tasks import EASY_CHAIN_SUM, load_task
    from bupo_core.trl_bupo import task_dataset, task_reward_function

    task = load_task("chain_sum", size=6, seed=0, split="train", **EASY_CHAIN_SUM)
    data = task_dataset(task)
    assert len(data) == 6 and set(data.column_names) == {"prompt", "example_index"}
    assert data[0]["prompt"] == task.prompt(task.examples[data[0]["example_index"]])
    reward = task_reward_function(task, Grader(scorer=task.scorer, binary=True))
    idx = [data[0]["example_index"], data[1]["example_index"]]
    right = f"The answer is {task.examples[idx[0]].answer}"
    wrong = [{"role": "assistant", "content": f"{int(task.examples[idx[1]].answer) + 1}"}]
    assert reward([right, wrong], example_index=idx) == [1.0, 0.0]


def test_memory_estimate_shards_with_zero():
    kw = {
        "params": 4_000_000_000,
        "hidden": 2560,
        "layers": 36,
        "vocab": 151936,
        "kv_heads": 8,
        "head_dim": 128,
        "intermediate": 9728,
        "micro_batch": 4,
        "seq_tokens": 2048,
        "gen_rows": 64,
    }
    one = estimate_memory_gib(**kw)
    z2 = estimate_memory_gib(**kw, processes=8, zero_stage=2)
    assert one["adamw_states_fp32"] == pytest.approx(8 * 4e9 / 2**30)
    assert z2["adamw_states_fp32"] == pytest.approx(one["adamw_states_fp32"] / 8)
    assert z2["grads_fp32"] == pytest.approx(one["grads_fp32"] / 8)
    assert z2["weights_fp32"] == one["weights_fp32"]
    assert z2["peak"] < one["peak"]


# --------------------------------------------------------------------------- equality with our Trainer
def _fixed_rollout(tok, G: int, seed: int = 0):
    """2 prompts x G completions of 3..6 random tokens, TRL's layout, with fixed advantages (one zero)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [tok("Add 3 and 4.")["input_ids"], tok("What is 2 + 5? Answer:")["input_ids"]]
    rows_p = [prompts[i // G] for i in range(2 * G)]
    rows_c = [
        torch.randint(10, 1000, (int(torch.randint(3, 7, (1,), generator=g)),), generator=g).tolist()
        for _ in range(2 * G)
    ]
    P, C = max(map(len, rows_p)), max(map(len, rows_c))
    n = len(rows_p)
    out = {
        "prompt_ids": torch.full((n, P), tok.pad_token_id),
        "prompt_mask": torch.zeros(n, P, dtype=torch.long),
        "completion_ids": torch.full((n, C), tok.pad_token_id),
        "completion_mask": torch.zeros(n, C, dtype=torch.long),
    }
    for i, (p, c) in enumerate(zip(rows_p, rows_c)):
        out["prompt_ids"][i, P - len(p) :], out["prompt_mask"][i, P - len(p) :] = torch.tensor(p), 1
        out["completion_ids"][i, : len(c)], out["completion_mask"][i, : len(c)] = torch.tensor(c), 1
    out["advantages"] = torch.tensor([1.2, -0.8, 0.0, -0.4, 0.9, -1.1, 0.5, -0.3])[:n]
    out["num_items_in_batch"] = out["completion_mask"].sum()
    return out


@pytest.mark.parametrize("ipa_norm", ["none", "final"])
def test_one_internal_and_one_full_update_equal_ours(tmp_path, ipa_norm):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from bupo_core.adapter import ArchitectureAdapter
    from bupo_core.models import load_model
    from bupo_core.policy_head import policy_logprobs
    from bupo_core.step import set_learning_rate, update_policy
    from bupo_core.trainer import TrainConfig, Trainer
    from bupo_core.trl_bupo import bupo_grpo_trainer_class

    G, layer = 4, 1
    model, tok = load_model("tiny-random-qwen3", device="cpu", seed=0)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    ours_model = copy.deepcopy(model)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rollout = _fixed_rollout(tok, G)

    seen: list[dict] = []
    after: dict[int, dict] = {}

    class Fixed(bupo_grpo_trainer_class()):
        def _sample_and_score(self, inputs):
            # the old log-probs of the rollout's policy (our head), given to both trainers: the test compares
            # the update, so both start it from identical old log-probs
            out = {k: v.clone() for k, v in rollout.items()}
            batch, _ = pack_prompt_completion(
                out["prompt_ids"], out["prompt_mask"], out["completion_ids"], out["completion_mask"], tok.pad_token_id
            )
            with torch.no_grad():
                lp, _ = policy_logprobs(self.model, batch, layer=self._rollout_layer, norm=ipa_norm)
            out["old_per_token_logps"] = packed_to_completion(lp, batch, out["completion_ids"].shape[1])
            return out

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen.append(
                {
                    k: inputs[k].clone()
                    for k in (
                        "prompt_ids",
                        "prompt_mask",
                        "completion_ids",
                        "completion_mask",
                        "advantages",
                        "old_per_token_logps",
                    )
                }
            )
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    class Snap(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            after[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    targs = GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=2 * G,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=G,
        max_completion_length=8,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.01,
        max_grad_norm=1.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=EPS,
        optim="adamw_torch",
        beta=0.0,
        epsilon=0.2,
        max_steps=2,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
        gradient_checkpointing=False,
        bf16=False,  # TRL's defaults: both True (bf16 autocast even on CPU)
    )
    data = Dataset.from_list([{"prompt": "Add 3 and 4."}] * 16)
    bupo = BupoTRLConfig(method="bupo", layer=layer, inter_steps=1, dual_clip=10.0, ipa_norm=ipa_norm)
    trainer = Fixed(
        model=model,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=targs,
        train_dataset=data,
        processing_class=tok,
        callbacks=[Snap()],
        bupo=bupo,
    )
    trainer.train()
    assert trainer.state.global_step == 2 and len(seen) == 2
    assert [h["layer"] for h in trainer.bupo_history] == [layer, None]

    # ours: the same rows in the same order, the same advantages, one update per step
    cfg = TrainConfig(
        model="tiny-random-qwen3",
        method="bupo",
        layer=layer,
        inter_steps=1,
        prompts_per_step=2,
        group_size=G,
        ipa_norm=ipa_norm,
        num_mini_batches=1,
        micro_batch_size=2 * G,
        lr=LR,
        weight_decay=0.01,
        max_grad_norm=1.0,
        dual_clip=10.0,
        adam_eps=EPS,
        fused_optimizer=False,
        precision="fp32",
        device="cpu",
        steps=2,
        task_size=8,
        out_dir=str(tmp_path / "ours"),
    )
    ours = Trainer(cfg, model=ours_model, tokenizer=tok)
    ours_after, ours_loss = {}, []
    for step, inp in enumerate(seen, start=1):
        lay = layer if step == 1 else None
        set_learning_rate(ours.optimizer, cfg.lr_at(step))
        batch, rows = pack_prompt_completion(
            inp["prompt_ids"], inp["prompt_mask"], inp["completion_ids"], inp["completion_mask"], tok.pad_token_id
        )
        old = completion_to_packed(inp["old_per_token_logps"][rows], batch)
        upd = update_policy(ours, batch, inp["advantages"][rows].float(), lay, old_logp=old)
        assert upd["updates"] == 1
        ours_loss.append(upd["loss"])
        ours_after[step] = {k: v.detach().clone() for k, v in ours_model.state_dict().items()}

    for step in (1, 2):
        trl_loss = trainer.bupo_history[step - 1]["loss"]
        assert abs(trl_loss - ours_loss[step - 1]) <= LOSS_ATOL, (step, trl_loss, ours_loss[step - 1])
        assert abs(trl_loss) > 10 * LOSS_ATOL  # a real loss, not 0 = 0
        for k, w0 in start.items():
            d_trl, d_ours = after[step][k] - w0, ours_after[step][k] - w0
            assert torch.allclose(d_trl, d_ours, rtol=0, atol=PARAM_ATOL), (
                step,
                k,
                float((d_trl - d_ours).abs().max()),
            )
    # the comparison is not vacuous: weights moved by about lr
    emb = "model.embed_tokens.weight"
    assert float((after[1][emb] - start[emb]).abs().max()) > 0.5 * LR

    # internal phase: the blocks above layer 1 (and the final norm unless ipa_norm="final" makes it part of the
    # internal policy) are bit-identical; the full update moves them
    adapter = ArchitectureAdapter(model)
    upper_names = {n for n, p in model.named_parameters() if any(p is q for q in adapter.upper_parameters(layer))}
    if ipa_norm == "final":
        upper_names.discard("model.norm.weight")
        assert not torch.equal(after[1]["model.norm.weight"], start["model.norm.weight"])
    assert upper_names and any(n.startswith("model.layers.1.") for n in upper_names)
    assert ("model.norm.weight" in upper_names) == (ipa_norm == "none")
    for n in upper_names:
        assert torch.equal(after[1][n], start[n]), n
    assert any(not torch.equal(after[2][n], start[n]) for n in upper_names)

    # BuPO's statistics are in TRL's log history
    logs = trainer.state.log_history
    assert "bupo/internal_logprob" in logs[0] and "bupo/internal_entropy" in logs[0] and "bupo/clip_frac" in logs[0]
    assert logs[0]["bupo/internal_logprob"] < 0 and logs[0]["bupo/internal_entropy"] > 0
    assert "entropy" in logs[1] and logs[1]["bupo/layer"] == 0

    # TRL's own old / reference log-prob calls (used when a rollout feeds several optimizer steps) go through
    # our head with the rollout's policy, on TRL's completion grid, micro-batched
    r = rollout
    ids, am = (
        torch.cat([r["prompt_ids"], r["completion_ids"]], 1),
        torch.cat([r["prompt_mask"], r["completion_mask"]], 1),
    )
    C = r["completion_ids"].shape[1]
    batch, rows = pack_prompt_completion(
        r["prompt_ids"], r["prompt_mask"], r["completion_ids"], r["completion_mask"], tok.pad_token_id
    )
    for lay in (layer, None):
        trainer._rollout_layer = lay
        with torch.no_grad():
            lp_c, ent_c, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model, ids, am, C, batch_size=3, compute_entropy=True
            )
            ref_lp, ref_ent = policy_logprobs(trainer.model, batch, layer=lay, norm=ipa_norm)
        # micro-batches of 3 rows pad differently from the whole batch: float32 rounding of logp ~ -10.8
        assert torch.allclose(lp_c, packed_to_completion(ref_lp, batch, C), atol=1e-4, rtol=0)
        assert torch.allclose(ent_c, packed_to_completion(ref_ent, batch, C), atol=1e-4, rtol=0)
        assert torch.equal(lp_c != 0, r["completion_mask"].bool())


def test_inter_steps_must_be_whole_rollouts(tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig

    from bupo_core.models import load_model
    from bupo_core.trl_bupo import bupo_grpo_trainer_class

    model, tok = load_model("tiny-random-qwen3", device="cpu", seed=0)
    targs = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        steps_per_generation=2,
        num_generations=4,
        max_completion_length=4,
        max_steps=2,
        report_to="none",
        use_cpu=True,
        beta=0.0,
        lr_scheduler_type="constant",
    )
    data = Dataset.from_list([{"prompt": "hi"}] * 8)
    with pytest.raises(InputFormatError, match="multiple of the 2 optimizer steps per rollout"):
        bupo_grpo_trainer_class()(
            model=model,
            reward_funcs=lambda completions, **kw: [0.0] * len(completions),
            args=targs,
            train_dataset=data,
            processing_class=tok,
            bupo=BupoTRLConfig(layer=1, inter_steps=1),
        )


# --------------------------------------------------------------------------- the contract: 2 CPU processes
def test_two_process_cpu_run(tmp_path):
    """``accelerate launch --cpu --num_processes 2 examples/trl_bupo.py ...`` exits 0, writes trainer_state.json,
    really updates the weights, keeps the two processes' weights identical and the upper blocks frozen in the internal phase."""
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate),
        "launch",
        "--cpu",
        "--num_processes",
        "2",
        str(ROOT / "examples" / "trl_bupo.py"),
        "--model",
        "tiny-random-qwen3",
        "--max-steps",
        "2",
        "--inter-steps",
        "1",
        "--layer",
        "1",
        "--output-dir",
        str(out),
        "--reward",
        "ascii",
        "--check-frozen",
    ]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert list(out.rglob("trainer_state.json"))
    summary = json.loads((out / "bupo_trl_summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_step"] == 2
    assert summary["weights_identical_across_processes"] is True
    assert summary["frozen_check"]["upper_bit_identical"] is True
    assert summary["lower_params_changed"] is True
    state = json.loads((out / "trainer_state.json").read_text())
    assert any("bupo/internal_logprob" in row for row in state["log_history"])


def test_generation_in_chunks_of_generation_batch_size(tmp_path, monkeypatch):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from bupo_core.models import load_model
    from bupo_core.trl_bupo import bupo_grpo_trainer_class

    model, tok = load_model("tiny-random-qwen3", device="cpu", seed=0)
    targs = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        num_generations=4,
        max_completion_length=3,
        max_steps=1,
        report_to="none",
        use_cpu=True,
        beta=0.0,
        lr_scheduler_type="constant",
        bf16=False,
    )
    trainer = bupo_grpo_trainer_class()(
        model=model,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=targs,
        train_dataset=Dataset.from_list([{"prompt": "hi"}] * 8),
        processing_class=tok,
        bupo=BupoTRLConfig(layer=1, inter_steps=1, generation_batch_size=2),
    )
    calls = []
    orig = GRPOTrainer._generate_single_turn

    def spy(self, prompt_ids, *a, **kw):
        calls.append(len(prompt_ids))
        return orig(self, prompt_ids, *a, **kw)

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", spy)
    prompts = [tok("Add 3 and 4.")["input_ids"]] * 5
    completions, logprobs = trainer._generate_single_turn(prompts, None, {}, 4)
    assert calls == [2, 2, 1] and len(completions) == 5 and logprobs is None
    assert all(1 <= len(c) <= 3 for c in completions)
