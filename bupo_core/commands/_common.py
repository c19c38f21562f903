"""Arguments shared by several subcommands (model, device, task)."""

from __future__ import annotations

import argparse
from typing import Any

from ..config_cli import parse_key_values
from ..models import DEFAULT_MODEL
from ..models import check_train_model as check_train_settings  # noqa: F401 - used by the commands
from ..tasks import EASY_CHAIN_SUM


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model name, local folder, checkpoint or hub id (default {DEFAULT_MODEL}; `bupo models` lists names)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="default float32 on CPU, bfloat16 on recent GPUs",
    )


def add_task_arguments(p: argparse.ArgumentParser, *, default: str = "chain_sum") -> None:
    p.add_argument(
        "--task",
        default=default,
        help="reasoning-gym dataset (chain_sum, basic_arithmetic, simple_equations, gsm_symbolic, ...), "
        "a .jsonl file of question/answer pairs, or a hub dataset when online "
        "(training splits gsm8k, deepmath, math-train; test sets math500, aime24, aime25, amc23, gsm8k-test)",
    )
    add_task_arg(p)
    p.add_argument(
        "--easy",
        action="store_true",
        help="shortcut for the two-term single-digit chain_sum the 135M model can learn (min/max_terms=2, min/max_digits=1)",
    )
    p.add_argument(
        "--template",
        default=None,
        help="prompt template: short (question + 'Reply with just the number.'), boxed (the paper's system prompt), qwen3-boxed",
    )
    p.add_argument(
        "--task-seed",
        type=int,
        default=None,
        help="seed of the generated problems (default: a fixed held-out seed per command)",
    )


def add_task_arg(p: argparse.ArgumentParser, *, when_absent: str = "the generator's own defaults") -> None:
    """The one ``--task-arg KEY=VALUE`` flag (repeatable; not given = ``None``, read with :func:`task_kwargs`).

    ``when_absent`` says in the help what a command uses when the flag is not given.
    """
    p.add_argument(
        "--task-arg",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help=f"a setting of the task's generator, repeatable (e.g. --task-arg max_terms=2); not given: {when_absent}",
    )


def parse_task_args(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (see :func:`bupo_core.config_cli.parse_key_values`)."""
    return parse_key_values(items)


def task_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = dict(EASY_CHAIN_SUM) if getattr(args, "easy", False) else {}
    kwargs.update(parse_task_args(getattr(args, "task_arg", []) or []))
    return kwargs
