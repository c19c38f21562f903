"""Benchmark: step time of the TRL-based BuPO trainer (bupo_core.trl_bupo) against ours, side by side in one run.

The demo's settings on both sides (``bupo demo``'s TrainConfig): the embedded SmolLM2-135M-Instruct,
``chain_sum`` (2 terms, 1 digit, training split, 128 questions), B = 4 prompts x G = 8 samples per
rollout, 16 new tokens, temperature 1.0, two optimizer updates (mini-batches) per rollout, AdamW lr
2e-5 (weight decay 0.01, clip 1.0), float32 on CPU, no gradient checkpointing, BuPO with layer 5 for the
first 3 rollouts (TRL: 6 optimizer steps), then GRPO.

Side by side in ONE process: a TRL ``TrainerCallback`` runs one of our steps right after every TRL
rollout (its two optimizer steps), so background load hits both alike. A "step" is one rollout:
generation + scoring + old log-probs + both updates. The first step of each side is a warm-up and is
dropped; steps are reported per phase (internal / full).

    python bench/trl_vs_ours.py                                  # the demo's settings (minutes on 2 cores)
    python bench/trl_vs_ours.py --model tiny-random-qwen3 --layer 1 --steps 2 --out /tmp/t.json   # smoke run

Writes bench/results/trl_vs_ours.json.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--layer", type=int, default=5)
    ap.add_argument(
        "--inter-steps",
        type=int,
        default=3,
        help="internal-phase rollouts (ours: steps; TRL: x mini-batches optimizer steps)",
    )
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--mini-batches", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="measured rollouts per side (after one warm-up)")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "trl_vs_ours.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import trl
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from bupo_core.models import load_model
    from bupo_core.rewards import Grader
    from bupo_core.tasks import EASY_CHAIN_SUM
    from bupo_core.trainer import TrainConfig, Trainer
    from bupo_core.trl_bupo import (
        BupoTRLConfig,
        bupo_grpo_trainer_class,
        task_dataset,
        task_reward_function,
    )

    B, G, M = args.prompts, args.group_size, args.mini_batches
    N = B * G
    rollouts = args.steps + 1

    # ---------------------------------------------------------------- ours
    our_model, tok = load_model(args.model, device="cpu", seed=0)
    cfg = TrainConfig(
        model=args.model,
        method="bupo",
        layer=args.layer,
        inter_steps=args.inter_steps,
        prompts_per_step=B,
        group_size=G,
        max_new_tokens=args.max_new_tokens,
        lr=args.lr,
        num_mini_batches=M,
        micro_batch_size=16,
        steps=10_000,
        task_size=128,
        task_kwargs={**EASY_CHAIN_SUM, "split": "train"},
        precision="fp32",
        device="cpu",
        out_dir=tempfile.mkdtemp(prefix="bupo-bench-ours-"),
        seed=0,
    )
    ours = Trainer(cfg, model=our_model, tokenizer=tok)
    task = ours.task

    # ---------------------------------------------------------------- TRL-based
    trl_model, trl_tok = load_model(args.model, device="cpu", seed=0)
    if trl_tok.pad_token_id is None:
        trl_tok.pad_token = trl_tok.eos_token
    trl_tok.padding_side = "left"
    per_dev = N // M
    mbs = min(16, per_dev)
    ga = per_dev // mbs
    targs = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bupo-bench-trl-"),
        per_device_train_batch_size=mbs,
        gradient_accumulation_steps=ga,
        steps_per_generation=ga * M,
        num_generations=G,
        max_completion_length=args.max_new_tokens,
        learning_rate=args.lr,
        weight_decay=0.01,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=0.0,
        epsilon=0.2,
        temperature=1.0,
        top_p=1.0,
        max_steps=M * rollouts,
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
        log_completions=False,
        chat_template_kwargs=task.chat_template_kwargs or None,
        **{
            (
                "activation_checkpointing"
                if "activation_checkpointing" in GRPOConfig.__dataclass_fields__
                else "gradient_checkpointing"
            ): False
        },
    )
    bupo = BupoTRLConfig(method="bupo", layer=args.layer, inter_steps=args.inter_steps * M)
    timings: dict[str, list] = {"trl": [], "ours": []}
    our_rows: list[dict] = []

    class Interleave(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step % M == 0:
                self.t0 = time.perf_counter()
                self.phase = "internal" if bupo.internal(state.global_step) else "full"

        def on_step_end(self, a, state, control, **kw):
            if state.global_step % M == 0:  # every update of this rollout is done
                timings["trl"].append((self.phase, time.perf_counter() - self.t0))
                t = time.perf_counter()
                row = ours.train_step()
                timings["ours"].append((row["phase"], time.perf_counter() - t))
                our_rows.append(row)

    trainer = bupo_grpo_trainer_class()(
        model=trl_model,
        reward_funcs=task_reward_function(task, Grader(scorer=task.scorer, binary=True)),
        args=targs,
        train_dataset=task_dataset(task),
        processing_class=trl_tok,
        callbacks=[Interleave()],
        bupo=bupo,
    )
    trainer.train()

    def summary(side: str) -> dict:
        rows = timings[side][1:]
        out = {
            "median_step_s": statistics.median([t for _, t in rows]) if rows else None,
            "step_times_s": [t for _, t in rows],
            "phases": [p for p, _ in rows],
            "warmup_step_s": timings[side][0][1] if timings[side] else None,
        }
        for ph in ("internal", "full"):
            ts = [t for p, t in rows if p == ph]
            out[f"median_{ph}_step_s"] = statistics.median(ts) if ts else None
        return out

    s_trl, s_ours = summary("trl"), summary("ours")
    ratio = (
        (s_trl["median_step_s"] / s_ours["median_step_s"])
        if s_trl["median_step_s"] and s_ours["median_step_s"]
        else None
    )
    print(f"median step: TRL-based {s_trl['median_step_s']}, ours {s_ours['median_step_s']}, TRL/ours {ratio}")
    out = {
        "benchmark": "trl_vs_ours",
        "step_time_ratio_trl_over_ours": ratio,
        "trl_based": s_trl,
        "ours": s_ours,
        "trl_reward_means": [row.get("reward") for row in trainer.state.log_history if "reward" in row],
        "our_reward_means": [r["reward_mean"] for r in our_rows],
        "settings": {
            "model": args.model,
            "task": "chain_sum 2 terms 1 digit, training split, 128 questions",
            "prompts_per_step": B,
            "group_size": G,
            "max_new_tokens": args.max_new_tokens,
            "updates_per_rollout": M,
            "lr": args.lr,
            "layer": args.layer,
            "inter_rollouts": args.inter_steps,
            "trl_inter_optimizer_steps": bupo.inter_steps,
            "measured_rollouts": args.steps,
            "device": "cpu",
            "dtype": "float32",
            "gradient_checkpointing": False,
            "trl_version": trl.__version__,
        },
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "note": "interleaved in one process (one TRL rollout, then one of ours), so background load hits both alike; "
        "the ratio is the meaningful figure",
        "command": "python bench/trl_vs_ours.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
