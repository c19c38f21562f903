"""``bupo demo``: the main job, end to end on the embedded model (see :mod:`bupo_core.demo`).

The training and evaluation flags are generated from :class:`~bupo_core.trainer.TrainConfig` and
:class:`~bupo_core.evaluate.EvalConfig` (help text from their docstrings, defaults from
:class:`~bupo_core.demo.DemoConfig`).
"""

from __future__ import annotations

import argparse

from ..analysis import AnalysisConfig
from ..config_cli import add_config_arguments, config_from_args
from ..demo import DemoConfig, run_demo
from ..evaluate import EvalConfig
from ..trainer import TrainConfig

NAME = "demo"
HELP = "entropy analysis -> boundary layer -> short GRPO and BuPO runs -> evaluation -> report folder"
DESCRIPTION = (
    "The suite's main job. With the defaults it runs on the embedded SmolLM2-135M on a CPU in about "
    "15 minutes and prints the path of a Markdown report with figures. Scale it up for a GPU with "
    "--model, --steps, --prompts-per-step, --group-size and the eval sizes."
)
TRAIN_FLAGS = ("steps", "inter_steps", "prompts_per_step", "group_size", "max_new_tokens", "lr")
EVAL_FLAGS = {"num_problems": "--eval-problems", "k": "--eval-k", "max_new_tokens": "--eval-max-new-tokens"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DemoConfig()
    p.add_argument("--model", default=d.model, help=f"model name, folder or hub id (default {d.model})")
    p.add_argument("--task", default=d.task, help="reasoning-gym task (default chain_sum, two single-digit terms)")
    p.add_argument("--layer", type=int, default=None, help="force the BuPO target layer (paper numbering); default: from the entropy analysis")
    p.add_argument("--analysis-prompts", type=int, default=d.analysis_prompts, help=f"prompts of the entropy analysis (default {d.analysis_prompts})")
    add_config_arguments(p, AnalysisConfig, include=("max_new_tokens",), flags={"max_new_tokens": "--analysis-max-new-tokens"},
                         defaults=d.analysis, dest_prefix="analysis_")
    add_config_arguments(p, TrainConfig, include=TRAIN_FLAGS, defaults=d.train, dest_prefix="train_")
    add_config_arguments(p, EvalConfig, include=tuple(EVAL_FLAGS), flags=EVAL_FLAGS, defaults=d.eval, dest_prefix="eval_")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None)
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the final weights of both runs")
    p.add_argument("--out", default=None, help="report folder (default reports/demo-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace the previous report in --out (otherwise a non-empty --out is refused)")


def config_from_namespace(args: argparse.Namespace) -> DemoConfig:
    """The :class:`DemoConfig` described by the parsed arguments."""
    d = DemoConfig()
    cfg = DemoConfig(
        model=args.model, task=args.task, layer=args.layer, analysis_prompts=args.analysis_prompts, seed=args.seed,
        device=args.device, out_dir=args.out, keep_checkpoints=args.keep_checkpoints,
        train=config_from_args(TrainConfig, args, base=d.train, dest_prefix="train_"),
        analysis=config_from_args(AnalysisConfig, args, base=d.analysis, dest_prefix="analysis_"),
        eval=config_from_args(EvalConfig, args, base=d.eval, dest_prefix="eval_"),
    )
    if args.task != "chain_sum":
        cfg.task_kwargs = {}
    return cfg


def run(args: argparse.Namespace) -> int:
    summary = run_demo(config_from_namespace(args), overwrite=args.overwrite)
    print(f"\nReport: {summary}")
    print(f"Folder: {summary.parent.resolve()}")
    return 0
