"""Benchmark: our GRPO step vs TRL's ``GRPOTrainer`` on the same model, task and batch shape, on CPU.

Same settings on both sides: the embedded SmolLM2-135M-Instruct (loaded from its converted local
folder, offline), reasoning-gym ``chain_sum`` (2 terms, 1 digit) with the short prompt, B prompts x
G samples per step, the same maximum response length, temperature 1.0, two optimizer updates
(mini-batches) per rollout batch, AdamW (lr, weight decay 0.01, grad clip 1.0), no KL (beta = 0),
float32 on CPU.

Side by side in ONE process: a TRL ``TrainerCallback`` runs one of our steps right after every TRL
rollout step (two TRL optimizer steps), so background load hits both alike. A "step" is generation
+ scoring + old log-probs + both updates. The first step of each side is a warm-up and is dropped.

Loss check: on a fixed batch (our sampled rollout, perturbed old log-probs so that ratios differ
from 1 and clipping is active), our ``clipped_policy_loss`` is compared with TRL's own
``GRPOTrainer._compute_loss`` (loss_type="bnpo": token mean over the batch, like our "token-mean"),
with the dual clip off on our side (TRL has none) and then on (to show the difference by design).

Run (writes bench/results/grpo_vs_trl.json; ~5-10 min on 2 busy CPU cores):

    .venv/bin/python bench/grpo_vs_trl.py
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

import torch

from bupo_core.grpo import clipped_policy_loss, group_advantages
from bupo_core.models import ensure_embedded, load_model
from bupo_core.rewards import Grader
from bupo_core.trainer import TrainConfig, Trainer, policy_logprobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--steps", type=int, default=4, help="measured steps per side (after one warm-up step)")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "grpo_vs_trl.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    folder = str(ensure_embedded("smollm2-135m-instruct"))
    B, G, T = args.prompts, args.group_size, args.max_new_tokens
    N = B * G

    # ---------------------------------------------------------------- ours
    our_model, tok = load_model(folder, device="cpu")
    cfg = TrainConfig(
        model=folder,
        prompts_per_step=B,
        group_size=G,
        max_new_tokens=T,
        lr=args.lr,
        num_mini_batches=2,
        micro_batch_size=N // 2,
        steps=10_000,
        out_dir=tempfile.mkdtemp(prefix="bupo-bench-ours-"),
        seed=0,
    )
    ours = Trainer(cfg, model=our_model, tokenizer=tok)
    task = ours.task

    # ---------------------------------------------------------------- TRL
    rows = [{"prompt": task.prompt(e), "answer": e.answer} for e in task.batch(0, B * (args.steps + 2))]
    dataset = datasets.Dataset.from_list(rows)
    grader = Grader(scorer="last_number")

    from bupo_core.tasks import Example

    def reward_fn(completions, answer, **kw):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return grader(texts, [Example("q", a) for a in answer]).rewards

    trl_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    trl_tok = AutoTokenizer.from_pretrained(folder)
    trl_tok.pad_token = trl_tok.pad_token or trl_tok.eos_token
    trl_tok.padding_side = "left"
    targs = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bupo-bench-trl-"),
        per_device_train_batch_size=N // 2,
        steps_per_generation=2,
        gradient_accumulation_steps=1,
        num_generations=G,
        max_completion_length=T,
        learning_rate=args.lr,
        weight_decay=0.01,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=0.0,
        epsilon=0.2,
        loss_type="bnpo",
        temperature=1.0,
        top_p=1.0,
        max_steps=2 * (args.steps + 1),
        report_to="none",
        use_vllm=False,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
        num_iterations=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )

    timings = {"trl": [], "ours": []}
    our_rows = []

    class Interleave(TrainerCallback):
        def __init__(self):
            self.t0 = None

        def on_step_begin(self, a, state, control, **kw):
            if state.global_step % 2 == 0:
                self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if state.global_step % 2 == 0:  # both TRL updates of this rollout batch are done
                timings["trl"].append(time.perf_counter() - self.t0)
                t = time.perf_counter()
                row = ours.train_step()
                timings["ours"].append(time.perf_counter() - t)
                our_rows.append(row)

    trl_trainer = GRPOTrainer(
        model=trl_model,
        reward_funcs=reward_fn,
        args=targs,
        train_dataset=dataset,
        processing_class=trl_tok,
        callbacks=[Interleave()],
    )
    trl_trainer.train()
    trl_t, our_t = timings["trl"][1:], timings["ours"][1:]
    ratio = statistics.median(our_t) / statistics.median(trl_t)
    print(
        f"median step: ours {statistics.median(our_t):.2f} s, TRL {statistics.median(trl_t):.2f} s, ratio {ratio:.3f}"
    )

    # ---------------------------------------------------------------- loss check on a fixed batch
    from bupo_core.rollout import SamplingConfig, generate

    check_model = copy.deepcopy(our_model).train()
    ex = task.batch(1000, 2)
    ro = generate(
        check_model, tok, [task.prompt(e) for e in ex], group_size=4, config=SamplingConfig(max_new_tokens=T), seed=3
    )
    rewards = torch.tensor(grader(ro.texts, [ex[i] for i in ro.prompt_index]).rewards)
    adv, _ = group_advantages(rewards, 4)
    if (adv == 0).all():
        adv = torch.tensor([1.0, -1.0, 0.5, -0.5, -1.0, 1.0, 0.25, -0.25])
    batch = ro.pack(tok.pad_token_id)
    with torch.no_grad():
        lp, _ = policy_logprobs(check_model, batch)
    g = torch.Generator().manual_seed(0)
    old = lp + 0.4 * torch.randn(lp.shape, generator=g) * batch.prediction_mask
    old[0, batch.prediction_mask[0].nonzero()[0, 0]] -= (
        4.0  # one token with ratio ~ e^4 > 10: the dual clip matters if A < 0
    )
    adv[0] = -abs(adv[0]) if adv[0] != 0 else -1.0
    ours_nodual = clipped_policy_loss(lp, old, adv, batch.prediction_mask, dual_clip=None)
    ours_dual = clipped_policy_loss(lp, old, adv, batch.prediction_mask, dual_clip=10.0)
    # TRL inputs: left-padded prompts, right-padded completions, per-completion-token old log-probs
    P = max(len(p) for p in ro.prompt_ids)
    C = max(len(r) for r in ro.response_ids)
    pad = tok.pad_token_id
    prompt_ids = torch.full((len(ro), P), pad)
    prompt_mask = torch.zeros((len(ro), P), dtype=torch.long)
    comp_ids = torch.full((len(ro), C), pad)
    comp_mask = torch.zeros((len(ro), C), dtype=torch.long)
    old_c = torch.zeros((len(ro), C))
    for i, (p, r) in enumerate(zip(ro.prompt_ids, ro.response_ids)):
        prompt_ids[i, P - len(p) :] = torch.tensor(p)
        prompt_mask[i, P - len(p) :] = 1
        comp_ids[i, : len(r)] = torch.tensor(r)
        comp_mask[i, : len(r)] = 1
        pos = batch.prediction_mask[i].nonzero().squeeze(-1)
        old_c[i, : len(r)] = old[i, pos]
    trl_trainer.model.load_state_dict(check_model.state_dict())
    trl_trainer.model.train()
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": comp_ids,
        "completion_mask": comp_mask,
        "advantages": adv,
        "old_per_token_logps": old_c,
        "num_items_in_batch": comp_mask.sum(),
    }
    trl_trainer.current_gradient_accumulation_steps = 1
    with torch.no_grad():
        trl_loss = float(trl_trainer._compute_loss(trl_trainer.model, inputs))
    print(
        f"loss on a fixed batch: ours (no dual clip) {float(ours_nodual.loss):.6f}, TRL bnpo {trl_loss:.6f}, "
        f"ours with dual clip {float(ours_dual.loss):.6f}"
    )

    out = {
        "benchmark": "grpo_vs_trl",
        "step_time_ratio_ours_over_trl": ratio,
        "target_ratio_max": 1.0,
        "meets_target": ratio <= 1.0,
        "median_step_s_ours": statistics.median(our_t),
        "median_step_s_trl": statistics.median(trl_t),
        "step_times_s_ours": our_t,
        "step_times_s_trl": trl_t,
        "warmup_step_s": {"ours": timings["ours"][0], "trl": timings["trl"][0]},
        "our_reward_means": [r["reward_mean"] for r in our_rows],
        "settings": {
            "model": "smollm2-135m-instruct (converted local folder)",
            "task": "chain_sum min_terms=2 max_terms=2 min_digits=1 max_digits=1, short prompt",
            "prompts_per_step": B,
            "group_size": G,
            "max_new_tokens": T,
            "updates_per_rollout": 2,
            "lr": args.lr,
            "weight_decay": 0.01,
            "max_grad_norm": 1.0,
            "beta": 0.0,
            "epsilon": 0.2,
            "device": "cpu",
            "dtype": "float32",
            "measured_steps": args.steps,
            "trl_version": trl.__version__,
            "trl_loss_type": "bnpo",
            "our_skip_zero_advantage_rows": cfg.skip_zero_advantage_rows,
        },
        "loss_check": {
            "ours_token_mean_no_dual_clip": float(ours_nodual.loss),
            "trl_bnpo": trl_loss,
            "abs_difference": abs(float(ours_nodual.loss) - trl_loss),
            "equal_within_1e-5": abs(float(ours_nodual.loss) - trl_loss) < 1e-5,
            "ours_with_dual_clip_c10": float(ours_dual.loss),
            "dual_clip_fraction": ours_dual.dual_clip_frac,
        },
        "differences_by_design": [
            "dual clip: ours caps the per-token loss of negative-advantage tokens at -c*A (c=10, the paper's verl code); "
            "TRL has no dual clip",
            "log-ratio clamp: ours clamps logp - logp_old to [-20, 20] before exp (verl); TRL does not clamp",
            "advantage: ours (R - mean)/(std + 1e-6) (paper); TRL uses std + 1e-4 with scale_rewards='group'",
            "all-equal groups: ours skips the optimizer step when every advantage is 0 (no weight-decay drift) and "
            "skips forward/backward of zero-advantage rows (same gradient); TRL always steps",
            "log-probs: ours computes only the sampled tokens' log-probs/entropies in chunks with a recomputing backward "
            "(no [batch x length x vocab] float32 tensor); TRL materialises the completion logits",
            "internal policy: ours can optimise pi^l = softmax(H^l E_u^T) running only blocks 1..l (BuPO); TRL cannot",
        ],
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "note": "2 shared CPU cores with other jobs running; interleaved, so the ratio is the meaningful figure",
        },
        "command": "python bench/grpo_vs_trl.py",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
