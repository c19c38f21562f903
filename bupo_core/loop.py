"""The run loop around the training step: folder, resume, checkpoints, signals, out-of-memory messages, metrics rows.

:func:`run_training` repeats :func:`bupo_core.step.train_step` (through ``Trainer.train_step``)
until ``config.steps``, appending one row per step to ``metrics.jsonl`` (flushed) and writing a
checkpoint every ``save_every`` steps and at the end. Ctrl-C or SIGTERM during the rollout stops
at once; from the start of a step's update until its row is written, and during every save, it
is deferred (the step, its row and the save complete, then the run stops); either way a
checkpoint of the last completed step is written, from which ``--resume`` continues exactly
(:func:`check_resume`, :func:`load_state`). A checkpoint carries the metrics rows of its steps
(``metrics.jsonl`` inside it), so the step counter, the rows and the weights are committed together:
a resume rewrites the run's ``metrics.jsonl`` from the checkpoint's copy.

The run's ``config.json`` records the SHA-256 of the task's examples (``task_data_sha256``); a
resume on other task data (an edited task file) is refused.

The loop reads and writes the run's state (:class:`bupo_core.trainer.Trainer`); the file format
of checkpoints and metrics is :mod:`bupo_core.runs`.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
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
def run_training(
    run: Trainer, *, progress: bool = False, callback: Callable[[dict], None] | None = None
) -> TrainResult:
    """Run steps ``run.step + 1 .. config.steps``; see the module docstring.

    Args:
        run: the run's state.
        progress: show a tqdm bar with the running reward.
        callback: called with each step's metrics right after they are written.

    Returns:
        :class:`TrainResult`. Ctrl-C writes a checkpoint of the last completed step and returns
        with ``interrupted=True``. The run folder is locked (:func:`bupo_core.runs.lock_folder`) for the
        whole run: a second process training into it is refused.
    """
    # one process per run folder, whoever starts the run (CLI, sweep cell, demo, a notebook's Trainer)
    with runs.lock_folder(run.out_dir):
        return _run_training(run, progress=progress, callback=callback)


def _run_training(run: Trainer, *, progress: bool, callback: Callable[[dict], None] | None) -> TrainResult:
    cfg = run.config
    runs.write_json_atomic(run.out_dir / runs.CONFIG, {**cfg.to_dict(), TASK_HASH: task_data_hash(run.task)})
    if run.step == 0:
        # every RNG a checkpoint saves starts from the seed, so a resumed run's saved state equals the uninterrupted run's
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
    rows: list[dict] = []
    resumed = run.resumed_from
    last_ckpt = resumed if resumed is not None and resumed.name == f"checkpoint-{run.step}" else None
    interrupted = False
    bar = tqdm(total=cfg.steps, initial=run.step, desc=f"{cfg.method}", disable=not progress)
    running = None
    try:
        with deferred_interrupts(run):
            while run.step < cfg.steps:
                row = step_with_clear_errors(run)  # from its update on, the step holds interrupts (run.in_update)
                try:
                    runs.append_metrics(run.metrics_path, row)
                    if cfg.save_every and run.step % cfg.save_every == 0:
                        last_ckpt = save_checkpoint(run)
                finally:
                    run.in_update = False  # the step, its row (and its checkpoint) are committed: interrupts act again
                rows.append(row)
                running = row["reward_mean"] if running is None else 0.9 * running + 0.1 * row["reward_mean"]
                bar.update(1)
                bar.set_postfix(phase=row["phase"], reward=f"{row['reward_mean']:.3f}", running=f"{running:.3f}")
                if callback is not None:
                    callback(row)
                if run.interrupt_requested:
                    raise KeyboardInterrupt
            # the final save, protected like the others: an interrupt during it lets it finish
            if last_ckpt is None or last_ckpt.name != f"checkpoint-{run.step}":
                last_ckpt = save_checkpoint(run)
    except KeyboardInterrupt:
        interrupted = True
        # weights and optimizer are those of the last completed step (an interrupted update is
        # finished before stopping), so this checkpoint resumes exactly
        if last_ckpt is None or last_ckpt.name != f"checkpoint-{run.step}":
            with deferred_interrupts(run), holding_interrupts(run):
                last_ckpt = save_checkpoint(run)
        print(f"[bupo] interrupted: checkpoint of step {run.step} written to {last_ckpt}")
    finally:
        bar.close()
    if run.interrupt_requested and not interrupted:
        interrupted = run.step < cfg.steps
    return TrainResult(run.out_dir, rows, run.step, interrupted, last_ckpt)


TASK_HASH = "task_data_sha256"  # key of config.json and trainer_state.json (not a TrainConfig field)


def task_data_hash(task) -> str:
    """SHA-256 of a task's examples (question, answer, answer format), in order: what the run trains on.

    >>> from types import SimpleNamespace
    >>> from bupo_core.tasks import Example
    >>> a = task_data_hash(SimpleNamespace(examples=[Example("1+1", "2")]))
    >>> a == task_data_hash(SimpleNamespace(examples=[Example("1+1", "3")]))
    False
    """
    h = hashlib.sha256()
    for e in task.examples:
        h.update(json.dumps([e.question, e.answer, e.answer_format]).encode())
        h.update(b"\n")
    return h.hexdigest()


@contextmanager
def holding_interrupts(run: Trainer) -> Iterator[None]:
    """Defer Ctrl-C/SIGTERM (see :func:`deferred_interrupts`) for the duration, e.g. a checkpoint save."""
    before = getattr(run, "in_save", False)
    run.in_save = True
    try:
        yield
    finally:
        run.in_save = before


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
    treated like Ctrl-C, so it too writes a checkpoint and the run resumes. The step sets
    ``run.in_update`` when its update starts and the loop clears it once the step's row (and
    checkpoint) are written; saves run under :func:`holding_interrupts` (``run.in_save``). An
    interrupt inside either only sets ``run.interrupt_requested``: the step is never applied
    without its counter, a row never lost, a save never torn.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if run.in_update or getattr(run, "in_save", False):
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
def check_resume(out_dir: Path, config: TrainConfig, task=None) -> Path | None:
    """The checkpoint ``--resume`` continues from, after checking the saved settings match ``config``.

    Returns ``None`` (with a warning, and the metrics rows of lost steps removed) when the run has
    no checkpoint yet. Raises :class:`~bupo_core.errors.ConfigMismatchError` naming each
    difference (only ``TrainConfig.RESUMABLE_CHANGES`` may change).
    """
    from_dict = type(config).from_dict
    raw = runs.read_config(out_dir)
    saved_hash = raw.pop(TASK_HASH, None)
    saved = from_dict(raw)
    runs.check_same_settings(
        saved.differences(config), f"the run saved in {out_dir}", out_dir / runs.CONFIG, config.RESUMABLE_CHANGES
    )
    if task is not None and saved_hash is not None and saved_hash != task_data_hash(task):
        raise runs.ConfigMismatchError(
            f"--resume: the task's data differ from those the run in {out_dir} trained on (task {config.task!r}: the file or "
            "generator changed since; SHA-256 of the examples differs from config.json's task_data_sha256). Restore the task "
            "data the run used, or start a new run in a new --out folder"
        )
    ckpt = runs.find_resume_checkpoint(out_dir, lambda d: from_dict(d).differences(config))
    if ckpt is not None:
        done = runs.checkpoint_step(ckpt)
        if done > config.steps:
            raise runs.ConfigMismatchError(
                f"--resume --steps {config.steps}: the run in {out_dir} has already done {done} steps ({ckpt.name}); "
                f"pass --steps {done} or more to continue it, or evaluate {ckpt} as it is"
            )
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
    # the run's rows are those committed with the checkpoint; rows of later steps (a crash after it) are rerun
    if not runs.restore_metrics(ckpt, run.metrics_path):
        runs.truncate_metrics(run.metrics_path, run.step)  # a checkpoint from before rows were kept with it


def save_checkpoint(run: Trainer) -> Path:
    """Write ``checkpoints/checkpoint-<step>/`` atomically (see :mod:`bupo_core.runs` for the format).

    Interrupts are held until it is complete; the checkpoint carries the run's metrics rows of
    steps 1..step, so counter, rows and weights are committed together.
    """
    with holding_interrupts(run):
        return runs.save_checkpoint(
            run.ckpt_root,
            step=run.step,
            model=run.model,
            tokenizer=run.tokenizer,
            optimizer=run.optimizer,
            state={
                "data_position": run.data_position,
                "nonfinite_streak": run.nonfinite_streak,
                TASK_HASH: task_data_hash(run.task),
                "loss_scaler": run.scaler.state_dict(),
            },
            config=run.config.to_dict(),
            reference=run.reference,
            keep=run.config.keep_checkpoints,
            metrics_path=run.metrics_path,
        )
