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
from ..tasks import TEMPLATES
from ..trainer import TrainConfig

NAME = "demo"
HELP = "entropy analysis -> boundary layer -> short GRPO and BuPO runs -> evaluation -> report folder"
DESCRIPTION = (
    "The suite's main job. With the defaults it runs on the embedded SmolLM2-135M on a CPU in about "
    "15 minutes and prints the path of a Markdown report with figures. Scale it up for a GPU with "
    "--model, --steps, --prompts-per-step, --group-size and the eval sizes."
)
TRAIN_FLAGS = ("steps", "inter_steps", "prompts_per_step", "group_size", "max_new_tokens", "lr")
DEMO_FLAGS = ("model", "task", "layer", "analysis_prompts", "analysis_style", "seed", "device", "keep_checkpoints", "out_dir")
EVAL_FLAGS = {"num_problems": "--eval-problems", "k": "--eval-k", "max_new_tokens": "--eval-max-new-tokens"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DemoConfig()
    add_config_arguments(p, DemoConfig, include=DEMO_FLAGS, flags={"out_dir": "--out"}, defaults=d,
                         overrides={"analysis_style": {"choices": sorted(TEMPLATES)}})
    add_config_arguments(p, AnalysisConfig, include=("max_new_tokens",), flags={"max_new_tokens": "--analysis-max-new-tokens"},
                         defaults=d.analysis, dest_prefix="analysis_")
    add_config_arguments(p, TrainConfig, include=TRAIN_FLAGS, defaults=d.train, dest_prefix="train_")
    add_config_arguments(p, EvalConfig, include=tuple(EVAL_FLAGS), flags=EVAL_FLAGS, defaults=d.eval, dest_prefix="eval_")
    p.add_argument("--overwrite", action="store_true", help="replace the previous report in --out (otherwise a non-empty --out is refused)")


def config_from_namespace(args: argparse.Namespace) -> DemoConfig:
    """The :class:`DemoConfig` described by the parsed arguments."""
    d = DemoConfig()
    cfg = config_from_args(
        DemoConfig, args, base=d,
        train=config_from_args(TrainConfig, args, base=d.train, dest_prefix="train_"),
        analysis=config_from_args(AnalysisConfig, args, base=d.analysis, dest_prefix="analysis_"),
        eval=config_from_args(EvalConfig, args, base=d.eval, dest_prefix="eval_"),
    )
    if cfg.task != "chain_sum":
        cfg.task_kwargs = {}
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..adapter import check_layer  # noqa: PLC0415
    from ..models import check_model  # noqa: PLC0415

    cfg = config_from_namespace(args)
    # the model name and a forced layer are checked before run_demo replaces a previous report
    num_layers = check_model(cfg.model)
    if num_layers is not None and cfg.layer is not None:
        check_layer(cfg.layer, num_layers, allow_embedding=False, what="--layer (the BuPO target layer)")
    summary = run_demo(cfg, overwrite=args.overwrite)
    print(f"\nReport: {summary}")
    print(f"Folder: {summary.parent.resolve()}")
    return 0
