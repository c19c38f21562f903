"""Run folders: the one place that reads and writes ``config.json``, ``metrics.jsonl`` and checkpoints.

A run folder belongs to one run::

    OUT/config.json                     the run's settings (TrainConfig.to_dict())
    OUT/metrics.jsonl                   one JSON object per completed step, appended + fsynced
    OUT/checkpoints/checkpoint-<step>/  Hugging Face weights (model.safetensors) + tokenizer,
        optimizer.safetensors           AdamW tensors (exp_avg, exp_avg_sq, step per parameter)
        rng.safetensors                 torch / CUDA / NumPy RNG states
        reference.safetensors           the frozen KL reference model (only when kl_coef > 0)
        trainer_state.json              step, data position, optimizer hyper-parameters, Python RNG, config
        bupo-checkpoint.json            size and SHA-256 of every file above, written last

Nothing is pickled: a checkpoint is loaded with ``safetensors`` and ``json`` only, so a crafted
checkpoint cannot run code. A checkpoint without ``bupo-checkpoint.json`` never finished; one
whose files disagree with it is damaged, and a resume falls back to the newest intact one (with
a warning that names the damaged one).

Rules (:func:`claim_run_dir`):

* a new run needs an empty (or missing) folder; ``overwrite=True`` moves the previous run's
  ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` aside into ``OUT/.replaced-run/`` (it
  refuses to touch anything else) and deletes them only once the new run's first checkpoint exists
  (:func:`save_checkpoint`); a new run that fails before that gets the old one back
  (:func:`restore_replaced_run`);
* one process at a time: :func:`lock_folder` writes ``OUT/.bupo-lock`` (pid, host, start time);
  a second ``bupo train`` or ``bupo sweep`` into the folder is refused, and a lock left by a
  process that no longer runs is taken over with a message;
* ``resume=True`` needs ``config.json``; it continues from the newest intact checkpoint whose own
  saved config matches. With no checkpoint yet (a crash before the first save) it starts clean
  from step 0 and empties ``metrics.jsonl``, so no stale rows stay.

JSONL files are read with :func:`iter_jsonl` (shared by metrics, task files and pairs files):
UTF-8 only, errors name ``file:line``; :func:`read_metrics` tolerates a torn last line (a crash
while writing it) with a warning.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch  # save_file is looked up when called: a test replaces it
import torch
from transformers.utils import logging as hf_logging

from .errors import BupoError, ConfigMismatchError, InputFormatError
from .manifest import manifest_problem, write_manifest

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT_MANIFEST = "bupo-checkpoint.json"
CHECKPOINT_FORMAT = 2
RUN_FILES = (
    CONFIG,
    METRICS,
    CHECKPOINTS,
    f".{CONFIG}.tmp",
    f".{METRICS}.tmp",
)  # + temporaries of an interrupted atomic write
LOCK = ".bupo-lock"
REPLACED = ".replaced-run"  # the previous run while an --overwrite has not reached its first checkpoint
BOOKKEEPING = (LOCK, REPLACED)  # never counted as another run's files, never deleted by clear_run


class RunFolderError(BupoError, ValueError):
    """A run folder that cannot be used as asked (another run's files, damaged checkpoints)."""


# --------------------------------------------------------------------------- folders
def prepare_output_dir(path: str | Path, *, what: str = "output folder", flag: str = "--out") -> Path:
    """Create ``path`` (and parents) and check that files can be written in it.

    Call it at the top of a command, before loading a model, so that a bad ``--out`` fails in
    a second rather than after the work.

    Raises:
        InputFormatError: ``path`` is a file, lies under a file, or is not writable.
    """
    p = Path(path).expanduser()
    for parent in [p, *p.parents]:
        if parent.exists() and not parent.is_dir():
            raise InputFormatError(f"{what} {p}: {parent} is a file, not a folder; pass a folder path with {flag}")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".bupo-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputFormatError(
            f"{what} {p} is not writable ({exc.strerror or exc}); pass a folder you can write to with {flag}"
        ) from None
    return p


def _entries(p: Path) -> list[str]:
    return (
        sorted(x.name for x in p.iterdir() if x.name not in BOOKKEEPING and not x.name.startswith(".bupo-write-test-"))
        if p.is_dir()
        else []
    )


# --------------------------------------------------------------------------- locks
def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError):
        return False
    return True


class FolderLock:
    """``FOLDER/.bupo-lock`` held by this process (see :func:`lock_folder`); ``release()`` or use as a context manager."""

    def __init__(self, path: Path, *, owner: bool = True) -> None:
        self.path = path
        self.owner = owner  # False: a nested claim by the process that already holds the lock (release does nothing)

    def release(self) -> None:
        """Remove the lock file if it is still this process's (a nested claim leaves it to the outer one)."""
        if not self.owner:
            return
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(holder, dict) and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            try:
                self.path.unlink()
            except OSError:
                pass

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_folder(folder: str | Path, *, what: str = "run folder", log=None) -> FolderLock:
    """Claim ``folder`` for this process: create ``folder/.bupo-lock`` (pid, host, start time) exclusively.

    Raises:
        RunFolderError: another live process holds the folder (its pid and host are named), or a
            process on another host does (bupo cannot tell whether it still runs; the message says
            which file to delete).

    A lock whose process no longer runs on this host (killed, crashed) is taken over, with a
    message through ``log`` (default: stderr). The folder is created if needed. A claim by the
    process that already holds the folder (``bupo train`` locks it, then the run loop does) is
    nested: it succeeds and its ``release()`` leaves the lock to the outer claim.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    p = prepare_output_dir(folder, what=what)
    path = p / LOCK
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv[:8],
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                text = path.read_text(encoding="utf-8")
                holder = json.loads(text)
            except FileNotFoundError:
                continue
            except (OSError, ValueError):
                holder, text = None, None
            if (
                isinstance(holder, dict)
                and holder.get("host") == socket.gethostname()
                and holder.get("pid") == os.getpid()
            ):
                return FolderLock(path, owner=False)
            if isinstance(holder, dict) and holder.get("host") != socket.gethostname():
                raise RunFolderError(
                    f"{p} is in use by bupo process {holder.get('pid')} on host {holder.get('host')} (since {holder.get('started')}); "
                    f"wait for it to finish, or, if it no longer runs, delete {path}"
                ) from None
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int) and _pid_running(holder["pid"]):
                raise RunFolderError(
                    f"{p} is in use by bupo process {holder['pid']} on this host (since {holder.get('started')}): "
                    "two processes writing one folder mix their results. Wait for it to finish, stop it, or use another --out folder."
                ) from None
            who = (
                f"process {holder.get('pid')} (started {holder.get('started')})"
                if isinstance(holder, dict)
                else "an unreadable lock file"
            )
            log(f"[bupo] {p}: taking over the lock of {who}, which no longer runs")
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(me))
            f.flush()
            os.fsync(f.fileno())
        return FolderLock(path)
    raise RunFolderError(f"{p}: could not take the lock {path} (other processes keep claiming it); try again")


# --------------------------------------------------------------------------- overwrite
def set_aside_run(out_dir: str | Path) -> Path | None:
    """Move a run's files into ``OUT/.replaced-run/`` (kept until the new run's first checkpoint).

    If ``.replaced-run`` already exists, an earlier ``--overwrite`` never reached its first
    checkpoint: the files in ``OUT`` are that failed run's and are deleted, and the older run stays
    set aside. Returns the folder holding the previous run, or ``None`` when there was none.
    """
    p = Path(out_dir)
    aside = p / REPLACED
    present = [n for n in RUN_FILES if (p / n).exists()]
    if aside.is_dir():
        clear_run(p)
        return aside
    if not present:
        return None
    tmp = p / f"{REPLACED}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in present:
        os.replace(p / name, tmp / name)
    os.replace(tmp, aside)
    return aside


def restore_replaced_run(out_dir: str | Path) -> bool:
    """Put a set-aside run back if the new run never wrote a checkpoint; returns True when it did.

    Called when a new ``--overwrite`` run fails before its first checkpoint, so a typo never costs
    the old run.
    """
    p = Path(out_dir)
    aside = p / REPLACED
    if not aside.is_dir() or list_checkpoints(p):
        return False
    clear_run(p)
    for item in aside.iterdir():
        os.replace(item, p / item.name)
    aside.rmdir()
    return True


def drop_replaced_run(out_dir: str | Path) -> None:
    """Delete the run an ``--overwrite`` set aside (called once the new run has a checkpoint)."""
    shutil.rmtree(Path(out_dir) / REPLACED, ignore_errors=True)


def clear_run(out_dir: str | Path, names: tuple[str, ...] = RUN_FILES) -> None:
    """Delete a run's ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` (or the given ``names``; nothing else)."""
    p = Path(out_dir)
    for name in names:
        q = p / name
        if q.is_dir():
            shutil.rmtree(q)
        elif q.exists():
            q.unlink()


def claim_run_dir(out_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Make ``out_dir`` usable by one run, following the rules in the module docstring.

    Returns the folder (created). Raises :class:`RunFolderError` for a folder that holds another
    run (or other files) when neither ``resume`` nor ``overwrite`` is given.
    """
    if resume and overwrite:
        raise InputFormatError(
            "--resume and --overwrite contradict each other: resume continues the run in the folder, overwrite deletes it"
        )
    p = prepare_output_dir(out_dir, what="run folder")
    if not resume and not overwrite and (p / REPLACED).is_dir() and not list_checkpoints(p):
        restore_replaced_run(
            p
        )  # an --overwrite killed before its first checkpoint: the old run is still the folder's run
    found = _entries(p)
    if resume:
        return p
    if not found:
        return p
    foreign = [n for n in found if n not in RUN_FILES]
    if overwrite and not foreign:
        set_aside_run(p)
        return p
    if overwrite:
        raise RunFolderError(
            f"--overwrite: {p} holds files that are not part of a bupo run ({', '.join(foreign[:5])}); "
            "refusing to delete them. Pass an empty or new folder with --out."
        )
    what = (
        "another run (config.json, metrics.jsonl, checkpoints/)"
        if set(found) & set(RUN_FILES)
        else f"other files ({', '.join(found[:5])})"
    )
    raise RunFolderError(
        f"{p} already holds {what}. A run folder belongs to one run: use --resume to continue it, "
        "--overwrite to delete it and start clean, or a new --out folder."
    )


def read_config(out_dir: str | Path) -> dict:
    """The run's ``config.json`` as a dict; a missing or corrupt file raises naming it."""
    path = Path(out_dir) / CONFIG
    if not path.is_file():
        raise ConfigMismatchError(
            f"--resume: {path} does not exist; there is no run to resume in {Path(out_dir)} (drop --resume to start one)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(
            f"{path} is corrupt ({exc}); the checkpoints keep their own copy of the config "
            f'(checkpoints/checkpoint-<step>/trainer_state.json): copy its "config" into {path}, or start again with --overwrite'
        ) from exc
    if not isinstance(data, dict):
        raise RunFolderError(
            f"{path} is not a JSON object; restore it from a checkpoint's trainer_state.json or use --overwrite"
        )
    return data


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- JSONL
def _check_text_file(p: Path, what: str) -> None:
    if p.is_dir():
        raise InputFormatError(f"{what} {p} is a folder, not a file; pass the path of a .jsonl file")
    if not p.exists():
        raise InputFormatError(f"{what} {p} does not exist")
    with open(p, "rb") as f:
        head = f.read(4)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or (
        len(head) >= 4 and (head[1:4:2] == b"\x00\x00" or head[0:4:2] == b"\x00\x00")
    ):
        raise InputFormatError(
            f"{p}:1: the file is UTF-16 (or another wide encoding); save it as UTF-8 (one JSON object per line)"
        )


def iter_jsonl(
    path: str | Path, *, what: str = "file", tolerate_torn_last_line: bool = False
) -> Iterator[tuple[int, Any]]:
    """``(line_number, object)`` for every non-blank line of a UTF-8 JSONL file.

    Errors (:class:`InputFormatError`) name ``file:line``: a folder or missing file, UTF-16 or
    other non-UTF-8 bytes, invalid JSON. With ``tolerate_torn_last_line`` a last line that is not
    valid JSON and has no trailing newline (a crash while appending) is skipped with a warning.
    """
    p = Path(path).expanduser()
    _check_text_file(p, what)
    with open(p, "rb") as f:
        raw_lines = f.read().split(b"\n")
    # the text after the last "\n" is the unterminated last line ("" when the file ends with \n)
    last = len(raw_lines)
    for lineno, raw in enumerate(raw_lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputFormatError(
                f"{p}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the file as UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if tolerate_torn_last_line and lineno == last:
                warnings.warn(
                    f"{p}:{lineno}: ignoring a torn last line (a crash while it was written): {line[:60]!r}",
                    stacklevel=2,
                )
                return
            raise InputFormatError(
                f"{p}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object"
            ) from None
        yield lineno, obj


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a ``metrics.jsonl`` (a run folder or the file itself); a torn last line is skipped with a warning."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS
    rows = []
    for lineno, obj in iter_jsonl(p, what="metrics file", tolerate_torn_last_line=True):
        if not isinstance(obj, dict) or "step" not in obj:
            raise InputFormatError(
                f'{p}:{lineno}: not a metrics row (a JSON object with "step"); this file was not written by bupo train'
            )
        rows.append(obj)
    return rows


def append_metrics(path: str | Path, row: dict) -> None:
    """Append one row to ``metrics.jsonl`` and fsync it (a crash loses at most the row being written)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_metrics(path: str | Path, last_step: int) -> int:
    """Keep only rows with ``step <= last_step`` (atomically); returns how many rows were dropped."""
    p = Path(path)
    if not p.exists():
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = read_metrics(p)
    kept = [r for r in rows if int(r["step"]) <= last_step]
    tmp = p.with_name(f".{p.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return len(rows) - len(kept)


# --------------------------------------------------------------------------- checkpoints
def _step_of(p: Path) -> int | None:
    tail = p.name.removeprefix("checkpoint-")
    return int(tail) if p.name.startswith("checkpoint-") and tail.isdigit() else None


def list_checkpoints(root: str | Path, *, need: str = "manifest") -> list[Path]:
    """Finished ``checkpoint-<step>`` folders under ``root`` (a run's ``checkpoints/`` or the run folder), oldest first.

    With ``need="manifest"`` a checkpoint counts when its manifest (``bupo-checkpoint.json``,
    written last) exists; with ``need="weights"`` any folder holding ``*.safetensors`` weights
    counts (enough to load the model, e.g. for ``bupo refine``). Whether the files are intact is
    :func:`checkpoint_problem`'s job.
    """
    root = Path(root)
    if (root / CHECKPOINTS).is_dir():
        root = root / CHECKPOINTS
    if not root.is_dir():
        return []

    def usable(p: Path) -> bool:
        return (p / CHECKPOINT_MANIFEST).is_file() if need == "manifest" else any(p.glob("*.safetensors"))

    found = [p for p in root.iterdir() if p.is_dir() and _step_of(p) is not None and usable(p)]
    return sorted(found, key=lambda p: _step_of(p))  # type: ignore[arg-type, return-value]


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest finished checkpoint under ``root``, or ``None``."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def write_checkpoint_manifest(folder: Path) -> dict:
    """Record size and SHA-256 of every file of a checkpoint in ``bupo-checkpoint.json`` (written last)."""
    return write_manifest(folder, CHECKPOINT_MANIFEST, {"format": CHECKPOINT_FORMAT})


def checkpoint_problem(folder: str | Path, verify: str = "sampled") -> str | None:
    """Why a checkpoint cannot be resumed from, or ``None`` when it is complete and intact.

    ``verify="sampled"`` checks sizes, safetensors headers, sampled digests of the weight files and
    full SHA-256 of the small files; ``"full"`` hashes every byte (:mod:`bupo_core.manifest`).
    """
    folder = Path(folder)
    if (folder / "trainer_state.pt").exists() and not (folder / CHECKPOINT_MANIFEST).exists():
        return "an old pickle-format checkpoint (trainer_state.pt); bupo no longer loads pickles, which can run code"
    problem = manifest_problem(folder, CHECKPOINT_MANIFEST, fmt=CHECKPOINT_FORMAT, verify=verify)
    return problem.replace("never finished", "the checkpoint was never finished") if problem else None


def _flat_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer ``state_dict`` into tensors (safetensors) and JSON-able values."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{pid}.{k}"] = v.detach().to("cpu").clone().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflat_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Python, torch, CUDA and NumPy RNG states as (tensors, JSON)."""
    tensors = {"torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s.clone()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64).copy())
    py = random.getstate()
    meta = {"python": [py[0], list(py[1]), py[2]], "numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(tensors["torch"])
    cuda = [
        tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    ]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    ckpt_root: str | Path,
    *,
    step: int,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    state: dict,
    config: dict,
    reference: Any = None,
    keep: int = 0,
    metrics_path: str | Path | None = None,
) -> Path:
    """Write ``ckpt_root/checkpoint-<step>/`` atomically (temporary folder, manifest, rename).

    A save that fails (disk full, an exception, an interrupt) removes its temporary folder; a full
    disk raises :class:`RunFolderError` naming the free space and the fix.

    Args:
        step: the last completed step.
        model, tokenizer: saved with ``save_pretrained`` (safetensors), loadable by transformers.
        optimizer: its ``state_dict`` goes to ``optimizer.safetensors`` + JSON.
        state: JSON-able trainer counters (``data_position``, ``nonfinite_streak``...).
        config: the run's config dict (kept with the checkpoint, checked on resume).
        reference: the frozen KL reference model, if any.
        keep: keep only the newest ``keep`` checkpoints (0 = all).
        metrics_path: the run's ``metrics.jsonl``; its rows of steps 1..step are kept in the
            checkpoint (``metrics.jsonl``), committed together with the weights and the counter.
    """
    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-checkpoint-{step}"
    try:
        return _save_checkpoint(
            root,
            tmp,
            step=step,
            model=model,
            tokenizer=tokenizer,
            optimizer=optimizer,
            state=state,
            config=config,
            reference=reference,
            keep=keep,
            metrics_path=metrics_path,
        )
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(exc):
            free = shutil.disk_usage(root).free
            newest = latest_checkpoint(root)
            raise RunFolderError(
                f"no space left on the disk of {root} while writing checkpoint-{step} ({free / 2**20:.0f} MiB free; the partial "
                f"checkpoint was removed). Free some space or keep fewer checkpoints (--keep-checkpoints N), then --resume"
                + (f" (from {newest.name})" if newest else "")
            ) from None
        raise


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "StorageFull" in text or "Disk quota exceeded" in text


def _save_checkpoint(
    root: Path,
    tmp: Path,
    *,
    step: int,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    state: dict,
    config: dict,
    reference: Any,
    keep: int,
    metrics_path: str | Path | None,
) -> Path:
    final = root / f"checkpoint-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    opt_tensors, opt_meta = _flat_optimizer(optimizer.state_dict())
    safetensors.torch.save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng_tensors, rng_meta = rng_state()
    safetensors.torch.save_file(rng_tensors, str(tmp / "rng.safetensors"))
    if reference is not None:
        safetensors.torch.save_file(
            {k: v.detach().to("cpu").clone().contiguous() for k, v in reference.state_dict().items()},
            str(tmp / "reference.safetensors"),
        )
    trainer_state = {"step": step, **state, "optimizer": opt_meta, "rng": rng_meta, "config": config}
    write_json_atomic(tmp / "trainer_state.json", trainer_state)
    if metrics_path is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = (
                [r for r in read_metrics(metrics_path) if int(r["step"]) <= step] if Path(metrics_path).exists() else []
            )
        with open(tmp / METRICS, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
    write_checkpoint_manifest(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    if root.name == CHECKPOINTS:  # the new run has a checkpoint: the run an --overwrite set aside can go now
        drop_replaced_run(root.parent)
    if keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_step(ckpt: str | Path) -> int:
    """The step a ``checkpoint-<step>`` folder holds (from its name)."""
    step = _step_of(Path(ckpt))
    if step is None:
        raise RunFolderError(f"{ckpt} is not a checkpoint-<step> folder")
    return step


def restore_metrics(ckpt: str | Path, metrics_path: str | Path) -> bool:
    """Rewrite the run's ``metrics.jsonl`` (atomically) from the rows committed with ``ckpt``; False if it has none."""
    src = Path(ckpt) / METRICS
    if not src.is_file():
        return False
    p = Path(metrics_path)
    tmp = p.with_name(f".{p.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(src.read_bytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return True


def load_checkpoint_state(ckpt: str | Path) -> dict:
    """Read a checkpoint's trainer state without running code (JSON + safetensors only).

    Returns ``trainer_state.json``'s dict plus ``"optimizer_state"`` (a ``state_dict`` for
    ``optimizer.load_state_dict``), ``"rng_tensors"`` and, when saved, ``"reference_state"``.
    """
    ckpt = Path(ckpt)
    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    state["optimizer_state"] = _unflat_optimizer(
        safetensors.torch.load_file(str(ckpt / "optimizer.safetensors")), state["optimizer"]
    )
    state["rng_tensors"] = safetensors.torch.load_file(str(ckpt / "rng.safetensors"))
    if (ckpt / "reference.safetensors").exists():
        state["reference_state"] = safetensors.torch.load_file(str(ckpt / "reference.safetensors"))
    return state


def check_same_settings(
    diff: dict[str, tuple[Any, Any]], saved_where: str, saved_file: str | Path, may_change: tuple[str, ...] = ()
) -> None:
    """Refuse a resume whose settings differ (the one resume-mismatch message).

    Args:
        diff: ``{name: (saved, now)}`` of the settings that differ; empty = nothing to refuse.
        saved_where: what was compared, e.g. ``"the run saved in runs/x"``.
        saved_file: the file that holds the saved settings (named in the fix).
        may_change: the settings a resume may change (listed in the message).

    Raises:
        ConfigMismatchError: naming each difference, the saved file and the fix.
    """
    if not diff:
        return
    lines = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
    allowed = f" Only {', '.join(may_change)} may change." if may_change else ""
    raise ConfigMismatchError(
        f"--resume: the settings differ from {saved_where} ({lines}). Use the saved settings (see {saved_file}) "
        f"or a new --out folder.{allowed}"
    )


def find_resume_checkpoint(out_dir: str | Path, config_differences) -> Path | None:
    """The checkpoint a resume continues from: the newest intact one whose saved config matches.

    Args:
        out_dir: the run folder.
        config_differences: ``fn(saved_config_dict) -> {name: (saved, now)}``; a non-empty result
            refuses the resume with :class:`~bupo_core.errors.ConfigMismatchError`.

    Damaged checkpoints are skipped with a warning naming them and the one used instead. Returns
    ``None`` when the run has no checkpoint at all (the caller starts clean); raises
    :class:`RunFolderError` when checkpoints exist but none is intact.
    """
    root = Path(out_dir) / CHECKPOINTS
    candidates = sorted(
        [p for p in root.iterdir() if p.is_dir() and _step_of(p) is not None] if root.is_dir() else [],
        key=lambda p: _step_of(p),  # type: ignore[arg-type, return-value]
    )
    damaged: list[str] = []
    for ckpt in reversed(candidates):
        problem = checkpoint_problem(ckpt, verify="full")  # every byte: a sampled digest misses a changed value
        if problem is not None:
            damaged.append(f"{ckpt.name}: {problem}")
            continue
        saved = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))["config"]
        check_same_settings(config_differences(saved), f"those saved with {ckpt}", ckpt / "trainer_state.json")
        if damaged:
            warnings.warn(
                f"--resume: skipped damaged checkpoint(s) ({'; '.join(damaged)}); resuming from the newest intact one, {ckpt.name}",
                stacklevel=2,
            )
        return ckpt
    if damaged:
        raise RunFolderError(
            f"--resume: no intact checkpoint in {root} ({'; '.join(damaged)}). Start again with --overwrite, or delete the damaged folders."
        )
    return None
