"""Arguments shared by several subcommands (model, device, task)."""

from __future__ import annotations

import argparse
from typing import Any

from ..config_cli import parse_key_values
from ..models import DEFAULT_MODEL
from ..tasks import EASY_CHAIN_SUM


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name, local folder, checkpoint or hub id (default {DEFAULT_MODEL}; `bupo models` lists names)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default float32 on CPU, bfloat16 on recent GPUs")


def add_task_arguments(p: argparse.ArgumentParser, *, default: str = "chain_sum") -> None:
    p.add_argument("--task", default=default, help="reasoning-gym dataset (chain_sum, basic_arithmetic, simple_equations, gsm_symbolic, ...), a .jsonl file of question/answer pairs, or a hub dataset when online (training splits gsm8k, deepmath, math-train; test sets math500, aime24, aime25, amc23, gsm8k-test)")
    p.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE", help="a setting of the reasoning-gym generator, repeatable (e.g. --task-arg max_digits=1)")
    p.add_argument("--easy", action="store_true", help="shortcut for the two-term single-digit chain_sum the 135M model can learn (min/max_terms=2, min/max_digits=1)")
    p.add_argument("--template", default=None, help="prompt template: short (question + 'Reply with just the number.'), boxed (the paper's system prompt), qwen3-boxed")
    p.add_argument("--task-seed", type=int, default=None, help="seed of the generated problems (default: a fixed held-out seed per command)")


def check_train_settings(cfg: Any) -> int | None:
    """Check a :class:`~bupo_core.trainer.TrainConfig`'s model and layers without loading weights; return L if known.

    Everything ``bupo train`` would only find out after the model load (a typo in ``--model``,
    ``--layer 99``) fails here, before a folder is locked, set aside or written.
    """
    from ..adapter import check_layer  # noqa: PLC0415
    from ..models import check_model  # noqa: PLC0415

    num_layers = check_model(cfg.model)
    if num_layers is None:
        return None
    if cfg.method == "bupo" and cfg.layer is not None:
        check_layer(cfg.layer, num_layers, allow_embedding=False, what="--layer (the BuPO target layer)")
    for name in ("freeze_through_layer", "upper_lr_layer"):
        value = getattr(cfg, name, None)
        if value is not None:
            check_layer(value, num_layers, allow_embedding=True, below_top=True,
                        what=f"{name} (the embedding and blocks 1..l below it, the blocks above it)")
    return num_layers


def parse_task_args(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (see :func:`bupo_core.config_cli.parse_key_values`)."""
    return parse_key_values(items)


def task_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = dict(EASY_CHAIN_SUM) if getattr(args, "easy", False) else {}
    kwargs.update(parse_task_args(getattr(args, "task_arg", []) or []))
    return kwargs
