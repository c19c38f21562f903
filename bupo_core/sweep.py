"""Sweeps: a grid of (train -> evaluate) cells over arms and training seeds, resumable, with statistics.

A *spec* file (YAML or JSON) names the shared training settings, the arms (each a set of
:class:`~bupo_core.trainer.TrainConfig` fields that differ from the shared ones), the training
seeds, the evaluation settings and the control arm::

    name: main
    shared:                      # TrainConfig fields every arm starts from
      model: smollm2-135m-instruct
      task: chain_sum
      task_kwargs: {min_terms: 2, max_terms: 3, min_digits: 1, max_digits: 1, split: train}
      steps: 12
      prompts_per_step: 4
    seeds: [0, 1, 2, 3, 4]
    control: grpo
    eval: {num_problems: 32, k: 8, max_new_tokens: 16}
    arms:
      - {name: base, config: {steps: 0}}          # steps 0 = evaluate the untrained model
      - {name: grpo, config: {method: grpo}}
      - {name: bupo_l5, config: {method: bupo, layer: 5, inter_steps: 3}, seeds: [0, 1, 2]}

An arm may also carry ``note`` (what it is), ``paper`` (what the paper reports for it) and ``group``
(the question it belongs to, e.g. ``"target layer (Table 3)"``); reports and notebook 08 use them,
the cell's result does not depend on them.

A *cell* is one (arm, seed): train with ``seed`` (which fixes the training prompts and every
sampling draw), then evaluate on the evaluation split with sampling seed ``seed``, so the cells of
two arms with the same seed see the same prompts and the same evaluation problems and draws: a
pair for :func:`bupo_core.stats.compare_to_control`.

Output folder ``DIR``:

* ``cells.jsonl``: one row per finished cell (metrics, per-step training rewards, wall times),
  appended and flushed when the cell finishes. A cell with a row is never run again.
* ``cells/<arm>/seed-<s>/run/``: the training run (``config.json``, ``metrics.jsonl``); its
  checkpoints are deleted once the cell's row is written. ``.../eval/``: ``eval.json`` and
  ``per_problem.jsonl``.
* ``summary.json``: per arm, mean / standard error / per-seed values of every metric and the
  paired comparison with the control arm (see :func:`summarize`).

Ctrl-C stops after writing a checkpoint of the cell in progress; rerunning the same command skips
the finished cells and resumes the interrupted one from its checkpoint (``Trainer(resume=True)``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from . import models  # models.load_model is looked up when called: tests replace it
from .config_cli import MAX_SEED, check_seed
from .errors import BupoError, InputFormatError
from .evaluate import EvalConfig, evaluate
from .models import check_device, check_train_model
from .runs import append_metrics, iter_jsonl, latest_checkpoint, lock_folder, prepare_output_dir, read_metrics
from .runtime import default_device
from .stats import compare_to_control, mean_se
from .tasks import load_task
from .trainer import TrainConfig, Trainer

METRICS = ("avg_at_k", "pass_at_k", "no_answer_rate", "accuracy_among_answered")
#: how the reports name each metric (``{k}``: the number of samples per problem)
METRIC_LABELS = {
    "avg_at_k": "Avg@{k}",
    "pass_at_k": "Pass@{k}",
    "no_answer_rate": "no parseable answer",
    "accuracy_among_answered": "accuracy among answered",
}
SPEC_KEYS = {"name", "description", "shared", "seeds", "control", "eval", "arms", "notes"}
ARM_KEYS = {"name", "config", "seeds", "note", "paper", "group"}
#: the ``eval:`` keys that say where the problems come from (every other key is an EvalConfig field)
EVAL_PROBLEMS: dict[str, Any] = {
    "task": None,  # default: the shared task
    "task_kwargs": None,  # default: the shared task_kwargs with split "eval"
    "split": "eval",
    "task_seed": 10_000,
    "template": None,
}
#: EvalConfig fields a cell sets itself
EVAL_SET_BY_CELL = {"seed": "each cell evaluates with its training seed"}
#: a spec's ``eval:`` section: the problem source plus every EvalConfig field (generated from the dataclass)
EVAL_DEFAULTS: dict[str, Any] = {
    **EVAL_PROBLEMS,
    **{f.name: getattr(EvalConfig(), f.name) for f in fields(EvalConfig) if f.name not in EVAL_SET_BY_CELL},
    "max_new_tokens": None,  # default: the shared max_new_tokens
}
#: eval keys hashed into a cell's key even at their defaults (the keys of the committed cells were computed
#: from these); any other EvalConfig field enters the key only when a spec sets it to a non-default value
_KEYED_EVAL = (
    "task",
    "task_kwargs",
    "split",
    "task_seed",
    "num_problems",
    "k",
    "max_new_tokens",
    "temperature",
    "template",
    "batch_size",
)
RESERVED = {
    "seed": "the sweep sets it from `seeds`",
    "out_dir": "the sweep puts each run under DIR/cells/<arm>/seed-<s>/run",
}
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def metric_label(metric: str, k: int) -> str:
    """Human name of a summary metric (``"avg_at_k"`` -> ``"Avg@8"``)."""
    return METRIC_LABELS.get(metric, metric).format(k=k)


# ----------------------------------------------------------------------------- the spec
@dataclass
class Arm:
    """One arm: a name, the TrainConfig fields it sets on top of the shared ones, its seeds."""

    name: str
    config: dict
    seeds: list[int]
    note: str = ""
    paper: str = ""
    unavailable: str = ""
    group: str = ""  # which question the arm belongs to (e.g. "target layer (Table 3)"), for reports


class UnknownFieldError(InputFormatError):
    """A spec sets a TrainConfig field this version of bupo_core does not have."""


@dataclass
class SweepSpec:
    """A parsed, validated sweep spec (see the module docstring for the file format).

    Attributes:
        name: sweep name (default: the file's stem).
        shared: TrainConfig fields every arm starts from.
        arms: the arms, in file order.
        seeds: default training seeds of every arm.
        control: the arm the others are compared with.
        eval: evaluation settings (:data:`EVAL_DEFAULTS` filled in).
        path: the file it came from.
    """

    name: str
    shared: dict
    arms: list[Arm]
    seeds: list[int]
    control: str
    eval: dict
    path: str = ""
    description: str = ""
    notes: list = field(default_factory=list)

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    def train_config(self, arm: Arm, seed: int, out_dir: str | Path, device: str | None = None):
        """The :class:`TrainConfig` of cell (arm, seed)."""
        merged = {**self.shared, **arm.config, "seed": seed, "out_dir": str(out_dir)}
        if device is not None:
            merged["device"] = device
        if "adam_betas" in merged:
            merged["adam_betas"] = tuple(merged["adam_betas"])
        return TrainConfig(**merged)

    def arm_differences(self, arm: Arm) -> dict:
        """The TrainConfig fields of ``arm`` that differ from the shared settings (JSON values)."""
        base = _config_dict(TrainConfig, self.shared)
        full = _config_dict(TrainConfig, {**self.shared, **arm.config})
        return {k: v for k, v in full.items() if base.get(k) != v}

    def cells(self) -> list[tuple[Arm, int]]:
        """Every (arm, seed) of the available arms, seed-major (all arms at seed 0 first) so partial sweeps stay paired."""
        arms = self.available_arms()
        seeds = sorted({s for a in arms for s in a.seeds})
        return [(a, s) for s in seeds for a in arms if s in a.seeds]

    def available_arms(self) -> list[Arm]:
        """Arms this version can run (see ``skip_unavailable`` of :func:`parse_spec`)."""
        return [a for a in self.arms if not a.unavailable]


def _config_dict(cls, values: dict) -> dict:
    kw = dict(values)
    if "adam_betas" in kw:
        kw["adam_betas"] = tuple(kw["adam_betas"])
    cfg = cls(**kw)
    return json.loads(json.dumps(cfg.to_dict()))


def _read_spec_file(path: Path) -> Any:
    if not path.exists():
        raise InputFormatError(
            f"sweep spec {path} does not exist; give a .yaml, .yml or .json file (examples in results/specs/)"
        )
    if not path.is_file():
        raise InputFormatError(
            f"sweep spec {path} is a folder, not a file; give the spec's .yaml, .yml or .json file (examples in results/specs/)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputFormatError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save the spec as UTF-8"
        ) from None
    except OSError as exc:
        raise InputFormatError(f"sweep spec {path} cannot be read ({exc.strerror or exc})") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise InputFormatError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    raise InputFormatError(f"{path}: unknown spec format {path.suffix!r}; use .yaml, .yml or .json")


def _seed_list(value: Any, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))  # "seeds: 3" = seeds 0, 1, 2
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    ):
        raise InputFormatError(f"{where} must be a non-empty list of non-negative integers, got {value!r}")
    if len(set(value)) != len(value):
        raise InputFormatError(f"{where} lists a seed twice: {value!r}")

    if max(value) > MAX_SEED:
        raise InputFormatError(f"{where}: seed {max(value)} is out of range; seeds must be integers in 0..{MAX_SEED}")
    return list(value)


def parse_spec(data: Any, path: str = "<spec>", *, skip_unavailable: bool = False) -> SweepSpec:
    """Validate a spec (already parsed from YAML/JSON) and return a :class:`SweepSpec`.

    Every error is an :class:`InputFormatError` that names the file and the reason. Unknown
    TrainConfig fields name the valid ones; every arm's full config is validated
    (``TrainConfig.validate``) before any cell runs.

    Args:
        skip_unavailable: an arm that sets TrainConfig fields this version lacks is kept but
            marked ``unavailable`` (no cells, listed under ``unavailable_arms`` in the summary)
            instead of raising. The control arm must be available.
    """
    valid = [f.name for f in fields(TrainConfig)]
    if not isinstance(data, dict):
        raise InputFormatError(
            f"{path}: a sweep spec must be a mapping with keys shared, seeds, control, eval, arms; got {type(data).__name__}"
        )
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise InputFormatError(f"{path}: unknown top-level key(s) {unknown}; allowed: {sorted(SPEC_KEYS)}")
    for key in ("seeds", "control", "arms"):
        if key not in data:
            raise InputFormatError(
                f"{path}: missing required key {key!r} (a spec needs shared, seeds, control, arms; eval is optional)"
            )
    shared = data.get("shared") or {}
    if not isinstance(shared, dict):
        raise InputFormatError(f"{path}: 'shared' must be a mapping of TrainConfig fields, got {type(shared).__name__}")
    _check_fields(shared, valid, f"{path}: shared settings")
    seeds = _seed_list(data["seeds"], f"{path}: 'seeds'")
    raw_arms = data["arms"]
    if isinstance(raw_arms, dict):  # {name: {config...}} is accepted too
        raw_arms = [
            {"name": k, **(v if isinstance(v, dict) and ("config" in v or "seeds" in v) else {"config": v})}
            for k, v in raw_arms.items()
        ]
    if not isinstance(raw_arms, list) or not raw_arms:
        raise InputFormatError(f"{path}: 'arms' must be a non-empty list of {{name, config}} mappings")
    arms: list[Arm] = []
    for i, raw in enumerate(raw_arms):
        where = f"{path}: arm #{i + 1}"
        if not isinstance(raw, dict) or "name" not in raw:
            raise InputFormatError(f"{where} must be a mapping with a 'name' and a 'config', got {raw!r}")
        flat = {k: v for k, v in raw.items() if k in valid and k not in ARM_KEYS}
        if flat:  # TrainConfig fields written directly in the arm
            if set(flat) & set(raw.get("config") or {}):
                raise InputFormatError(
                    f"{where}: {sorted(set(flat) & set(raw['config']))} set both in the arm and under its 'config'"
                )
            raw = {**{k: v for k, v in raw.items() if k not in flat}, "config": {**(raw.get("config") or {}), **flat}}
        name = raw["name"]
        where = f"{path}: arm {name!r}"
        if not isinstance(name, str) or not _ARM_NAME.match(name):
            raise InputFormatError(
                f"{where}: the name must be letters, digits, '_', '.', '+' or '-' (it names a folder)"
            )
        if any(a.name == name for a in arms):
            raise InputFormatError(f"{where}: two arms have this name; names must be unique")
        extra = sorted(set(raw) - ARM_KEYS)
        if extra:
            raise InputFormatError(
                f"{where}: unknown key(s) {extra}; an arm has {sorted(ARM_KEYS)} (TrainConfig fields go under 'config')"
            )
        config = raw.get("config") or {}
        if not isinstance(config, dict):
            raise InputFormatError(
                f"{where}: 'config' must be a mapping of TrainConfig fields, got {type(config).__name__}"
            )
        unavailable = ""
        try:
            _check_fields(config, valid, where)
        except UnknownFieldError as exc:
            if not skip_unavailable:
                raise
            unavailable = str(exc).split(" (a field")[0].split(": ", 2)[-1]
        arm_seeds = _seed_list(raw["seeds"], f"{where}: 'seeds'") if "seeds" in raw else list(seeds)
        arms.append(
            Arm(
                name,
                dict(config),
                arm_seeds,
                str(raw.get("note", "")),
                str(raw.get("paper", "")),
                unavailable,
                str(raw.get("group", "")),
            )
        )
    control = data["control"]
    if control not in [a.name for a in arms]:
        raise InputFormatError(
            f"{path}: control arm {control!r} is not one of the arms ({', '.join(a.name for a in arms)})"
        )
    if any(a.name == control and a.unavailable for a in arms):
        raise InputFormatError(
            f"{path}: the control arm {control!r} sets fields this version lacks ({next(a.unavailable for a in arms if a.name == control)})"
        )
    ev = dict(EVAL_DEFAULTS)
    raw_eval = data.get("eval") or {}
    if not isinstance(raw_eval, dict):
        raise InputFormatError(f"{path}: 'eval' must be a mapping, got {type(raw_eval).__name__}")
    for key, why in EVAL_SET_BY_CELL.items():
        if key in raw_eval:
            raise InputFormatError(f"{path}: do not set eval {key!r} ({why})")
    bad = sorted(set(raw_eval) - set(EVAL_DEFAULTS))
    if bad:
        raise InputFormatError(f"{path}: unknown eval setting(s) {bad}; allowed: {sorted(EVAL_DEFAULTS)}")
    ev.update(raw_eval)
    if ev["split"] not in ("train", "eval", None):
        raise InputFormatError(f"{path}: eval split must be 'eval', 'train' or null, got {ev['split']!r}")
    for key in ("num_problems", "k"):
        if not isinstance(ev[key], int) or ev[key] < 1:
            raise InputFormatError(f"{path}: eval {key} must be an integer >= 1, got {ev[key]!r}")
    if ev["task_kwargs"] is not None and not isinstance(ev["task_kwargs"], dict):
        raise InputFormatError(f"{path}: eval task_kwargs must be a mapping, got {ev['task_kwargs']!r}")
    spec = SweepSpec(
        str(data.get("name") or Path(path).stem),
        dict(shared),
        arms,
        seeds,
        control,
        ev,
        str(path),
        str(data.get("description", "")),
        list(data.get("notes") or []),
    )
    defaults = TrainConfig()
    task = shared.get("task", defaults.task)
    ev["task"] = ev["task"] or task
    if ev["task_kwargs"] is None:
        kw = dict(shared.get("task_kwargs", defaults.task_kwargs)) if ev["task"] == task else {}
        kw.pop("split", None)
        ev["task_kwargs"] = kw
    if ev["max_new_tokens"] is None:
        ev["max_new_tokens"] = shared.get("max_new_tokens", defaults.max_new_tokens)
    _check_eval(ev, seeds + [s for a in arms for s in a.seeds], path)  # every EvalConfig check, before anything runs
    for arm in spec.available_arms():
        try:
            cfg = spec.train_config(arm, arm.seeds[0], "unused")
            if cfg.steps != 0:
                cfg.validate()
        except InputFormatError as exc:
            raise InputFormatError(f"{path}: arm {arm.name!r}: {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise InputFormatError(f"{path}: arm {arm.name!r}: bad setting ({exc})") from exc
        if cfg.steps < 0:
            raise InputFormatError(f"{path}: arm {arm.name!r}: steps must be >= 0 (0 = evaluate the untrained model)")
    return spec


def eval_config(ev: dict, *, seed: int) -> EvalConfig:
    """The :class:`~bupo_core.evaluate.EvalConfig` of a resolved ``eval:`` section, for the cell of ``seed``."""
    return EvalConfig(**{f.name: ev[f.name] for f in fields(EvalConfig) if f.name in ev}, seed=seed)


def _check_eval(ev: dict, seeds: list[int], path: str) -> None:
    """The eval settings as :class:`~bupo_core.evaluate.EvalConfig` checks them (every cell's seed included)."""
    check_seed(ev["task_seed"], f"{path}: eval task_seed")
    try:
        for seed in sorted(set(seeds))[-1:] or [0]:
            eval_config(ev, seed=seed)
    except InputFormatError as exc:
        raise InputFormatError(f"{path}: eval: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InputFormatError(f"{path}: eval: bad setting ({exc})") from None


def check_spec_for_run(spec: SweepSpec, device: str | None = None) -> None:
    """Everything ``bupo train`` and ``bupo eval`` would check for every cell, before a file is written.

    :func:`parse_spec` checks the spec's form and each arm's :class:`TrainConfig`; this adds, for
    every (arm, seed), the full config's ``validate()``, the model name and the layers against the
    model (:func:`bupo_core.models.check_train_model`, no weights loaded), and loads the training and
    evaluation tasks once each. ``bupo sweep`` and ``bupo sweep --dry-run`` both call it.
    """
    check_device(device)
    tasks_seen: set[str] = set()
    for arm, seed in spec.cells():
        where = f"{spec.path}: arm {arm.name!r}, seed {seed}"
        try:
            cfg = spec.train_config(arm, seed, "unused", device)
            if cfg.steps != 0:
                cfg.validate()
            check_train_model(cfg)
        except InputFormatError as exc:
            raise InputFormatError(f"{where}: {exc}") from None
        except BupoError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise InputFormatError(f"{where}: bad setting ({exc})") from None
        if cfg.steps != 0:
            key = json.dumps([cfg.task, cfg.task_kwargs, cfg.template, cfg.reward], sort_keys=True, default=str)
            if key not in tasks_seen:
                tasks_seen.add(key)
                try:
                    load_task(
                        cfg.task,
                        size=cfg.task_size,
                        seed=cfg.seed,
                        template=cfg.template,
                        scorer=cfg.reward,
                        **cfg.task_kwargs,
                    )
                except BupoError as exc:
                    raise type(exc)(f"{where}: training task: {exc}") from None
    ev = spec.eval
    try:
        load_task(
            ev["task"],
            size=ev["num_problems"],
            seed=ev["task_seed"],
            template=ev["template"],
            split=ev["split"],
            **ev["task_kwargs"],
        )
    except BupoError as exc:
        raise type(exc)(f"{spec.path}: eval task: {exc}") from None


def _check_fields(values: dict, valid: list[str], where: str) -> None:
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise UnknownFieldError(
            f"{where}: unknown TrainConfig field(s) {unknown} (a field this version of bupo_core does not have). "
            f"Valid fields: {', '.join(valid)}"
        )
    for key, why in RESERVED.items():
        if key in values:
            raise InputFormatError(f"{where}: do not set {key!r} ({why})")
    if "task_kwargs" in values and values["task_kwargs"] is not None and not isinstance(values["task_kwargs"], dict):
        raise InputFormatError(
            f"{where}: task_kwargs must be a mapping of task generator settings (e.g. {{max_terms: 2}}), got {values['task_kwargs']!r}"
        )
    if "adam_betas" in values:
        b = values["adam_betas"]
        if not (
            isinstance(b, (list, tuple))
            and len(b) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in b)
        ):
            raise InputFormatError(
                f"{where}: adam_betas must be two numbers [beta1, beta2] (e.g. [0.9, 0.999]), got {b!r}"
            )


def load_spec(path: str | Path, *, skip_unavailable: bool = False) -> SweepSpec:
    """Read and validate a spec file (YAML or JSON); see :func:`parse_spec`."""
    p = Path(path)
    return parse_spec(_read_spec_file(p), str(p), skip_unavailable=skip_unavailable)


# ----------------------------------------------------------------------------- cells
#: settings that may change between the resumes of one training run but change a cell's samples, with
#: the values every cell had before they entered the key (their rows keep their keys): see :func:`cell_key`
#: the TrainConfig fields of the key's first version; a field added since enters a cell's key only when it is
#: not at its default, so adding a setting to TrainConfig never invalidates the rows of finished sweeps
KEYED_FIELDS_V1 = frozenset(
    (
        "model",
        "task",
        "task_kwargs",
        "task_size",
        "template",
        "reward",
        "binary_reward",
        "grader_timeout_s",
        "allow_test_set_training",
        "method",
        "layer",
        "inter_steps",
        "ipa_norm",
        "ipa_lr",
        "reset_optimizer_at_switch",
        "freeze_through_layer",
        "upper_lr_scale",
        "upper_lr_layer",
        "steps",
        "prompts_per_step",
        "group_size",
        "max_new_tokens",
        "temperature",
        "top_p",
        "generation_batch_size",
        "lr",
        "weight_decay",
        "adam_betas",
        "adam_eps",
        "max_grad_norm",
        "num_mini_batches",
        "ppo_epochs",
        "micro_batch_size",
        "loss",
        "eps_low",
        "eps_high",
        "dual_clip",
        "loss_aggregation",
        "kl_coef",
        "skip_zero_advantage_rows",
        "max_nonfinite_updates",
        "logprob_chunk_size",
        "gradient_checkpointing",
        "bf16_autocast",
        "device",
        "dtype",
        "share_prefill",
        "fused_optimizer",
        "score_needed_rows_only",
        "seed",
        "save_every",
        "keep_checkpoints",
        "out_dir",
    )
)
#: TrainConfig fields left out of the "train" part of the key (the run settings above are keyed separately)
UNKEYED_FIELDS = (
    "save_every",
    "keep_checkpoints",
    "out_dir",
    "device",
    "generation_batch_size",
    "grader_timeout_s",
    "allow_test_set_training",
)
RUN_SETTINGS_BASELINE: dict[str, Any] = {"generation_batch_size": 64, "grader_timeout_s": 5.0, "device": "cpu"}


def resolve_device(device: str | None) -> str:
    """The device type a cell runs on: ``cpu`` or ``cuda`` (``None`` = cuda if available)."""
    return (torch.device(device) if device else default_device()).type


def run_settings(spec: SweepSpec, arm: Arm, device: str | None = None) -> dict:
    """The settings outside the spec's result key that still change a cell's samples and grades.

    ``generation_batch_size`` (the batch shape changes the sampled tokens), ``grader_timeout_s``
    (a slow answer scores 0) and the device type (CPU and CUDA kernels sample differently).
    """
    merged = {**spec.shared, **arm.config}
    d = TrainConfig()
    return {
        "generation_batch_size": merged.get("generation_batch_size", d.generation_batch_size),
        "grader_timeout_s": float(merged.get("grader_timeout_s", d.grader_timeout_s)),
        "device": resolve_device(device or merged.get("device")),
    }


def cell_key(spec: SweepSpec, arm: Arm, seed: int, device: str | None = None) -> str:
    """Hash of everything that determines a cell's result: its full config, the eval settings and
    the :func:`run_settings` (generation batch size, grader timeout, device type).

    A row of ``cells.jsonl`` counts as this cell's result only if its key matches, so changing an
    arm's settings in the spec, or running on another device, is detected instead of silently
    mixing numbers. Run settings equal to :data:`RUN_SETTINGS_BASELINE` (what every earlier cell
    used) add nothing to the hash, so the keys of rows written before they entered it still hold.
    ``device`` is the device the cell runs (or ran) on; ``None`` = the spec's, else cuda if available.
    """
    cfg = _config_dict(TrainConfig, {**spec.shared, **arm.config, "seed": seed})
    for k in UNKEYED_FIELDS:
        cfg.pop(k, None)
    defaults = _config_dict(TrainConfig, {})
    for k in [k for k in cfg if k not in KEYED_FIELDS_V1 and cfg[k] == defaults.get(k)]:
        del cfg[k]  # a field added later, at its default (= what every earlier cell ran with): keys stay valid
    if "bf16_autocast" not in cfg and "precision" not in cfg:
        cfg["bf16_autocast"] = "auto"  # `precision: auto` replaced the key's first-version field `bf16_autocast: auto`
    ev = {
        k: v for k, v in spec.eval.items() if k in _KEYED_EVAL or v != EVAL_DEFAULTS.get(k)
    }  # later EvalConfig fields at defaults
    blob_obj: dict[str, Any] = {"train": cfg, "eval": ev}
    extra = {k: v for k, v in run_settings(spec, arm, device).items() if v != RUN_SETTINGS_BASELINE[k]}
    if extra:
        blob_obj["run"] = extra
    blob = json.dumps(blob_obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def row_matches(spec: SweepSpec, arm: Arm, seed: int, row: dict) -> bool:
    """True when ``row`` is this cell's result under the spec (checked with the device the row ran on)."""
    return row.get("key") == cell_key(spec, arm, seed, row.get("device") or RUN_SETTINGS_BASELINE["device"])


def read_cells(path: str | Path) -> list[dict]:
    """Rows of a ``cells.jsonl`` (a truncated last line from a crash is ignored)."""
    p = Path(path)
    if p.is_dir():
        p = p / "cells.jsonl"
    if not p.exists():
        return []

    # a torn last line (a crash while appending) is skipped with a warning: that cell simply reruns
    rows = []
    for lineno, obj in iter_jsonl(p, what="sweep cells file", tolerate_torn_last_line=True):
        if not (isinstance(obj, dict) and isinstance(obj.get("arm"), str) and isinstance(obj.get("seed"), int)):
            raise InputFormatError(
                f'{p}:{lineno}: not a cell row (a JSON object with "arm" and "seed"); '
                "this line was not written by bupo sweep: delete it (its cell then reruns)"
            )
        rows.append(obj)
    return rows


def eval_metrics(data: dict) -> dict:
    """The sweep's metrics from an ``eval.json`` dict: pass_at_k at the largest k."""
    k = max(int(x) for x in data["pass_at_k"])
    return {
        "avg_at_k": data["avg_at_k"],
        "pass_at_k": data["pass_at_k"][str(k)],
        "no_answer_rate": data["no_answer_rate"],
        "accuracy_among_answered": data.get("accuracy_among_answered"),
        "k": k,
    }


def run_cell(
    spec: SweepSpec, arm: Arm, seed: int, out: Path, *, device: str | None = None, progress: bool = True
) -> dict:
    """Train (or resume) and evaluate one cell; return its ``cells.jsonl`` row.

    Raises ``KeyboardInterrupt`` when training was interrupted (its checkpoint is on disk).
    """
    cell_dir = out / "cells" / arm.name / f"seed-{seed}"
    run_dir = cell_dir / "run"
    cfg = spec.train_config(arm, seed, run_dir, device)
    t0 = time.time()
    rewards: list[float] = []
    resumed = False
    if cfg.steps == 0:  # the untrained model
        model, tok = models.load_model(cfg.model, device=cfg.device, dtype=cfg.dtype, seed=cfg.seed)
    else:
        resumed = (run_dir / "config.json").exists() and latest_checkpoint(run_dir / "checkpoints") is not None
        if run_dir.exists() and not resumed:
            shutil.rmtree(run_dir)  # a crash before the first checkpoint: start the cell over
        trainer = Trainer(cfg, resume=resumed)
        result = trainer.train(progress=progress)
        if result.interrupted:
            raise KeyboardInterrupt
        model, tok = trainer.model, trainer.tokenizer
        rewards = [float(r["reward_mean"]) for r in read_metrics(run_dir)]
    t1 = time.time()
    ev = spec.eval
    task = load_task(
        ev["task"],
        size=ev["num_problems"],
        seed=ev["task_seed"],
        template=ev["template"],
        split=ev["split"],
        **ev["task_kwargs"],
    )
    ecfg = eval_config(ev, seed=seed)
    res = evaluate(model, tok, task, ecfg, model_name=f"{arm.name}/seed-{seed}", progress=progress)
    res.save(cell_dir / "eval")
    data = res.to_json()
    t2 = time.time()
    settings = run_settings(spec, arm, device)
    return {
        "arm": arm.name,
        "seed": seed,
        "key": cell_key(spec, arm, seed, device),
        "device": settings["device"],
        "run_settings": settings,
        "config": spec.arm_differences(arm),
        "metrics": eval_metrics(data),
        "pass_at_k_curve": data["pass_at_k"],
        "avg_at_k_ci": data["avg_at_k_ci"],
        "train_rewards": rewards,
        "inter_steps": cfg.inter_steps if cfg.method == "bupo" else 0,
        "steps": cfg.steps,
        "resumed": resumed,
        "wall_s": {"train": round(t1 - t0, 2), "eval": round(t2 - t1, 2), "total": round(t2 - t0, 2)},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _drop_checkpoints(out: Path, arm: str, seed: int) -> None:
    shutil.rmtree(out / "cells" / arm / f"seed-{seed}" / "run" / "checkpoints", ignore_errors=True)


@dataclass
class SweepReport:
    """What :func:`run_sweep` did: cells run now, cells skipped (already finished), the summary."""

    ran: list[tuple[str, int]]
    skipped: list[tuple[str, int]]
    summary: dict
    wall_s: float


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    device: str | None = None,
    progress: bool = True,
    only_arms: list[str] | None = None,
    log: Callable[[str], None] = print,
    on_cell_done: Callable[[dict], None] | None = None,
    workers: int = 1,
) -> SweepReport:
    """Run every unfinished cell of ``spec`` into ``out``, then write ``summary.json``.

    Args:
        spec: from :func:`load_spec`.
        out: output folder (created); rerunning into the same folder resumes.
        device: training/evaluation device (default: CUDA if available).
        progress: progress bars of the trainer and the evaluator.
        only_arms: run only these arms (the summary still covers every finished cell).
        log: where progress lines go.
        on_cell_done: called with each new row after it is written.
        workers: cells trained at once, each in its own process (spawned; this process alone writes
            ``cells.jsonl`` and ``summary.json``). Worth it on a GPU whose memory holds several small
            models, where one cell leaves the card mostly idle. On a CPU the cells share the cores: each
            worker gets ``threads // workers`` threads (:func:`worker_threads`), which on a small
            model is often faster overall than one process using every thread.
            The cells and their results are the same for any number of workers (each cell is seeded
            on its own); only the order of the rows in ``cells.jsonl`` may differ.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputFormatError(f"workers={workers!r}: give a whole number >= 1 (1 runs the cells one after another)")

    out = Path(out)
    cells_path = out / "cells.jsonl"
    todo, skipped = plan_cells(spec, out, device=device, only_arms=only_arms)  # every check before a file is written
    with lock_folder(prepare_output_dir(out, what="sweep folder"), what="sweep folder"):
        # re-read under the lock: another process may have finished cells meanwhile
        todo, skipped = plan_cells(spec, out, device=device, only_arms=only_arms)
        (out / "spec.json").write_text(json.dumps(spec_to_json(spec), indent=1))
        for name, seed in skipped:
            _drop_checkpoints(out, name, seed)
        return _run_cells(
            spec,
            out,
            cells_path,
            todo,
            skipped,
            device=device,
            progress=progress,
            log=log,
            on_cell_done=on_cell_done,
            workers=workers,
        )


def plan_cells(
    spec: SweepSpec, out: str | Path, *, device: str | None = None, only_arms: list[str] | None = None
) -> tuple[list[tuple[Arm, int]], list[tuple[str, int]]]:
    """``(cells to run, cells already finished)`` of ``spec`` in ``out``; writes nothing.

    Raises :class:`InputFormatError` for an ``--arm`` that is not in the spec, an ``out`` that is a
    file, a finished cell whose settings differ from what the spec now gives it, and finished cells
    computed on another device type than ``device`` (the sweep would mix them).
    """
    out = Path(out)
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            raise InputFormatError(
                f"sweep folder {out}: {parent} is a file, not a folder; pass a folder path with --out"
            )
    cells_path = out / "cells.jsonl"
    if only_arms:
        missing = sorted(set(only_arms) - {a.name for a in spec.arms})
        if missing:
            raise InputFormatError(
                f"--arm {missing}: no such arm in {spec.path}; arms: {', '.join(a.name for a in spec.arms)}"
            )
        blocked = [f"{a.name} ({a.unavailable})" for a in spec.arms if a.name in only_arms and a.unavailable]
        if blocked:
            raise InputFormatError(
                f"--arm: {'; '.join(blocked)}: these arms set fields this version of the trainer lacks"
            )
    rows = read_cells(cells_path)
    done = {(r["arm"], r["seed"]): r for r in rows}
    here = resolve_device(device or spec.shared.get("device"))
    ran_on = sorted({r.get("device") or RUN_SETTINGS_BASELINE["device"] for r in rows})
    if rows and ran_on != [here]:
        raise InputFormatError(
            f"{cells_path}: the finished cells ran on {', '.join(ran_on)} but this run would use {here}; CPU and CUDA sample "
            f"differently, so the sweep would mix them. Pass --device {ran_on[0]}, or use a new --out folder"
        )
    todo, skipped = [], []
    for arm, seed in spec.cells():
        if only_arms and arm.name not in only_arms:
            continue
        row = done.get((arm.name, seed))
        if row is not None:
            if not row_matches(spec, arm, seed, row):
                raise InputFormatError(
                    f"{cells_path}: cell {arm.name}/seed-{seed} was run with other settings than {spec.path} now gives it; "
                    f"use a new --out folder, or delete its line from cells.jsonl to rerun it"
                )
            skipped.append((arm.name, seed))
        else:
            todo.append((arm, seed))
    return todo, skipped


def _run_cells(
    spec: SweepSpec,
    out: Path,
    cells_path: Path,
    todo: list,
    skipped: list,
    *,
    device: str | None,
    progress: bool,
    log: Callable[[str], None],
    on_cell_done: Callable[[dict], None] | None,
    workers: int = 1,
) -> SweepReport:
    total = len(skipped) + len(todo)
    log(
        f"[sweep] {spec.name}: {total} cells, {len(skipped)} already finished, {len(todo)} to run -> {out}"
        + (f" ({workers} at a time)" if workers > 1 else "")
    )
    t_start = time.time()
    ran: list[tuple[str, int]] = []
    times: list[float] = []

    def record(row: dict) -> None:
        """Write one finished cell: its row, its checkpoints dropped, the summary (after every cell)."""
        append_metrics(cells_path, row)
        _drop_checkpoints(out, row["arm"], row["seed"])
        ran.append((row["arm"], row["seed"]))
        times.append(row["wall_s"]["total"])
        m = row["metrics"]
        log(
            f"[sweep]   {row['arm']}/seed-{row['seed']}: avg@{m['k']} {m['avg_at_k']:.3f}, pass@{m['k']} {m['pass_at_k']:.3f}, "
            f"no answer {m['no_answer_rate']:.3f} ({row['wall_s']['total']:.0f} s)"
        )
        write_summary(spec, out)  # after every cell, so an interrupted sweep leaves a current summary
        if on_cell_done is not None:
            on_cell_done(row)

    if workers == 1:
        for i, (arm, seed) in enumerate(todo, 1):
            eta = f", about {sum(times) / len(times) * (len(todo) - i + 1) / 60:.1f} min left" if times else ""
            log(f"[sweep] cell {len(skipped) + i}/{total}: arm {arm.name}, seed {seed}{eta}")
            record(run_cell(spec, arm, seed, out, device=device, progress=progress))
    else:
        _run_cells_parallel(spec, out, todo, device=device, workers=workers, log=log, record=record)
    summary = write_summary(spec, out)
    return SweepReport(ran, skipped, summary, time.time() - t_start)


def worker_threads(device: str, workers: int, threads_here: int, environ: dict[str, str]) -> int | None:
    """Threads each of ``workers`` CPU worker processes should use, or ``None`` to leave torch's default.

    A spawned worker starts torch with as many threads as the machine has cores, so ``workers``
    processes would run ``workers x cores`` threads on the cores and slow each other down. On the CPU
    each worker gets an equal share of the ``threads_here`` this process uses (at least 1), unless
    the user set ``OMP_NUM_THREADS`` (then theirs is kept). On a GPU the workers are left alone.

    >>> worker_threads("cpu", 2, 2, {})
    1
    >>> worker_threads("cpu", 3, 16, {})
    5
    >>> worker_threads("cpu", 4, 2, {}), worker_threads("cpu", 2, 2, {"OMP_NUM_THREADS": "2"})
    (1, None)
    >>> worker_threads("cuda", 16, 16, {}) is None
    True
    """
    if not str(device).startswith("cpu") or "OMP_NUM_THREADS" in environ:
        return None
    return max(1, threads_here // workers)


def _run_cells_parallel(
    spec: SweepSpec,
    out: Path,
    todo: list,
    *,
    device: str | None,
    workers: int,
    log: Callable[[str], None],
    record: Callable[[dict], None],
) -> None:
    """Run ``todo`` in ``workers`` spawned processes; ``record`` each row here as it finishes.

    Cells start in the spec's order. A failing cell stops the sweep after the cells already running
    have finished (their rows are kept); Ctrl-C reaches the workers too, whose trainers checkpoint, and
    the next run resumes them.
    """
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    threads = worker_threads(device or default_device(), workers, torch.get_num_threads(), dict(os.environ))
    if threads is not None:
        log(f"[sweep] {workers} workers on the CPU: {threads} thread(s) each, of the {torch.get_num_threads()} here")
    with (
        _sigterm_as_interrupt(),
        concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=torch.set_num_threads if threads is not None else None,
            initargs=(threads,) if threads is not None else (),
        ) as pool,
    ):
        futures = {
            pool.submit(run_cell, spec, arm, seed, out, device=device, progress=False): (arm.name, seed)
            for arm, seed in todo
        }
        error: BaseException | None = None
        try:
            for n, fut in enumerate(concurrent.futures.as_completed(futures), 1):
                name, seed = futures[fut]
                try:
                    row = fut.result()
                except BaseException as exc:  # noqa: BLE001 - stop after the running cells, then raise
                    if error is None:
                        error = exc
                        log(
                            f"[sweep] cell {name}/seed-{seed} failed ({type(exc).__name__}: {exc}); "
                            f"finishing the cells already running, then stopping"
                        )
                        for other in futures:
                            other.cancel()
                    continue
                log(f"[sweep] finished {n}/{len(futures)}: {name}/seed-{seed}")
                record(row)
        except KeyboardInterrupt:
            for other in futures:
                other.cancel()
            _interrupt_workers(pool)  # they checkpoint and stop; leaving the `with` waits for them
            raise
        if error is not None:
            raise error


def _interrupt_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Pass an interrupt on to the worker processes, whose trainers then checkpoint and stop.

    Ctrl-C in a terminal reaches every process of the group, but ``kill -INT``, ``kill`` (SIGTERM) or a
    job scheduler reach only this one: without this the workers would run their cells to the end
    while the sweep waits for them, and their rows would not be recorded. The workers get SIGTERM,
    not SIGINT: a sweep started in the background by a shell (``nohup bupo sweep ... &``) and its
    workers ignore SIGINT. A training worker checkpoints on SIGTERM; one that is evaluating ends at
    once (its training checkpoint is on disk, so the rerun only evaluates again).
    """
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(ProcessLookupError, OSError):
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the workers run, SIGTERM stops the sweep the way Ctrl-C does (the default would end this
    process alone and leave the workers running). Only in the main thread, where handlers can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def spec_to_json(spec: SweepSpec) -> dict:
    """The spec as resolved (eval defaults filled in), saved as ``DIR/spec.json``."""
    return {
        "name": spec.name,
        "description": spec.description,
        "path": spec.path,
        "shared": spec.shared,
        "seeds": spec.seeds,
        "control": spec.control,
        "eval": spec.eval,
        "notes": spec.notes,
        "arms": [
            {
                "name": a.name,
                "config": a.config,
                "seeds": a.seeds,
                "note": a.note,
                "paper": a.paper,
                "unavailable": a.unavailable,
                "group": a.group,
            }
            for a in spec.arms
        ],
    }


# ----------------------------------------------------------------------------- statistics
def summarize(spec: SweepSpec, rows: list[dict]) -> dict:
    """``summary.json`` from the cells' rows (only rows whose key matches the current spec).

    Form: ``{"control": NAME, "arms": {NAME: {"config": {...}, "seeds": [...], "metrics": {METRIC:
    {"mean", "se", "per_seed"}}, "vs_control": {METRIC: {"diff_mean", "se", "p_value", "n_pairs",
    "per_seed"}}, ...}}, ...}``. ``seeds`` are the seeds with a finished cell; ``per_seed`` follows
    their order. ``pass_at_k`` is at the largest k (``"k"``). ``vs_control`` pairs cells by seed
    (:func:`bupo_core.stats.compare_to_control`, sign-flip p-value).
    """
    by_arm: dict[str, dict[int, dict]] = {a.name: {} for a in spec.available_arms()}
    for r in rows:
        if r["arm"] in by_arm:
            arm = spec.arm(r["arm"])
            if r["seed"] in arm.seeds and row_matches(spec, arm, r["seed"], r):
                by_arm[r["arm"]][r["seed"]] = r
    control_cells = by_arm[spec.control]
    arms_out: dict[str, Any] = {}
    total_wall = 0.0
    for arm in spec.available_arms():
        cells = by_arm[arm.name]
        seeds = sorted(cells)
        metrics: dict[str, Any] = {}
        vs: dict[str, Any] = {}
        for metric in METRICS:
            vals = {s: cells[s]["metrics"].get(metric) for s in seeds}
            present = {s: v for s, v in vals.items() if v is not None}
            if present:
                m, se = mean_se(list(present.values()))
            else:
                m, se = None, None
            metrics[metric] = {"mean": m, "se": se, "per_seed": [vals[s] for s in seeds]}
            ctl = {
                s: c["metrics"].get(metric) for s, c in control_cells.items() if c["metrics"].get(metric) is not None
            }
            vs[metric] = compare_to_control(present, ctl)
        walls = [cells[s]["wall_s"]["total"] for s in seeds]
        total_wall += sum(walls)
        arms_out[arm.name] = {
            "config": spec.arm_differences(arm),
            "seeds": seeds,
            "planned_seeds": arm.seeds,
            "metrics": metrics,
            "vs_control": vs,
            "train_reward_last3": _mean_or_none(
                [_mean_or_none(cells[s]["train_rewards"][-3:]) for s in seeds if cells[s]["train_rewards"]]
            ),
            "wall_s_per_cell": _mean_or_none(walls),
            "note": arm.note,
            "paper": arm.paper,
            "group": arm.group,
        }
    k = spec.eval["k"]
    return {
        "name": spec.name,
        "control": spec.control,
        "k": k,
        "metrics_note": f"avg_at_k = mean pass rate over {k} samples per problem; pass_at_k = unbiased pass@{k}; "
        "no_answer_rate = share of responses with no parseable answer; accuracy_among_answered = correct / answered",
        "eval": spec.eval,
        "shared": spec.shared,
        "arms": arms_out,
        "unavailable_arms": {a.name: a.unavailable for a in spec.arms if a.unavailable},
        "cells_finished": sum(len(by_arm[a.name]) for a in spec.available_arms()),
        "cells_planned": len(spec.cells()),
        "wall_s_total": round(total_wall, 1),
    }


def _mean_or_none(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def cell_ipa_updates(rows: Sequence[dict]) -> int:
    """IPA updates of one cell: the sum over its ``metrics.jsonl`` rows of ``ipa_updates``.

    Rows written before the trainer logged ``ipa_updates`` count their ``updates`` when their
    ``phase`` is ``"internal"`` (the optimizer updates of an internal-phase step are IPA updates),
    else 0.
    """
    total = 0
    for row in rows:
        if row.get("ipa_updates") is not None:
            total += int(row["ipa_updates"])
        elif row.get("phase") == "internal":
            total += int(row.get("updates") or 0)
    return total


def full_policy_steps(cfg: Any) -> int:
    """Full-policy (GRPO-phase) steps of a :class:`~bupo_core.trainer.TrainConfig`: ``steps - inter_steps`` for BuPO."""
    return int(cfg.steps) - (int(cfg.inter_steps) if cfg.method == "bupo" else 0)


def matched_controls(spec: Any) -> dict[str, str]:
    """``{bupo arm: grpo arm}``: for each BuPO arm, the GRPO arm with as many full-policy steps.

    The match must differ from the shared settings in nothing but ``method`` and ``steps`` (a plain
    GRPO run), so the pair separates "what the internal phase did" from "fewer full-policy steps".
    The sweep's control is preferred when it matches. Arms without a match are left out.
    """
    plain: list[tuple[str, int]] = []
    cfgs = {}
    for arm in spec.available_arms():
        cfg = spec.train_config(arm, arm.seeds[0], "unused")
        cfgs[arm.name] = cfg
        if cfg.method == "grpo" and cfg.steps > 0 and set(spec.arm_differences(arm)) <= {"method", "steps"}:
            plain.append((arm.name, cfg.steps))
    plain.sort(key=lambda t: t[0] != spec.control)
    out = {}
    for name, cfg in cfgs.items():
        if cfg.method == "bupo" and cfg.steps > 0:
            match = next((g for g, steps in plain if steps == full_policy_steps(cfg)), None)
            if match is not None:
                out[name] = match
    return out


def augment_summary(spec: Any, folder: str | Path, summary: dict) -> dict:
    """Add what ``summary.json`` reports beyond the per-metric statistics (in place; returns it).

    Per BuPO arm (``method: bupo``, ``steps > 0``):

    * ``ipa_updates``: ``{"per_seed": [...], "zero_update_seeds": [...]}``: per finished seed (the
      arm's ``seeds`` order) the IPA updates of the cell (:func:`cell_ipa_updates` of its kept
      ``metrics.jsonl``; ``None`` when the file was not kept). A cell with zero IPA updates ran no
      internal phase at all: it is GRPO with fewer steps, listed under ``zero_update_seeds``;
    * ``vs_control_with_ipa``: the comparison with the control over the seeds that made at least
      one IPA update (present when some seed made none), so no cell without an internal phase is
      counted as BuPO;
    * ``matched_control`` and ``vs_matched``: the GRPO arm with as many full-policy steps
      (:func:`matched_controls`) and the comparison with it over the common seeds.

    Per trained arm whose rows log them: ``sampling: {"prompts_drawn": [...], "prompts_kept": [...]}``
    per seed (dynamic sampling; ``None`` for a seed without the fields). Top level:
    ``flags``: one line per BuPO cell with zero IPA updates; ``shared.dynamic_sampling`` is the
    spec's setting (``false`` when the spec does not set it).
    """
    folder = Path(folder)
    arms = summary["arms"]
    matched = matched_controls(spec)
    flags: list[str] = []

    def metric_map(arm: str, metric: str, seeds: Sequence[int] | None = None) -> dict[int, float]:
        a = arms[arm]
        vals = dict(zip(a["seeds"], a["metrics"][metric]["per_seed"]))
        return {s: v for s, v in vals.items() if v is not None and (seeds is None or s in seeds)}

    for arm in spec.available_arms():
        a = arms.get(arm.name)
        if a is None:
            continue
        cfg = spec.train_config(arm, arm.seeds[0], "unused")
        metrics_rows = {}
        for s in a["seeds"]:
            p = folder / "cells" / arm.name / f"seed-{s}" / "run" / "metrics.jsonl"
            metrics_rows[s] = read_metrics(p) if p.exists() else None
        if cfg.steps > 0 and any(rows and any("prompts_drawn" in r for r in rows) for rows in metrics_rows.values()):
            a["sampling"] = {
                key: [None if not rows else sum(int(r.get(key) or 0) for r in rows) for rows in metrics_rows.values()]
                for key in ("prompts_drawn", "prompts_kept")
            }
        if cfg.method != "bupo" or cfg.steps == 0:
            continue
        per_seed = [None if rows is None else cell_ipa_updates(rows) for rows in metrics_rows.values()]
        zero = [s for s, n in zip(a["seeds"], per_seed) if n == 0]
        a["ipa_updates"] = {"per_seed": per_seed, "zero_update_seeds": zero}
        for s in zero:
            flags.append(
                f"{arm.name} seed {s}: 0 IPA updates (no internal-phase update: the cell is GRPO with "
                f"{full_policy_steps(cfg)} full-policy steps, not BuPO)"
            )
        if zero:
            keep = [s for s in a["seeds"] if s not in zero]
            a["vs_control_with_ipa"] = {
                m: compare_to_control(metric_map(arm.name, m, keep), metric_map(spec.control, m)) for m in METRICS
            }
        if arm.name in matched:
            g = matched[arm.name]
            a["matched_control"] = g
            a["vs_matched"] = {m: compare_to_control(metric_map(arm.name, m), metric_map(g, m)) for m in METRICS}
    summary["shared"] = {
        **summary.get("shared", {}),
        "dynamic_sampling": bool(spec.shared.get("dynamic_sampling", False)),
    }
    summary["flags"] = flags
    return summary


def write_summary(spec: SweepSpec, out: str | Path) -> dict:
    """Recompute ``summary.json`` from ``cells.jsonl`` (and the cells' kept ``metrics.jsonl``) and write it.

    :func:`summarize` gives the per-metric statistics; :func:`augment_summary`
    adds the IPA update counts per BuPO cell (flagging cells with none), the matched GRPO control of
    each BuPO arm, dynamic-sampling counts and ``shared.dynamic_sampling``.
    """
    out = Path(out)
    summary = augment_summary(spec, out, summarize(spec, read_cells(out / "cells.jsonl")))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
