"""The run loop around the training step: folder, resume, checkpoints, signals, out-of-memory messages, metrics rows.

:func:`run_training` repeats :func:`bupo_core.step.train_step` (through ``Trainer.train_step``)
until ``config.steps``, appending one row per step to ``metrics.jsonl`` (flushed) and writing a
checkpoint every ``save_every`` steps and at the end. Ctrl-C or SIGTERM during an update finishes
that step first; anywhere else it stops at once; both write a checkpoint of the last completed
step, from which ``--resume`` continues exactly (:func:`check_resume`, :func:`load_state`).

The loop reads and writes the run's state (:class:`bupo_core.trainer.Trainer`); the file format
of checkpoints and metrics is :mod:`bupo_core.runs`.
"""

from __future__ import annotations

import signal
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from tqdm.auto import tqdm

from . import runs
from .errors import BupoError
from .step import TrainingError

if TYPE_CHECKING:  # the loop drives the run's state; trainer imports this module (a cycle at run time)
    from .trainer import TrainConfig, Trainer


class TrainingOutOfMemoryError(BupoError, MemoryError):
    """The GPU ran out of memory; the message lists the settings that reduce memory."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns.

    Attributes:
        out_dir: the run folder.
        metrics: one dict per step run in this call (also in ``metrics.jsonl``).
        step: last completed step.
        interrupted: True when Ctrl-C stopped the run (a checkpoint was written).
        last_checkpoint: path of the newest checkpoint, if any.
    """

    out_dir: Path
    metrics: list[dict]
    step: int
    interrupted: bool = False
    last_checkpoint: Path | None = None


# --------------------------------------------------------------------------- the loop
def run_training(run: Trainer, *, progress: bool = False, callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Run steps ``run.step + 1 .. config.steps``; see the module docstring.

    Args:
        run: the run's state.
        progress: show a tqdm bar with the running reward.
        callback: called with each step's metrics right after they are written.

    Returns:
        :class:`TrainResult`. Ctrl-C writes a checkpoint of the last completed step and returns
        with ``interrupted=True``.
    """
    cfg = run.config
    run.out_dir.mkdir(parents=True, exist_ok=True)
    runs.write_json_atomic(run.out_dir / runs.CONFIG, cfg.to_dict())
    if run.step == 0:
        torch.manual_seed(cfg.seed)
    rows: list[dict] = []
    resumed = run.resumed_from
    last_ckpt = resumed if resumed is not None and resumed.name == f"checkpoint-{run.step}" else None
    interrupted = False
    bar = tqdm(total=cfg.steps, initial=run.step, desc=f"{cfg.method}", disable=not progress)
    running = None
    try:
        with deferred_interrupts(run):
            while run.step < cfg.steps:
                row = step_with_clear_errors(run)
                runs.append_metrics(run.metrics_path, row)
                rows.append(row)
                running = row["reward_mean"] if running is None else 0.9 * running + 0.1 * row["reward_mean"]
                bar.update(1)
                bar.set_postfix(phase=row["phase"], reward=f"{row['reward_mean']:.3f}", running=f"{running:.3f}")
                if callback is not None:
                    callback(row)
                if cfg.save_every and run.step % cfg.save_every == 0:
                    last_ckpt = save_checkpoint(run)
                if run.interrupt_requested:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
        # weights and optimizer are those of the last completed step (an interrupted update is
        # finished before stopping), so this checkpoint resumes exactly
        last_ckpt = save_checkpoint(run)
        print(f"[bupo] interrupted: checkpoint of step {run.step} written to {last_ckpt}")
    finally:
        bar.close()
    if not interrupted and (last_ckpt is None or last_ckpt.name != f"checkpoint-{run.step}"):
        last_ckpt = save_checkpoint(run)
    return TrainResult(run.out_dir, rows, run.step, interrupted, last_ckpt)


def step_with_clear_errors(run: Trainer) -> dict:
    """``run.train_step()``, with out-of-memory and divergence turned into messages naming the fix."""
    cfg = run.config
    try:
        return run.train_step()
    except torch.OutOfMemoryError as exc:
        raise TrainingOutOfMemoryError(
            f"out of GPU memory at step {run.step + 1} ({str(exc).splitlines()[0][:120]}). Reduce micro_batch_size "
            f"(now {cfg.micro_batch_size}; --micro-batch-size), max_new_tokens (now {cfg.max_new_tokens}), "
            f"generation_batch_size (now {cfg.generation_batch_size}) or logprob_chunk_size (now {cfg.logprob_chunk_size}), "
            "or turn on gradient_checkpointing (--gradient-checkpointing)."
        ) from exc
    except RuntimeError as exc:
        if "probability tensor contains" in str(exc):
            raise TrainingError(
                f"training diverged at step {run.step + 1}: the model's output probabilities became inf/NaN "
                f"({str(exc).splitlines()[0][:100]}). The learning rate is the likely cause (lr={cfg.lr}); "
                "lower it (e.g. 10x) and resume from the last checkpoint or start again."
            ) from exc
        raise


@contextmanager
def deferred_interrupts(run: Trainer) -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM during an update finishes the step first; elsewhere it stops at once.

    SIGTERM is what ``kill``, a job scheduler or a notebook host sends on preemption; it is
    treated like Ctrl-C, so it too writes a checkpoint and the run resumes. The step marks its
    update with ``run.in_update``; an interrupt then sets ``run.interrupt_requested``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if run.in_update:
            run.interrupt_requested = True
        else:
            raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


# --------------------------------------------------------------------------- resume and checkpoints
def check_resume(out_dir: Path, config: TrainConfig) -> Path | None:
    """The checkpoint ``--resume`` continues from, after checking the saved settings match ``config``.

    Returns ``None`` (with a warning, and the metrics rows of lost steps removed) when the run has
    no checkpoint yet. Raises :class:`~bupo_core.errors.ConfigMismatchError` naming each
    difference (only ``TrainConfig.RESUMABLE_CHANGES`` may change).
    """
    from_dict = type(config).from_dict
    saved = from_dict(runs.read_config(out_dir))
    runs.check_same_settings(saved.differences(config), f"the run saved in {out_dir}", out_dir / runs.CONFIG, config.RESUMABLE_CHANGES)
    ckpt = runs.find_resume_checkpoint(out_dir, lambda d: from_dict(d).differences(config))
    if ckpt is None:
        dropped = runs.truncate_metrics(out_dir / runs.METRICS, 0)
        warnings.warn(
            f"--resume: no checkpoint in {out_dir / runs.CHECKPOINTS} yet; starting clean from step 0"
            + (f" ({dropped} metrics rows of the lost steps removed)" if dropped else ""),
            stacklevel=3,
        )
    return ckpt


def load_state(run: Trainer, ckpt: Path) -> None:
    """Restore the optimizer, counters, reference model and RNG state of ``ckpt`` into ``run``."""
    state = runs.load_checkpoint_state(ckpt)
    run.optimizer.load_state_dict(state["optimizer_state"])
    run.step = int(state["step"])
    run.data_position = int(state["data_position"])
    run.nonfinite_streak = int(state.get("nonfinite_streak", 0))
    run.scaler.load_state_dict(state.get("loss_scaler") or {})
    if run.reference is not None and "reference_state" in state:
        run.reference.load_state_dict(state["reference_state"])
    runs.set_rng_state(state["rng_tensors"], state["rng"])
    # drop metrics of steps after the checkpoint (a crash after it): they will be rerun
    runs.truncate_metrics(run.metrics_path, run.step)


def save_checkpoint(run: Trainer) -> Path:
    """Write ``checkpoints/checkpoint-<step>/`` atomically (see :mod:`bupo_core.runs` for the format)."""
    return runs.save_checkpoint(
        run.ckpt_root, step=run.step, model=run.model, tokenizer=run.tokenizer, optimizer=run.optimizer,
        state={"data_position": run.data_position, "nonfinite_streak": run.nonfinite_streak, "loss_scaler": run.scaler.state_dict()},
        config=run.config.to_dict(), reference=run.reference, keep=run.config.keep_checkpoints,
    )
