"""``bupo eval``: Avg@K and Pass@k of a model or checkpoint on the held-out (eval) split of a task."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from .. import models  # models.load_model is looked up when called: tests replace it
from ..config_cli import add_config_arguments, config_from_args
from ..errors import InputFormatError, ModelNotAvailableError
from ..evaluate import EvalConfig, evaluate
from ..models import check_device, check_model
from ..runs import CHECKPOINT_MANIFEST, checkpoint_problem, prepare_output_dir
from ..tasks import load_task
from ._common import add_model_arguments, add_task_arguments, task_kwargs

NAME = "eval"
HELP = "sample K answers per problem, grade them, report Avg@K and Pass@k (writes eval.json)"
HELD_OUT_SEED = 10_000  # training runs draw problems with small seeds; evaluation uses this one


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_task_arguments(p)
    p.add_argument(
        "--split",
        default="eval",
        choices=["eval", "train", "all"],
        help="which side of the fixed question partition to evaluate on (default eval: no question of it occurs in any "
        "training split; train the model with --task-arg split=train). 'all' = no split",
    )
    # the evaluation settings: one flag per EvalConfig field (help and defaults from its docstring)
    add_config_arguments(p, EvalConfig, flags={"num_problems": "--n", "k": "--k"})
    p.add_argument(
        "--out",
        required=True,
        help="output folder (eval.json, per_problem.jsonl: correct counts per problem, responses.jsonl: the sampled texts, pass_at_k.png)",
    )


def check_checkpoint_folder(model: str) -> None:
    """A ``bupo train`` checkpoint given as ``--model`` must match its manifest byte for byte (SHA-256 of every file)."""
    folder = Path(model).expanduser()
    if folder.is_dir() and (folder / CHECKPOINT_MANIFEST).is_file():
        problem = checkpoint_problem(folder, verify="full")
        if problem:
            raise ModelNotAvailableError(
                f"checkpoint {folder} is damaged ({problem}); evaluate another checkpoint of the run, or train again"
            )


def check_finite_weights(model, name: str) -> None:
    """Refuse a model with NaN or infinite weights (a diverged run) before sampling from it."""
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise ModelNotAvailableError(
            f"{name}: {len(bad)} weight tensor(s) hold NaN or infinite values (first: {bad[0]}); the run that wrote them diverged. "
            "Evaluate an earlier checkpoint, or train again with a smaller --lr"
        )


def run(args: argparse.Namespace) -> int:
    # every argument and the output folder are checked before the (slow) model load
    n, k = getattr(args, "num_problems", EvalConfig.num_problems), getattr(args, "k", EvalConfig.k)
    if n < 1 or k < 1:
        raise InputFormatError(f"--n and --k must be >= 1 (got --n {n} --k {k})")
    cfg = config_from_args(EvalConfig, args)  # validates the sampling settings
    check_device(args.device)
    check_model(args.model)
    check_checkpoint_folder(args.model)
    prepare_output_dir(args.out)
    seed = HELD_OUT_SEED if args.task_seed is None else args.task_seed
    kwargs = task_kwargs(args)
    split = kwargs.pop("split", None) if args.split == "all" else args.split
    kwargs.pop("split", None)
    task = load_task(args.task, size=cfg.num_problems, seed=seed, template=args.template, split=split, **kwargs)
    model, tok = models.load_model(args.model, device=args.device, dtype=args.dtype)
    check_finite_weights(model, args.model)
    cfg = dataclasses.replace(cfg, num_problems=min(cfg.num_problems, len(task)))
    result = evaluate(model, tok, task, cfg, model_name=args.model)
    path = result.save(args.out)
    from ..reporting.evaluation_plots import plot_pass_at_k  # noqa: PLC0415  (optional: it imports matplotlib.pyplot)

    fig = plot_pass_at_k({args.model: result.to_json()})
    fig.savefig(path.parent / "pass_at_k.png", dpi=120)
    data = result.to_json()
    print(
        json.dumps(
            {
                k: data[k]
                for k in (
                    "model",
                    "task",
                    "num_problems",
                    "num_samples",
                    "avg_at_k",
                    "pass_at_k",
                    "no_answer_rate",
                    "accuracy_among_answered",
                )
            },
            indent=1,
        )
    )
    print(f"wrote {path}")
    return 0
