"""``bupo train``: GRPO or BuPO on one device (CPU or CUDA), writing config, metrics and checkpoints.

Every :class:`~bupo_core.trainer.TrainConfig` field is a flag (``--field-name``), generated from the
dataclass and its docstring by :mod:`bupo_core.config_cli`; only ``--task-arg`` (the task's
generator settings), ``--out``, ``--resume`` and ``--quiet`` are written here.
"""

from __future__ import annotations

import argparse
import sys

from ..config_cli import add_config_arguments, parse_key_values
from ..config_cli import config_from_args as _config_from_args
from ..errors import InputFormatError
from ..losses import POLICY_LOSSES
from ..runs import lock_folder, restore_replaced_run
from ..tasks import TEMPLATES
from ..trainer import TrainConfig, Trainer
from ._common import add_task_arg, check_train_settings

NAME = "train"
HELP = "train with GRPO or BuPO (internal-policy phase at --layer, then GRPO); writes OUT/config.json, metrics.jsonl, checkpoints/"
DESCRIPTION = (
    "Train a model with GRPO, or with BuPO: Internal Policy Alignment on layer --layer (paper numbering, "
    "1..L = output of block l; only blocks 1..l run) for --inter-steps steps, then GRPO on the full policy. "
    "Writes OUT/config.json, OUT/metrics.jsonl (one line per step) and OUT/checkpoints/checkpoint-<step>/ "
    "(Hugging Face format + optimizer/RNG/data state). Ctrl-C writes a checkpoint; --resume continues exactly. "
    "Every setting of TrainConfig is a flag; see docs/training.md."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(
        p,
        TrainConfig,
        exclude=("task_kwargs",),
        flags={"out_dir": "--out"},
        overrides={
            "template": {"choices": sorted(TEMPLATES)},
            "loss": {"choices": sorted(POLICY_LOSSES)},
            "out_dir": {
                "required": True,
                "help": "run folder: config.json, metrics.jsonl, checkpoints/checkpoint-<step>/",
            },
        },
    )
    add_task_arg(
        p, when_absent="for chain_sum the easy 2-term single-digit setting, for other tasks the generator's defaults"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out and start clean (otherwise a non-empty --out is refused); the old run is "
        "deleted only once the new run has written its first checkpoint",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """The validated :class:`~bupo_core.trainer.TrainConfig` described by the parsed arguments."""
    if args.task_arg:
        task_kwargs = parse_key_values(args.task_arg)
    elif getattr(args, "task", TrainConfig.task) != "chain_sum":
        task_kwargs = {}
    else:
        task_kwargs = dict(TrainConfig().task_kwargs)
    cfg = _config_from_args(TrainConfig, args, task_kwargs=task_kwargs)
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    # every setting, the model name and its layers are checked before the folder is touched
    if args.resume and args.overwrite:
        raise InputFormatError(
            "--resume and --overwrite contradict each other: resume continues the run in the folder, overwrite replaces it"
        )
    cfg = config_from_args(args)
    check_train_settings(cfg)
    with lock_folder(cfg.out_dir):
        try:
            trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
            result = trainer.train(progress=not args.quiet)
        except BaseException:
            # --overwrite keeps the old run aside until the new one has a checkpoint: a run that fails first gives it back
            if args.overwrite and restore_replaced_run(cfg.out_dir):
                print(
                    f"[bupo] the new run stopped before its first checkpoint; the previous run in {cfg.out_dir} is kept",
                    file=sys.stderr,
                )
            raise
    last = result.metrics[-1] if result.metrics else None
    summary = f"step {result.step}/{cfg.steps}"
    if last:
        summary += f", last reward {last['reward_mean']:.3f}, phase {last['phase']}"
    print(f"[bupo] {summary}; metrics: {result.out_dir / 'metrics.jsonl'}; checkpoint: {result.last_checkpoint}")
    return 130 if result.interrupted else 0
