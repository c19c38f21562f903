"""``bupo demo``: the main job, end to end on the embedded model (see :mod:`bupo_core.demo`)."""

from __future__ import annotations

import argparse

from ..demo import DemoConfig, run_demo

NAME = "demo"
HELP = "entropy analysis -> boundary layer -> short GRPO and BuPO runs -> evaluation -> report folder"
DESCRIPTION = (
    "The suite's main job. With the defaults it runs on the embedded SmolLM2-135M on a CPU in about "
    "15 minutes and prints the path of a Markdown report with figures. Scale it up for a GPU with "
    "--model, --steps, --prompts-per-step, --group-size and the eval sizes."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DemoConfig()
    p.add_argument("--model", default=d.model, help=f"model name, folder or hub id (default {d.model})")
    p.add_argument("--task", default=d.task, help="reasoning-gym task (default chain_sum, two single-digit terms)")
    p.add_argument("--layer", type=int, default=None, help="force the BuPO target layer (paper numbering); default: from the entropy analysis")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps per run (default {d.steps})")
    p.add_argument("--inter-steps", type=int, default=d.inter_steps, help=f"BuPO internal phase length (default {d.inter_steps})")
    p.add_argument("--prompts-per-step", type=int, default=d.prompts_per_step)
    p.add_argument("--group-size", type=int, default=d.group_size)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--analysis-prompts", type=int, default=d.analysis_prompts)
    p.add_argument("--eval-problems", type=int, default=d.eval_problems)
    p.add_argument("--eval-k", type=int, default=d.eval_k)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None)
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the final weights of both runs")
    p.add_argument("--out", default=None, help="report folder (default reports/demo-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace the previous report in --out (otherwise a non-empty --out is refused)")


def run(args: argparse.Namespace) -> int:
    cfg = DemoConfig(
        model=args.model, task=args.task, layer=args.layer, steps=args.steps, inter_steps=args.inter_steps,
        prompts_per_step=args.prompts_per_step, group_size=args.group_size, max_new_tokens=args.max_new_tokens,
        lr=args.lr, analysis_prompts=args.analysis_prompts, eval_problems=args.eval_problems, eval_k=args.eval_k,
        seed=args.seed, device=args.device, out_dir=args.out, keep_checkpoints=args.keep_checkpoints,
    )
    if args.task != "chain_sum":
        cfg.task_kwargs = {}
    summary = run_demo(cfg, overwrite=args.overwrite)
    print(f"\nReport: {summary}")
    print(f"Folder: {summary.parent.resolve()}")
    return 0
