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

* a new run needs an empty (or missing) folder; ``overwrite=True`` deletes the previous run's
  ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` first (it refuses to delete anything
  else);
* ``resume=True`` needs ``config.json``; it continues from the newest intact checkpoint whose own
  saved config matches. With no checkpoint yet (a crash before the first save) it starts clean
  from step 0 and empties ``metrics.jsonl``, so no stale rows stay.

JSONL files are read with :func:`iter_jsonl` (shared by metrics, task files and pairs files):
UTF-8 only, errors name ``file:line``; :func:`read_metrics` tolerates a torn last line (a crash
while writing it) with a warning.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import BupoError, ConfigMismatchError, InputFormatError
from .manifest import manifest_problem, write_manifest

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT_MANIFEST = "bupo-checkpoint.json"
CHECKPOINT_FORMAT = 2
RUN_FILES = (CONFIG, METRICS, CHECKPOINTS, f".{CONFIG}.tmp", f".{METRICS}.tmp")  # + temporaries of an interrupted atomic write


class RunFolderError(BupoError, ValueError):
    """A run folder that cannot be used as asked (another run's files, damaged checkpoints)."""


# --------------------------------------------------------------------------- folders
def prepare_output_dir(path: str | Path, *, what: str = "output folder") -> Path:
    """Create ``path`` (and parents) and check that files can be written in it.

    Call it at the top of a command, before loading a model, so that a bad ``--out`` fails in
    a second rather than after the work.

    Raises:
        InputFormatError: ``path`` is a file, lies under a file, or is not writable.
    """
    p = Path(path).expanduser()
    for parent in [p, *p.parents]:
        if parent.exists() and not parent.is_dir():
            raise InputFormatError(f"{what} {p}: {parent} is a file, not a folder; pass a folder path with --out")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".bupo-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputFormatError(f"{what} {p} is not writable ({exc.strerror or exc}); pass a folder you can write to with --out") from exc
    return p


def _entries(p: Path) -> list[str]:
    return sorted(x.name for x in p.iterdir()) if p.is_dir() else []


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
        raise InputFormatError("--resume and --overwrite contradict each other: resume continues the run in the folder, overwrite deletes it")
    p = prepare_output_dir(out_dir, what="run folder")
    found = _entries(p)
    if resume:
        return p
    if not found:
        return p
    foreign = [n for n in found if n not in RUN_FILES]
    if overwrite and not foreign:
        clear_run(p)
        return p
    if overwrite:
        raise RunFolderError(
            f"--overwrite: {p} holds files that are not part of a bupo run ({', '.join(foreign[:5])}); "
            "refusing to delete them. Pass an empty or new folder with --out."
        )
    what = "another run (config.json, metrics.jsonl, checkpoints/)" if set(found) & set(RUN_FILES) else f"other files ({', '.join(found[:5])})"
    raise RunFolderError(
        f"{p} already holds {what}. A run folder belongs to one run: use --resume to continue it, "
        "--overwrite to delete it and start clean, or a new --out folder."
    )


def read_config(out_dir: str | Path) -> dict:
    """The run's ``config.json`` as a dict; a missing or corrupt file raises naming it."""
    path = Path(out_dir) / CONFIG
    if not path.is_file():
        raise ConfigMismatchError(f"--resume: {path} does not exist; there is no run to resume in {Path(out_dir)} (drop --resume to start one)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(
            f"{path} is corrupt ({exc}); the checkpoints keep their own copy of the config "
            f"(checkpoints/checkpoint-<step>/trainer_state.json): copy its \"config\" into {path}, or start again with --overwrite"
        ) from exc
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} is not a JSON object; restore it from a checkpoint's trainer_state.json or use --overwrite")
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
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(head) >= 4 and (head[1:4:2] == b"\x00\x00" or head[0:4:2] == b"\x00\x00")):
        raise InputFormatError(f"{p}:1: the file is UTF-16 (or another wide encoding); save it as UTF-8 (one JSON object per line)")


def iter_jsonl(path: str | Path, *, what: str = "file", tolerate_torn_last_line: bool = False) -> Iterator[tuple[int, Any]]:
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
            raise InputFormatError(f"{p}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the file as UTF-8") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if tolerate_torn_last_line and lineno == last:
                warnings.warn(f"{p}:{lineno}: ignoring a torn last line (a crash while it was written): {line[:60]!r}", stacklevel=2)
                return
            raise InputFormatError(f"{p}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object") from None
        yield lineno, obj


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a ``metrics.jsonl`` (a run folder or the file itself); a torn last line is skipped with a warning."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS
    rows = []
    for lineno, obj in iter_jsonl(p, what="metrics file", tolerate_torn_last_line=True):
        if not isinstance(obj, dict) or "step" not in obj:
            raise InputFormatError(f"{p}:{lineno}: not a metrics row (a JSON object with \"step\"); this file was not written by bupo train")
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
    import numpy as np  # noqa: PLC0415

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
    import numpy as np  # noqa: PLC0415

    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))]
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
) -> Path:
    """Write ``ckpt_root/checkpoint-<step>/`` atomically (temporary folder, manifest, rename).

    Args:
        step: the last completed step.
        model, tokenizer: saved with ``save_pretrained`` (safetensors), loadable by transformers.
        optimizer: its ``state_dict`` goes to ``optimizer.safetensors`` + JSON.
        state: JSON-able trainer counters (``data_position``, ``nonfinite_streak``...).
        config: the run's config dict (kept with the checkpoint, checked on resume).
        reference: the frozen KL reference model, if any.
        keep: keep only the newest ``keep`` checkpoints (0 = all).
    """
    from safetensors.torch import save_file  # noqa: PLC0415
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{step}"
    tmp = root / f".tmp-checkpoint-{step}"
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
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng_tensors, rng_meta = rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    if reference is not None:
        save_file({k: v.detach().to("cpu").clone().contiguous() for k, v in reference.state_dict().items()}, str(tmp / "reference.safetensors"))
    trainer_state = {"step": step, **state, "optimizer": opt_meta, "rng": rng_meta, "config": config}
    write_json_atomic(tmp / "trainer_state.json", trainer_state)
    write_checkpoint_manifest(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    if keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint_state(ckpt: str | Path) -> dict:
    """Read a checkpoint's trainer state without running code (JSON + safetensors only).

    Returns ``trainer_state.json``'s dict plus ``"optimizer_state"`` (a ``state_dict`` for
    ``optimizer.load_state_dict``), ``"rng_tensors"`` and, when saved, ``"reference_state"``.
    """
    from safetensors.torch import load_file  # noqa: PLC0415

    ckpt = Path(ckpt)
    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    state["optimizer_state"] = _unflat_optimizer(load_file(str(ckpt / "optimizer.safetensors")), state["optimizer"])
    state["rng_tensors"] = load_file(str(ckpt / "rng.safetensors"))
    if (ckpt / "reference.safetensors").exists():
        state["reference_state"] = load_file(str(ckpt / "reference.safetensors"))
    return state


def check_same_settings(diff: dict[str, tuple[Any, Any]], saved_where: str, saved_file: str | Path, may_change: tuple[str, ...] = ()) -> None:
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
        [p for p in root.iterdir() if p.is_dir() and _step_of(p) is not None] if root.is_dir() else [], key=lambda p: _step_of(p)  # type: ignore[arg-type, return-value]
    )
    damaged: list[str] = []
    for ckpt in reversed(candidates):
        problem = checkpoint_problem(ckpt)
        if problem is not None:
            damaged.append(f"{ckpt.name}: {problem}")
            continue
        saved = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))["config"]
        check_same_settings(config_differences(saved), f"those saved with {ckpt}", ckpt / "trainer_state.json")
        if damaged:
            warnings.warn(f"--resume: skipped damaged checkpoint(s) ({'; '.join(damaged)}); resuming from the newest intact one, {ckpt.name}", stacklevel=2)
        return ckpt
    if damaged:
        raise RunFolderError(
            f"--resume: no intact checkpoint in {root} ({'; '.join(damaged)}). Start again with --overwrite, or delete the damaged folders."
        )
    return None
