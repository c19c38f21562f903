"""``bupo train``: GRPO or BuPO on one device (CPU or CUDA), writing config, metrics and checkpoints."""

from __future__ import annotations

import argparse
import json

from ..errors import InputFormatError

NAME = "train"
HELP = "train with GRPO or BuPO (internal-policy phase at --layer, then GRPO); writes OUT/config.json, metrics.jsonl, checkpoints/"
DESCRIPTION = (
    "Train a model with GRPO, or with BuPO: Internal Policy Alignment on layer --layer (paper numbering, "
    "1..L = output of block l; only blocks 1..l run) for --inter-steps steps, then GRPO on the full policy. "
    "Writes OUT/config.json, OUT/metrics.jsonl (one line per step) and OUT/checkpoints/checkpoint-<step>/ "
    "(Hugging Face format + optimizer/RNG/data state). Ctrl-C writes a checkpoint; --resume continues exactly."
)


def _task_kwargs(items: list[str]) -> dict:
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise InputFormatError(f"--task-arg {item!r} must look like key=value, e.g. --task-arg min_terms=2")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..trainer import TrainConfig  # noqa: PLC0415

    d = TrainConfig()
    p.add_argument("--model", default=d.model, help=f"model name or path (default {d.model}; e.g. Qwen/Qwen3-0.6B online)")
    p.add_argument("--task", default=d.task, help="chain_sum, basic_arithmetic, simple_equations, gsm_symbolic, gsm8k, math500, deepmath, or a .jsonl file")
    p.add_argument("--task-arg", action="append", metavar="KEY=VALUE", help="task generator setting, repeatable (e.g. --task-arg max_terms=2); "
                   "the default for chain_sum is the easy 2-term single-digit setting")
    p.add_argument("--task-size", type=int, default=d.task_size, help="number of distinct examples")
    p.add_argument("--template", default=None, choices=["short", "boxed", "qwen3-boxed"], help="prompt template (default: the task's)")
    p.add_argument("--reward", default=None, help="scorer: last_number, boxed_math, reasoning_gym (default: the task's)")
    p.add_argument("--method", choices=["grpo", "bupo"], default=d.method)
    p.add_argument("--layer", type=int, default=None, help="BuPO target layer, paper numbering 1..L (output of block l)")
    p.add_argument("--inter-steps", type=int, default=d.inter_steps, help="internal-phase steps (BuPO)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--prompts-per-step", type=int, default=d.prompts_per_step)
    p.add_argument("--group-size", type=int, default=d.group_size)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--num-mini-batches", type=int, default=d.num_mini_batches, help="optimizer updates per rollout batch")
    p.add_argument("--micro-batch-size", type=int, default=d.micro_batch_size, help="sequences per forward/backward")
    p.add_argument("--eps-low", type=float, default=d.eps_low)
    p.add_argument("--eps-high", type=float, default=d.eps_high)
    p.add_argument("--loss-aggregation", choices=["token-mean", "sequence-mean"], default=d.loss_aggregation)
    p.add_argument("--kl-coef", type=float, default=d.kl_coef)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--save-every", type=int, default=d.save_every, help="checkpoint every K steps (0: only at the end)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete the run already in --out and start clean (otherwise a non-empty --out is refused)")
    p.add_argument("--out", required=True, help="run folder (one run per folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """The :class:`~bupo_core.trainer.TrainConfig` described by the parsed arguments."""
    from ..trainer import TrainConfig  # noqa: PLC0415

    d = TrainConfig()
    task_kwargs = _task_kwargs(args.task_arg)
    if not args.task_arg and args.task != "chain_sum":
        task_kwargs = {}
    elif not args.task_arg:
        task_kwargs = dict(d.task_kwargs)
    cfg = TrainConfig(
        model=args.model, task=args.task, task_kwargs=task_kwargs, task_size=args.task_size, template=args.template,
        reward=args.reward, method=args.method, layer=args.layer, inter_steps=args.inter_steps, steps=args.steps,
        prompts_per_step=args.prompts_per_step, group_size=args.group_size, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, lr=args.lr, num_mini_batches=args.num_mini_batches,
        micro_batch_size=args.micro_batch_size, eps_low=args.eps_low, eps_high=args.eps_high,
        loss_aggregation=args.loss_aggregation, kl_coef=args.kl_coef, gradient_checkpointing=args.gradient_checkpointing,
        save_every=args.save_every, seed=args.seed, device=args.device, out_dir=args.out,
    )
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..trainer import Trainer  # noqa: PLC0415

    cfg = config_from_args(args)
    trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
    result = trainer.train(progress=not args.quiet)
    last = result.metrics[-1] if result.metrics else None
    summary = f"step {result.step}/{cfg.steps}"
    if last:
        summary += f", last reward {last['reward_mean']:.3f}, phase {last['phase']}"
    print(f"[bupo] {summary}; metrics: {result.out_dir / 'metrics.jsonl'}; checkpoint: {result.last_checkpoint}")
    return 130 if result.interrupted else 0
