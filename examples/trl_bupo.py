"""BuPO on TRL's GRPOTrainer, on one process or many (accelerate: DDP, DeepSpeed ZeRO-2, multi-node).

One CPU process (tiny random model, seconds):

    python examples/trl_bupo.py --model tiny-random-qwen3 --max-steps 2 --inter-steps 1 --layer 1 --output-dir runs/trl-tiny

Two data-parallel CPU processes (gloo):

    accelerate launch --cpu --num_processes 2 examples/trl_bupo.py --model tiny-random-qwen3 \\
        --max-steps 2 --inter-steps 1 --layer 1 --output-dir runs/trl-ddp

GPUs: see examples/README.md (one GPU, eight GPUs with DeepSpeed ZeRO-2, multi-node, the paper's
Table 1 settings and their memory).

Batch arithmetic (all counts are global, over every process):
``--prompts-per-step`` B prompts x ``--group-size`` G samples = one rollout of B*G sequences;
``--mini-batches`` optimizer steps per rollout (the paper: 128 prompts / 32 = 4);
``--micro-batch-size`` sequences per forward/backward on each process (gradient accumulation
fills the rest). ``--max-steps`` and ``--inter-steps`` count OPTIMIZER steps (TRL's unit), so the
paper's "s_inter 30 of 300 rollout steps" with 4 mini-batches is ``--inter-steps 120 --max-steps 1200``.

Writes under ``--output-dir``: TRL's ``trainer_state.json`` (``trainer.save_state()``; the log
history has BuPO's statistics), and ``bupo_trl_summary.json`` (settings, step times, whether the
processes' weights are identical, whether the upper blocks stayed bit-identical in the internal
phase with ``--check-frozen``). ``--save-model`` also saves the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="BuPO on TRL's GRPOTrainer (data-parallel through accelerate)")
    ap.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="a bupo model name (tiny-random-qwen3, smollm2-135m-instruct...), a local folder or a hub id (e.g. Qwen/Qwen3-4B)",
    )
    ap.add_argument(
        "--task", default="chain_sum", help="a bupo task name (chain_sum, gsm8k, deepmath, a .jsonl path...)"
    )
    ap.add_argument(
        "--task-size", type=int, default=128, help="distinct training questions (the task's training split)"
    )
    ap.add_argument("--template", default=None, help="prompt template (short, boxed, qwen3-boxed); default: the task's")
    ap.add_argument(
        "--reward",
        choices=("task", "ascii"),
        default="task",
        help="task: the task's grader (binary, the paper's); ascii: the fraction of ASCII letters and digits in a response, a smoke-test "
        "reward for random-weight models (whose answers are never right, so every advantage would be 0 and nothing would move)",
    )
    ap.add_argument("--method", choices=("bupo", "grpo"), default="bupo")
    ap.add_argument("--layer", type=int, default=None, help="BuPO's layer l (paper numbering 1..L)")
    ap.add_argument("--inter-steps", type=int, default=0, help="internal-phase optimizer steps")
    ap.add_argument("--ipa-norm", choices=("none", "final"), default="none")
    ap.add_argument("--ipa-lr", type=float, default=None)
    ap.add_argument("--max-steps", type=int, default=12, help="optimizer steps in all")
    ap.add_argument("--prompts-per-step", type=int, default=4, help="B, prompts per rollout (global)")
    ap.add_argument("--group-size", type=int, default=8, help="G, samples per prompt")
    ap.add_argument("--mini-batches", type=int, default=1, help="optimizer steps per rollout")
    ap.add_argument("--micro-batch-size", type=int, default=16, help="sequences per forward/backward per process")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument(
        "--generation-batch-size",
        type=int,
        default=64,
        help="rows per generate call on each process (bounds the KV cache)",
    )
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--dual-clip", type=float, default=10.0, help="dual clip c (<= 0: off)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPUs)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--logging-steps", type=int, default=1)
    ap.add_argument(
        "--check-frozen",
        action="store_true",
        help="verify the upper blocks are bit-identical after the internal phase (keeps a copy of them)",
    )
    ap.add_argument("--save-model", action="store_true")
    ap.add_argument("--output-dir", required=True)
    return ap.parse_args(argv)


def batch_layout(prompts: int, group: int, mini_batches: int, micro: int, world: int) -> dict:
    """GRPOConfig's batch fields for B x G sequences per rollout, ``mini_batches`` updates, ``world`` processes.

    >>> batch_layout(4, 8, 1, 16, 2)
    {'per_device_train_batch_size': 16, 'gradient_accumulation_steps': 1, 'steps_per_generation': 1, 'generation_batch_size': 32}
    >>> batch_layout(128, 8, 4, 4, 8)["gradient_accumulation_steps"]
    8
    """
    from bupo_core.errors import InputFormatError

    n = prompts * group
    if n % (mini_batches * world):
        raise InputFormatError(
            f"prompts x group = {n} sequences must split into {mini_batches} mini-batches x {world} processes; "
            "change --prompts-per-step or --mini-batches"
        )
    per_dev = n // (mini_batches * world)
    mbs = min(micro, per_dev)
    if per_dev % mbs:
        raise InputFormatError(
            f"{per_dev} sequences per process per optimizer step are not a multiple of --micro-batch-size {mbs}; use a divisor"
        )
    ga = per_dev // mbs
    return {
        "per_device_train_batch_size": mbs,
        "gradient_accumulation_steps": ga,
        "steps_per_generation": ga * mini_batches,
        "generation_batch_size": n,
    }


def ascii_reward(completions: list, **_: object) -> list[float]:
    """Fraction of ASCII letters and digits in each completion (smoke tests on random-weight models only:
    their samples differ in it, so groups get non-zero advantages and the weights really move).

    >>> ascii_reward(["a!", [{"role": "assistant", "content": "12"}], ""])
    [0.5, 1.0, 0.0]
    """
    texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
    return [sum(ch.isascii() and ch.isalnum() for ch in t) / max(len(t), 1) for t in texts]


def _launcher_processes() -> int:
    """The ``--num_processes`` given to ``accelerate launch --cpu`` when it started only this one process, else 1.

    accelerate's CPU launcher starts several processes only through ``mpirun`` (``--mpirun_hostfile``);
    without it, ``accelerate launch --cpu --num_processes 2`` runs ONE process. We read the count
    from the launcher's command line (our parent process) and start the processes ourselves.
    """
    if os.environ.get("ACCELERATE_USE_CPU", "false").lower() not in ("1", "true", "yes"):
        return 1
    if any(k in os.environ for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")):
        return 1  # already one of several processes
    try:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return 1
    words = [w.decode(errors="replace") for w in parent]
    if not any(w.endswith("accelerate") or w == "launch" for w in words):
        return 1
    for i, w in enumerate(words):
        if w in ("--num_processes", "--num-processes") and i + 1 < len(words) and words[i + 1].isdigit():
            return int(words[i + 1])
        if w.startswith(("--num_processes=", "--num-processes=")) and w.split("=", 1)[1].isdigit():
            return int(w.split("=", 1)[1])
    return 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relaunch_on_cpu(n: int, argv: list[str]) -> int:
    """Run this script as ``n`` data-parallel CPU processes (torch's elastic launcher, gloo); their exit status."""
    import subprocess

    env = dict(os.environ, ACCELERATE_USE_CPU="true")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(n),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(Path(__file__).resolve()),
        *argv,
    ]
    print(
        f"[trl_bupo] starting {n} CPU processes (gloo): accelerate's --cpu launcher needs mpirun for more than one",
        flush=True,
    )
    return subprocess.call(cmd, env=env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    n = _launcher_processes()
    if n > 1:
        return relaunch_on_cpu(n, argv)
    import torch
    from accelerate import PartialState
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from bupo_core.errors import BupoError
    from bupo_core.models import load_model
    from bupo_core.rewards import Grader
    from bupo_core.tasks import EASY_CHAIN_SUM, load_task
    from bupo_core.trl_bupo import (
        BupoTRLConfig,
        bupo_grpo_trainer_class,
        silence_trl_warnings,
        task_dataset,
        task_reward_function,
    )

    silence_trl_warnings()
    use_cpu = (
        os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    )
    state = PartialState(cpu=use_cpu)
    try:
        kwargs = dict(EASY_CHAIN_SUM) if args.task == "chain_sum" else {}
        task = load_task(
            args.task, size=args.task_size, seed=args.seed, template=args.template, split="train", **kwargs
        )
        layout = batch_layout(
            args.prompts_per_step, args.group_size, args.mini_batches, args.micro_batch_size, state.num_processes
        )
        bupo = BupoTRLConfig(
            method=args.method,
            layer=args.layer,
            inter_steps=args.inter_steps,
            ipa_norm=args.ipa_norm,
            ipa_lr=args.ipa_lr,
            dual_clip=args.dual_clip if args.dual_clip > 0 else None,
            generation_batch_size=args.generation_batch_size,
        )
        bupo.validate()
        model, tok = load_model(args.model, device="cpu", dtype="float32", seed=args.seed)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        targs = GRPOConfig(
            output_dir=args.output_dir,
            max_steps=args.max_steps,
            learning_rate=args.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=args.weight_decay,
            max_grad_norm=1.0,
            adam_beta1=0.9,
            adam_beta2=0.999,
            adam_epsilon=1e-8,
            num_generations=args.group_size,
            max_completion_length=args.max_new_tokens,
            temperature=1.0,
            top_p=1.0,
            beta=0.0,
            epsilon=0.2,
            num_iterations=1,
            use_vllm=False,
            chat_template_kwargs=task.chat_template_kwargs or None,
            logging_steps=args.logging_steps,
            save_strategy="no",
            report_to="none",
            seed=args.seed,
            bf16=args.bf16,
            use_cpu=use_cpu,
            disable_tqdm=True,
            dataloader_num_workers=0,
            log_completions=False,
            **{k: v for k, v in layout.items() if k != "generation_batch_size"},
            # TRL turns checkpointing on by default; ours is off unless asked (transformers >= 5 names it activation_checkpointing)
            **{
                (
                    "activation_checkpointing"
                    if "activation_checkpointing" in GRPOConfig.__dataclass_fields__
                    else "gradient_checkpointing"
                ): args.gradient_checkpointing
            },
        )
        trainer_cls = bupo_grpo_trainer_class()
        dataset = task_dataset(task, size=max(len(task), 1))
        grader = Grader(scorer=task.scorer, binary=True)
        reward_fn = task_reward_function(task, grader) if args.reward == "task" else ascii_reward
        step_times: list[float] = []

        class Timer(TrainerCallback):
            def on_step_begin(self, a, st, control, **kw):
                self.t0 = time.perf_counter()

            def on_step_end(self, a, st, control, **kw):
                step_times.append(time.perf_counter() - self.t0)

        frozen: dict = {"checked": False}

        class FrozenCheck(TrainerCallback):
            def on_train_begin(self, a, st, control, **kw):
                self.snap = [p.detach().clone() for p in trainer._upper_params]

            def on_step_end(self, a, st, control, **kw):
                if st.global_step == bupo.inter_steps and not frozen["checked"]:
                    frozen.update(
                        checked=True,
                        step=st.global_step,
                        upper_bit_identical=all(
                            torch.equal(p.detach(), q) for p, q in zip(trainer._upper_params, self.snap)
                        ),
                        upper_tensors=len(self.snap),
                    )
                    self.snap = []

        callbacks = [Timer()] + (
            [FrozenCheck()] if args.check_frozen and bupo.method == "bupo" and bupo.inter_steps > 0 else []
        )
        trainer = trainer_cls(
            model=model,
            reward_funcs=reward_fn,
            args=targs,
            train_dataset=dataset,
            processing_class=tok,
            callbacks=callbacks,
            bupo=bupo,
        )
    except BupoError as exc:
        if state.is_main_process:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    embed = trainer.adapter.embedding.weight
    embed_before = embed.detach().clone() if args.check_frozen else None
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    trainer.save_state()
    if args.save_model:
        trainer.save_model(args.output_dir)

    # the processes' weights must be identical (gradients are all-reduced before every step)
    max_diff = 0.0
    if state.num_processes > 1:
        import torch.distributed as dist

        for p in trainer.accelerator.unwrap_model(trainer.model_wrapped).parameters():
            ref = p.detach().clone()
            dist.broadcast(ref, src=0)
            max_diff = max(max_diff, float((p.detach() - ref).abs().max()))
        d = torch.tensor([max_diff], dtype=torch.float64)
        dist.all_reduce(d, op=dist.ReduceOp.MAX)
        max_diff = float(d)
    identical = max_diff == 0.0
    if state.is_main_process:
        summary = {
            "model": args.model,
            "task": args.task,
            "processes": state.num_processes,
            "method": bupo.method,
            "layer": bupo.layer,
            "inter_steps": bupo.inter_steps,
            "max_steps": args.max_steps,
            "global_step": trainer.state.global_step,
            "batch": layout,
            "wall_s": wall,
            "step_times_s": step_times,
            "weights_identical_across_processes": identical,
            "weights_max_abs_diff_across_processes": max_diff,
            "frozen_check": frozen,
            "lower_params_changed": None if embed_before is None else not torch.equal(embed.detach(), embed_before),
            "log_history": trainer.state.log_history,
            "torch_threads": torch.get_num_threads(),
            "cuda_peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
            "cuda_peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else None,
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        }
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_dir) / "bupo_trl_summary.json").write_text(json.dumps(summary, indent=1, default=str))
        print(
            f"[trl_bupo] {trainer.state.global_step} steps on {state.num_processes} process(es) in {wall:.1f} s; "
            f"weights identical across processes: {identical}; "
            f"upper blocks frozen in the internal phase: {frozen.get('upper_bit_identical', 'not checked')}"
        )
    bad = (not identical) or (frozen.get("checked") and not frozen.get("upper_bit_identical"))
    _shutdown_process_group()
    return 1 if bad else 0


def _shutdown_process_group() -> None:
    """Leave the process group together and tear it down before the interpreter exits.

    Without this, one rank can reach interpreter teardown while the other still holds the gloo
    connection; the gloo destructor then aborts that rank (SIGABRT) after a run that succeeded.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
