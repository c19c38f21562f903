"""A sweep's results read back from its folder: tables, paired comparisons, curves and figures.

:func:`bupo_core.sweep.run_sweep` writes ``DIR/spec.json``, ``DIR/cells.jsonl`` (one row per
finished cell) and ``DIR/summary.json`` (the statistics). :class:`SweepResults` loads the three,
checks that the summary is what the rows give (:meth:`SweepResults.check`), and answers the
questions a reader asks of a sweep, in the paper's terms:

* :meth:`~SweepResults.table`: per arm, mean +- standard error across training seeds and the paired
  difference against the control arm with its sign-flip p-value;
* :meth:`~SweepResults.verdict`: whether that difference is resolved at this scale;
* :meth:`~SweepResults.reward_curves`: the training reward per step, mean +- SE across seeds;
* :meth:`~SweepResults.step_metrics`: a cell's per-step training statistics (internal-phase
  log-prob and entropy, clip fraction, approx KL, gradient norm), when the cell folder was kept;
* :meth:`~SweepResults.figure`: the arms' plot (mean +- SE, every seed's point).

It is I/O plus arithmetic on lists; the figures live in :mod:`bupo_core.reporting.sweep_plots`. Typical use::

    results = SweepResults.load("results/main")
    results.check()                       # the summary is what cells.jsonl gives
    print(results.markdown_table())       # the headline table
    results.figure("avg_at_k")            # mean ± SE and every seed
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputFormatError
from ..runs import iter_jsonl, read_metrics
from ..stats import compare_to_control, detectable_difference, mean_se, min_p_value, seeds_needed
from ..sweep import cell_ipa_updates, metric_label, read_cells, spec_to_json

ALPHA = 0.05


def results_dir(start: str | Path | None = None) -> Path:
    """The folder of committed sweep results (``results/`` of a checkout: ``specs/`` plus one folder per sweep).

    Looks, in order, at ``$BUPO_RESULTS``; ``results/`` in ``start`` (default: the working directory)
    and each folder above it; and ``results/`` beside the installed package (an editable install of
    a checkout). Raises :class:`InputFormatError` naming the fix when none is found (e.g. a package
    installed from git without the repository: clone it, or set ``BUPO_RESULTS``).
    """
    env = os.environ.get("BUPO_RESULTS")
    if env:
        if not (Path(env) / "specs").is_dir():
            raise InputFormatError(
                f"BUPO_RESULTS={env}: not a results folder (it has no specs/); point it at a checkout's results/"
            )
        return Path(env)
    here = Path(start) if start is not None else Path.cwd()
    for folder in [here, *here.resolve().parents, Path(__file__).resolve().parent.parent]:
        if (folder / "results" / "specs").is_dir():
            return folder / "results"
    raise InputFormatError(
        "no committed results found (a folder results/ with specs/ in this directory or above it); "
        "clone the repository (`git clone --depth 1 https://github.com/bupo-notebooks/bupo-notebooks`) "
        "and run from inside it, or set BUPO_RESULTS to its results/ folder"
    )


@dataclass
class SweepResults:
    """One sweep folder, loaded.

    Attributes:
        name: the sweep's name.
        folder: the folder it was read from.
        spec: ``spec.json`` if present (the resolved spec: shared settings, arms with notes, groups
            and the paper's numbers, evaluation settings), else ``{}``.
        summary: ``summary.json``.
        rows: the rows of ``cells.jsonl``, in the order they finished.
    """

    name: str
    folder: Path
    spec: dict
    summary: dict
    rows: list[dict] = field(repr=False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, folder: str | Path) -> SweepResults:
        """Read ``summary.json``, ``cells.jsonl`` and (if present) ``spec.json`` from ``folder``.

        Raises :class:`InputFormatError` naming the missing file and the command that writes it.
        """
        folder = Path(folder)
        for name in ("summary.json", "cells.jsonl"):
            if not (folder / name).exists():
                raise InputFormatError(
                    f"{folder / name}: missing; a sweep folder is written by `bupo sweep SPEC --out {folder}` "
                    "(spec.json, cells.jsonl, summary.json)"
                )
        spec_path = folder / "spec.json"
        spec = _read_json_object(spec_path, "the resolved spec") if spec_path.exists() else {}
        summary = _read_json_object(folder / "summary.json", "a sweep summary")
        _validate_summary(summary, folder / "summary.json")
        rows = read_cells(folder / "cells.jsonl")
        for i, r in enumerate(rows, 1):
            if (
                not isinstance(r, dict)
                or not isinstance(r.get("arm"), str)
                or not isinstance(r.get("seed"), int)
                or not isinstance(r.get("metrics"), dict)
            ):
                raise InputFormatError(
                    f"{folder / 'cells.jsonl'}: row {i} is not a cell row (an object with arm, seed and metrics); "
                    "it was not written by bupo sweep: remove the line and rerun the sweep to recompute that cell"
                )
            for key, v in r["metrics"].items():
                if v is not None and not _is_number(v):
                    raise InputFormatError(
                        f"{folder / 'cells.jsonl'}: row {i} ({r['arm']} seed {r['seed']}): metric {key!r} is {v!r}, not a number; "
                        "remove the line and rerun the sweep to recompute that cell"
                    )
        return cls(summary.get("name") or spec.get("name") or folder.name, folder, spec, summary, rows)

    # ------------------------------------------------------------------ counts from the rows
    def finished_cells(self) -> int:
        """Cells of the summary's arms and planned seeds that have a row in ``cells.jsonl`` (counted from the rows)."""
        planned = {n: set(a.get("planned_seeds", a["seeds"])) for n, a in self.summary["arms"].items()}
        return len({(r["arm"], r["seed"]) for r in self.rows if r["seed"] in planned.get(r["arm"], ())})

    def planned_cells(self) -> int:
        """Cells the spec plans for its available arms (from the summary's ``planned_seeds``)."""
        return sum(len(a.get("planned_seeds", a["seeds"])) for a in self.summary["arms"].values())

    # ------------------------------------------------------------------ basic facts
    @property
    def control(self) -> str:
        """The control arm's name."""
        return self.summary["control"]

    @property
    def k(self) -> int:
        """Samples per evaluation problem (the largest k of Pass@k)."""
        return int(self.summary["k"])

    @property
    def arm_names(self) -> list[str]:
        """Arms with at least one finished seed, in the spec's order."""
        return [n for n, a in self.summary["arms"].items() if a["seeds"]]

    @property
    def pending_arms(self) -> list[str]:
        """Arms of the spec with fewer finished seeds than planned."""
        return [n for n, a in self.summary["arms"].items() if len(a["seeds"]) < len(a.get("planned_seeds", a["seeds"]))]

    def groups(self) -> dict[str, list[str]]:
        """Group name -> arms (the spec's ``group`` field; arms without one go under ``""``), spec order."""
        spec_group = {a["name"]: a.get("group", "") for a in self.spec.get("arms", [])}
        out: dict[str, list[str]] = {}
        for n, a in self.summary["arms"].items():
            out.setdefault(a.get("group") or spec_group.get(n, ""), []).append(n)
        return out

    def arm(self, name: str) -> dict:
        """The summary entry of one arm (``config``, ``seeds``, ``metrics``, ``vs_control``, ``paper``...)."""
        try:
            return self.summary["arms"][name]
        except KeyError:
            raise KeyError(f"no arm {name!r} in sweep {self.name!r}; arms: {', '.join(self.summary['arms'])}") from None

    def fingerprint(self, arms: Sequence[str] | None = None) -> str:
        """Short hash of the finished cells' rows (of ``arms`` only, when given).

        Notebooks print it beside what they show, so a test can tell when committed outputs were
        computed from other data than the committed ``cells.jsonl``.
        """
        keep = set(arms) if arms is not None else None
        rows = sorted(json.dumps(r, sort_keys=True) for r in self.rows if keep is None or r["arm"] in keep)
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:12]

    def per_seed(self, arm: str, metric: str = "avg_at_k") -> dict[int, float]:
        """``{seed: value}`` of one metric for one arm, from the cells' rows."""
        return {
            r["seed"]: r["metrics"][metric]
            for r in self.rows
            if r["arm"] == arm and r["seed"] in self.arm(arm)["seeds"] and r["metrics"].get(metric) is not None
        }

    # ------------------------------------------------------------------ checks
    def check(self, *, tol: float = 1e-12) -> None:
        """Recompute every mean, SE and paired comparison from ``cells.jsonl`` and compare with the summary.

        Raises ``AssertionError`` naming the arm, metric and both values on a mismatch (a summary
        written before the last rows were appended, or edited by hand).
        """
        for name, a in self.summary["arms"].items():
            rows = {
                r["seed"]: r for r in self.rows if r["arm"] == name and r["seed"] in a.get("planned_seeds", a["seeds"])
            }
            assert sorted(rows) == a["seeds"], (
                f"{self.name}/{name}: summary seeds {a['seeds']}, cells.jsonl has {sorted(rows)}; rerun write_summary"
            )
            for metric, m in a["metrics"].items():
                vals = [rows[s]["metrics"].get(metric) for s in a["seeds"]]
                assert vals == m["per_seed"], (
                    f"{self.name}/{name}/{metric}: per-seed values {m['per_seed']} in summary, {vals} in cells.jsonl"
                )
                present = [v for v in vals if v is not None]
                if present:
                    mean, se = mean_se(present)
                    _close(mean, m["mean"], tol, f"{self.name}/{name}/{metric} mean")
                    _close(se, m["se"], tol, f"{self.name}/{name}/{metric} se")
                ctl = self.per_seed(self.control, metric)
                mine = {s: rows[s]["metrics"][metric] for s in a["seeds"] if rows[s]["metrics"].get(metric) is not None}
                ref = compare_to_control(mine, ctl)
                got = a["vs_control"][metric]
                for key in (
                    "diff_mean",
                    "se",
                    "p_value",
                    "p_value_unpaired",
                    "correlation",
                    "detectable_diff",
                    "control_mean",
                ):
                    assert key in got, (
                        f"{self.name}/{name}/{metric}: vs_control has no {key!r}; rerun `bupo sweep SPEC --out DIR --summary-only`"
                    )
                    _close(ref[key], got[key], tol, f"{self.name}/{name}/{metric} vs_control {key}")
            if "ipa_updates" in a:
                for s, n in zip(a["seeds"], a["ipa_updates"]["per_seed"]):
                    p = self.folder / "cells" / name / f"seed-{s}" / "run" / "metrics.jsonl"
                    want = cell_ipa_updates(read_metrics(p)) if p.exists() else None
                    assert want == n, (
                        f"{self.name}/{name} seed {s}: {n} IPA updates in summary.json, {want} in its metrics.jsonl"
                    )

    # ------------------------------------------------------------------ tables and verdicts
    def control_on(self, seeds: Sequence[int], metric: str = "avg_at_k") -> tuple[float | None, float | None]:
        """Mean and SE of the control over ``seeds`` (those it has): the control *matched* to an arm's seeds."""
        ctl = self.per_seed(self.control, metric)
        xs = [ctl[s] for s in seeds if s in ctl]
        return mean_se(xs) if xs else (None, None)

    def ipa_updates(self, arm: str) -> list[int | None] | None:
        """Per finished seed, the IPA updates of ``arm``'s cell (``None`` for a GRPO arm or an older summary)."""
        info = self.arm(arm).get("ipa_updates")
        return None if info is None else list(info["per_seed"])

    def zero_update_seeds(self, arm: str) -> list[int]:
        """Seeds at which BuPO arm ``arm`` made no IPA update (the cell is GRPO with fewer steps, not BuPO)."""
        info = self.arm(arm).get("ipa_updates")
        return [] if info is None else list(info.get("zero_update_seeds", []))

    def table(self, metric: str = "avg_at_k", arms: Sequence[str] | None = None) -> list[dict]:
        """One dict per arm: ``arm, seeds, mean, se, control_mean, diff, diff_se, p_value, p_value_unpaired,
        correlation, detectable_diff, n_pairs`` (``control_mean`` and ``diff*`` over the seeds arm and control share)."""
        out = []
        for n in arms if arms is not None else self.arm_names:
            a = self.arm(n)
            m, v = a["metrics"][metric], a["vs_control"][metric]
            is_ctl = n == self.control
            row = {
                "arm": n,
                "seeds": len(a["seeds"]),
                "mean": m["mean"],
                "se": m["se"],
                "n_pairs": v.get("n_pairs", 0),
                "control_mean": None if is_ctl else self.control_on(a["seeds"], metric)[0],
            }
            for key, src in (
                ("diff", "diff_mean"),
                ("diff_se", "se"),
                ("p_value", "p_value"),
                ("p_value_unpaired", "p_value_unpaired"),
                ("correlation", "correlation"),
                ("detectable_diff", "detectable_diff"),
            ):
                row[key] = None if is_ctl else v.get(src)
            out.append(row)
        return out

    def control_rows(self, arms: Sequence[str]) -> list[tuple[list[int], str]]:
        """The control's rows for a table of ``arms``: one per distinct seed set the arms share with it.

        Returns ``[(seeds, label)]``; a single row with all its seeds when every arm has them.
        """
        ctl_seeds = self.arm(self.control)["seeds"]
        sets: list[list[int]] = []
        for n in arms:
            if n == self.control:
                continue
            common = sorted(set(self.arm(n)["seeds"]) & set(ctl_seeds))
            if common and common not in sets:
                sets.append(common)
        if not sets or (len(sets) == 1 and sets[0] == sorted(ctl_seeds)):
            return [(sorted(ctl_seeds), f"`{self.control}`")]
        return [(s, f"`{self.control}` (seeds {_seed_text(s)})") for s in sorted(sets, key=lambda s: (len(s), s))]

    def markdown_table(
        self,
        metrics: Sequence[str] = ("avg_at_k", "pass_at_k", "no_answer_rate", "accuracy_among_answered"),
        arms: Sequence[str] | None = None,
        diff_metric: str = "avg_at_k",
    ) -> str:
        """A Markdown table: per arm, every metric as mean ± SE; beside it the control's mean over the *same*
        seeds, the paired difference in ``diff_metric``, both p-values, the arm-control correlation across
        seeds, the smallest difference the comparison could detect (p < 0.05, 80% power) and, for BuPO
        arms, the IPA updates per seed (``0!`` marks a cell without any: GRPO, not BuPO).

        The control gets one row per seed set of the arms beside it (all its seeds when they share them).
        """
        names = list(arms) if arms is not None else self.arm_names
        lab = metric_label(diff_metric, self.k)
        head = (
            ["arm", "seeds"]
            + [metric_label(m, self.k) for m in metrics]
            + [
                f"`{self.control}` {lab}, same seeds",
                f"{lab} − `{self.control}` (paired)",
                "p paired",
                "p unpaired",
                "r",
                "detectable",
                "IPA updates per seed",
            ]
        )
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        blank = ["", "", "", "", "", ""]
        for seeds, label in self.control_rows(names):
            cells = [label, str(len(seeds))]
            for m in metrics:
                mean, se = self.control_on(seeds, m)
                cells.append(fmt_pm(mean, se))
            lines.append("| " + " | ".join(cells + ["(control)"] + blank) + " |")
        for n in names:
            if n == self.control:
                continue
            a = self.arm(n)
            cells = [f"`{n}`", str(len(a["seeds"]))]
            cells += [fmt_pm(a["metrics"][m]["mean"], a["metrics"][m]["se"]) for m in metrics]
            v = a["vs_control"][diff_metric]
            r = v.get("correlation")
            dd = v.get("detectable_diff")
            cells += [
                fmt_pm(v.get("control_mean"), None),
                fmt_pm(v["diff_mean"], v["se"], signed=True),
                fmt_p(v["p_value"]),
                fmt_p(v.get("p_value_unpaired")),
                "n/a" if r is None else f"{r:+.2f}",
                f"±{dd:.3f}" if dd is not None else "none",
                self._updates_text(n),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def _updates_text(self, arm: str) -> str:
        ups = self.ipa_updates(arm)
        if ups is None:
            return ""
        return ", ".join("n/a" if u is None else (f"{u}!" if u == 0 else str(u)) for u in ups)

    def resolution(self, arm: str, metric: str = "avg_at_k", alpha: float = ALPHA) -> str | None:
        """``"above"`` or ``"below"`` when ``arm``'s paired difference from the control is resolved
        (at least 2 paired seeds and sign-flip p < ``alpha``), else ``None`` (also for the control)."""
        if arm == self.control:
            return None
        v = self.arm(arm)["vs_control"][metric]
        if v["diff_mean"] is None or v.get("n_pairs", 0) < 2 or v["p_value"] is None or v["p_value"] >= alpha:
            return None
        return "above" if v["diff_mean"] > 0 else "below"

    def verdict(self, arm: str, metric: str = "avg_at_k", alpha: float = ALPHA) -> str:
        """One sentence: is ``arm``'s paired difference from the control resolved at level ``alpha``?"""
        label = metric_label(metric, self.k)
        if arm == self.control:
            return f"`{arm}` is the control."
        v = self.arm(arm)["vs_control"][metric]
        n = v.get("n_pairs", 0)
        if v["diff_mean"] is None or n < 2:
            return f"`{arm}`: fewer than 2 seeds paired with `{self.control}`; nothing to test yet."
        size = f"{label} − `{self.control}` = {fmt_pm(v['diff_mean'], v['se'], signed=True)} (p = {fmt_p(v['p_value'])}, {n} paired seeds"
        if "p_value_unpaired" in v:
            r = v.get("correlation")
            size += (
                f"; unpaired p = {fmt_p(v['p_value_unpaired'])}; correlation across seeds "
                f"{'n/a' if r is None else f'{r:+.2f}'}"
                + (
                    ""
                    if v.get("supported_test") is None
                    else ", so "
                    + (
                        "pairing removed variance"
                        if v["supported_test"] == "paired"
                        else "pairing added variance: read the unpaired test"
                    )
                )
            )
        side = self.resolution(arm, metric, alpha)
        if side is not None:
            return f"`{arm}`: **resolved**, {side} the control: {size})."
        floor = min_p_value(n)
        why = (
            f"; {n} seeds cannot give p < {alpha} at all (smallest possible p {fmt_p(floor)})" if floor >= alpha else ""
        )
        dd = v.get("detectable_diff")
        smaller = (
            f" Detectable difference ±{dd:.3f}: a true difference that large would have been resolved (p < {alpha}) "
            "with 80% probability, so this says the difference is probably smaller than that."
            if dd is not None
            else ""
        )
        return f"`{arm}`: not resolved at this scale: {size}{why}).{smaller}"

    # ------------------------------------------------------------------ curves
    def reward_curves(
        self, arms: Sequence[str] | None = None, seeds: Sequence[int] | None = None
    ) -> dict[str, dict[str, list]]:
        """Training reward per step, across seeds: ``{arm: {"mean": [...], "se": [...], "n": [...]}}``.

        Arms without training steps (``base``) are left out. Step ``i`` averages the seeds that have it;
        ``seeds`` restricts every arm to those seeds (e.g. the control over an ablation arm's seeds).
        """
        out = {}
        for n in arms if arms is not None else self.arm_names:
            use = [s for s in self.arm(n)["seeds"] if seeds is None or s in seeds]
            curves = [
                r["train_rewards"] for r in self.rows if r["arm"] == n and r.get("train_rewards") and r["seed"] in use
            ]
            if not curves:
                continue
            means, ses, counts = [], [], []
            for i in range(max(len(c) for c in curves)):
                xs = [c[i] for c in curves if len(c) > i]
                m, se = mean_se(xs)
                means.append(m)
                ses.append(se if se is not None else 0.0)
                counts.append(len(xs))
            out[n] = {"mean": means, "se": ses, "n": counts}
        return out

    def inter_steps(self, arm: str) -> int:
        """Internal-phase steps of ``arm`` (0 for GRPO arms)."""
        return next((int(r.get("inter_steps") or 0) for r in self.rows if r["arm"] == arm), 0)

    def step_metrics(self, arm: str, seed: int) -> list[dict] | None:
        """The per-step training rows (``run/metrics.jsonl``) of one cell, or ``None`` if its folder was not kept."""
        p = self.folder / "cells" / arm / f"seed-{seed}" / "run" / "metrics.jsonl"
        if not p.exists():
            return None
        return read_metrics(p)

    def per_problem(self, arm: str, seed: int) -> list[int] | None:
        """Correct samples per evaluation problem of one cell (its committed ``eval/per_problem.jsonl``, in
        problem order), or ``None`` when the cell has none (sweeps before issue 20). Cells of one sweep
        evaluate the same problems in the same order, so these lists pair by problem across arms and seeds."""
        p = self.folder / "cells" / arm / f"seed-{seed}" / "eval" / "per_problem.jsonl"
        if not p.exists():
            return None
        rows = sorted((obj for _, obj in iter_jsonl(p, what="per-problem results file")), key=lambda r: r["index"])
        return [int(r["num_correct"]) for r in rows]

    def phase_means(self, field_name: str, arms: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Per arm, the mean across seeds of ``field_name`` per step, from the kept ``metrics.jsonl`` files.

        Returns ``{arm: {"mean": [...], "se": [...], "seeds": n}}``; steps where a field is
        ``None`` (e.g. ``internal_logprob`` in the full phase) are ``nan``.
        """
        out = {}
        for n in arms if arms is not None else self.arm_names:
            per_seed = [self.step_metrics(n, s) for s in self.arm(n)["seeds"]]
            per_seed = [rows for rows in per_seed if rows]
            if not per_seed:
                continue
            means, ses = [], []
            for i in range(max(len(rows) for rows in per_seed)):
                xs = [rows[i].get(field_name) for rows in per_seed if len(rows) > i]
                xs = [x for x in xs if x is not None]
                m, se = mean_se(xs) if xs else (math.nan, None)
                means.append(m)
                ses.append(se if se is not None else 0.0)
            out[n] = {"mean": means, "se": ses, "seeds": len(per_seed)}
        return out

    def zero_advantage_share(self, arms: Sequence[str] | None = None) -> dict[str, float]:
        """Per trained arm, the share of groups whose rewards were all equal, over every step and seed.

        Such a group has advantage 0 for every response, so neither GRPO nor IPA learns from it;
        a share near 1 means the model cannot learn the task at these sizes, whatever the method.
        Read from the kept ``metrics.jsonl`` files (``zero_adv_group_frac`` of each step); arms
        without them (``base``) are left out.
        """
        out = {}
        for n, c in self.phase_means("zero_adv_group_frac", arms).items():
            vals = [v for v in c["mean"] if not math.isnan(v)]
            if vals:
                out[n] = sum(vals) / len(vals)
        return out

    def internal_signal_steps(self, arm: str) -> tuple[int, int]:
        """``(steps with a learning signal, internal-phase steps)`` of ``arm``, summed over its seeds.

        An internal-phase step has a learning signal when at least one of its groups had unequal
        rewards (``zero_adv_group_frac < 1``); a step without one makes no update. If no internal
        step of a seed has a signal, that seed's internal phase changed nothing: the run samples the
        same responses as the control at the same seed and ends in the same weights. ``(0, 0)`` for
        GRPO arms and for arms whose ``metrics.jsonl`` files were not kept.
        """
        with_signal = total = 0
        for seed in self.arm(arm)["seeds"]:
            for row in self.step_metrics(arm, seed) or []:
                if row.get("phase") == "internal":
                    total += 1
                    with_signal += float(row.get("zero_adv_group_frac", 0.0)) < 1.0
        return with_signal, total

    def internal_phase_mean(
        self, arm: str, field_name: str, seeds: Sequence[int] | None = None, *, skip_zero: bool = False
    ) -> float | None:
        """Mean of a per-step field of ``metrics.jsonl`` over the internal-phase steps of ``arm``'s ``seeds``
        (default: all of them); ``skip_zero`` leaves out zeros (e.g. ``grad_norm`` of steps that made no
        update). ``None`` without data."""
        xs = []
        for seed in self.arm(arm)["seeds"] if seeds is None else seeds:
            for row in self.step_metrics(arm, seed) or []:
                v = row.get(field_name)
                if row.get("phase") == "internal" and v is not None and not (skip_zero and v == 0):
                    xs.append(float(v))
        return sum(xs) / len(xs) if xs else None

    # ------------------------------------------------------------------ figures
    def figure(self, metric: str = "avg_at_k", arms: Sequence[str] | None = None, title: str | None = None):
        """The arms' plot: mean ± SE across seeds and every seed's point (:func:`bupo_core.reporting.sweep_plots.plot_arms`)."""
        from .sweep_plots import plot_arms  # noqa: PLC0415  (optional: it imports matplotlib.pyplot)

        return plot_arms(self.summary, metric=metric, arms=arms, title=title)


def power_basis(notes: Sequence[Any]) -> dict | None:
    """The spec's stated power basis: the first ``{"power": {...}}`` entry of its ``notes``, filled in.

    Keys: ``pilot`` (a committed sweep under ``results/``), ``arm`` and ``control`` (the pilot's
    comparison whose variance is used; ``control`` defaults to the pilot's control), ``metric``
    (default ``avg_at_k``), ``target_diff`` (the difference the run should resolve), ``min_seeds``
    (default 2), ``alpha`` (0.05), ``power`` (0.8). ``None`` when the notes state none.
    """
    for note in notes or []:
        if isinstance(note, dict) and isinstance(note.get("power"), dict):
            b = dict(note["power"])
            if "pilot" not in b or "arm" not in b:
                raise InputFormatError(
                    f"power note {b}: needs 'pilot' (a committed sweep) and 'arm' (its compared arm)"
                )
            b.setdefault("control", None)
            b.setdefault("metric", "avg_at_k")
            b.setdefault("target_diff", None)
            b.setdefault("min_seeds", 2)
            b.setdefault("alpha", ALPHA)
            b.setdefault("power", 0.8)
            return b
    return None


def power_plan(spec: Any, results: str | Path) -> dict | None:
    """Power stated before a run: what a spec's seeds can detect, from a pilot's committed variance.

    Args:
        spec: a :class:`~bupo_core.sweep.SweepSpec` or the spec's raw mapping (``seeds``, ``control``,
            ``arms``, ``notes`` with a ``power`` entry, see :func:`power_basis`).
        results: the ``results/`` folder holding the pilot sweep.

    Returns:
        ``None`` when the spec states no power basis, else ``{"pilot", "pilot_arm", "pilot_control",
        "metric", "pilot_pairs", "correlation", "test", "sd", "alpha", "power", "target_diff",
        "seeds_needed", "comparisons": [{"arm", "seeds", "detectable_diff"}]}``. ``test`` is the one
        the pilot supports: ``"paired"`` (its SD of the differences) when the pilot's arm-control
        correlation is positive, else ``"unpaired"`` (``sqrt(Var(arm) + Var(control))``). Every
        non-control arm's ``detectable_diff`` is at the seeds it shares with the control;
        ``seeds_needed`` is the fewest seeds (at least ``min_seeds``) that detect ``target_diff``.
    """
    if hasattr(spec, "arms") and not isinstance(spec, dict):
        spec = spec_to_json(spec)
    basis = power_basis(spec.get("notes") or [])
    if basis is None:
        return None
    folder = Path(results) / str(basis["pilot"])
    if not (folder / "summary.json").exists():
        raise InputFormatError(
            f"power note: pilot sweep {folder} has no summary.json; name a committed sweep under {results}"
        )
    pilot = SweepResults.load(folder)
    ctl = basis["control"] or pilot.control
    metric = basis["metric"]
    cmp = compare_to_control(pilot.per_seed(basis["arm"], metric), pilot.per_seed(ctl, metric))
    if cmp["n_pairs"] < 3:
        raise InputFormatError(
            f"power note: pilot {basis['pilot']} has {cmp['n_pairs']} seeds of {basis['arm']} paired with {ctl}; a variance needs 3 or more"
        )
    paired = cmp["correlation"] is not None and cmp["correlation"] > 0
    sd = cmp["sd_paired"] if paired else cmp["sd_unpaired"]
    alpha, power = float(basis["alpha"]), float(basis["power"])
    seeds = list(range(spec["seeds"])) if isinstance(spec["seeds"], int) else list(spec["seeds"])
    arm_seeds = {
        a["name"]: (list(range(a["seeds"])) if isinstance(a.get("seeds"), int) else list(a.get("seeds") or seeds))
        for a in spec["arms"]
    }
    ctl_seeds = set(arm_seeds.get(spec["control"], seeds))
    comps = []
    for a in spec["arms"]:
        if a["name"] == spec["control"]:
            continue
        n = len(set(arm_seeds[a["name"]]) & ctl_seeds)
        comps.append(
            {
                "arm": a["name"],
                "seeds": n,
                "detectable_diff": detectable_difference(sd, n, paired=paired, alpha=alpha, power=power),
            }
        )
    target = basis["target_diff"]
    need = (
        seeds_needed(sd, float(target), paired=paired, alpha=alpha, power=power, minimum=int(basis["min_seeds"]))
        if target
        else None
    )
    return {
        "pilot": str(basis["pilot"]),
        "pilot_arm": basis["arm"],
        "pilot_control": ctl,
        "metric": metric,
        "pilot_pairs": cmp["n_pairs"],
        "correlation": cmp["correlation"],
        "test": "paired" if paired else "unpaired",
        "sd": sd,
        "alpha": alpha,
        "power": power,
        "target_diff": target,
        "seeds_needed": need,
        "comparisons": comps,
    }


def power_lines(plan: dict, k: int = 8) -> list[str]:
    """The plan of :func:`power_plan` in words (the dry run prints them; the results page quotes them)."""
    lab = metric_label(plan["metric"], k)
    r = plan["correlation"]
    out = [
        f"Power, stated before the run: pilot `{plan['pilot']}` (`{plan['pilot_arm']}` vs `{plan['pilot_control']}`, "
        f"{plan['pilot_pairs']} seeds, correlation across seeds {'n/a' if r is None else f'{r:+.2f}'}, so the "
        f"{plan['test']} test; SD {plan['sd']:.4f}); smallest {lab} difference detected at p < {plan['alpha']:g} "
        f"with {plan['power']:.0%} power:"
    ]
    for c in plan["comparisons"]:
        d = c["detectable_diff"]
        out.append(
            f"  `{c['arm']}` vs control, {c['seeds']} seeds: "
            + (f"±{d:.3f}" if d is not None else f"none ({c['seeds']} seeds cannot give p < {plan['alpha']:g})")
        )
    if plan["target_diff"]:
        out.append(f"  seeds needed for a {plan['target_diff']:g} difference: {plan['seeds_needed']}")
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_json_object(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputFormatError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}; truncated?); rewrite it from cells.jsonl with "
            f"`bupo sweep SPEC --out {path.parent} --summary-only`"
        ) from None
    except UnicodeDecodeError:
        raise InputFormatError(
            f"{path}: not UTF-8 text; rewrite it with `bupo sweep SPEC --out {path.parent} --summary-only`"
        ) from None
    if not isinstance(data, dict):
        raise InputFormatError(
            f"{path}: {what} must be a JSON object, got a {type(data).__name__}; rewrite it with "
            f"`bupo sweep SPEC --out {path.parent} --summary-only`"
        )
    return data


def _validate_summary(summary: dict, path: Path) -> None:
    """One-line errors for a ``summary.json`` that was not written by this version of ``bupo sweep``."""
    fix = f"rewrite it from cells.jsonl with `bupo sweep SPEC --out {path.parent} --summary-only`"
    for key in ("control", "k", "arms"):
        if key not in summary:
            raise InputFormatError(f"{path}: no {key!r}; not a sweep summary: {fix}")
    if not isinstance(summary["arms"], dict) or summary["control"] not in summary["arms"]:
        raise InputFormatError(
            f"{path}: 'arms' must map arm names to their statistics and include the control {summary['control']!r}: {fix}"
        )
    if not _is_number(summary["k"]):
        raise InputFormatError(f"{path}: 'k' is {summary['k']!r}, not a number: {fix}")
    for name, a in summary["arms"].items():
        if not isinstance(a, dict) or not isinstance(a.get("seeds"), list) or not isinstance(a.get("metrics"), dict):
            raise InputFormatError(f"{path}: arm {name!r} has no seeds list or metrics: {fix}")
        for metric, m in a["metrics"].items():
            vals = [m.get("mean"), m.get("se"), *(m.get("per_seed") or [])] if isinstance(m, dict) else [m]
            bad = [v for v in vals if v is not None and not _is_number(v)]
            if bad or not isinstance(m, dict):
                raise InputFormatError(
                    f"{path}: arm {name!r}, metric {metric!r}: {bad[0] if bad else m!r} is not a number: {fix}"
                )
        for metric, v in (a.get("vs_control") or {}).items():
            for key in ("diff_mean", "se", "p_value", "p_value_unpaired", "correlation", "detectable_diff"):
                x = v.get(key) if isinstance(v, dict) else v
                if x is not None and not _is_number(x):
                    raise InputFormatError(
                        f"{path}: arm {name!r}, vs_control {metric!r} {key}: {x!r} is not a number: {fix}"
                    )


def _close(a: float | None, b: float | None, tol: float, what: str) -> None:
    if a is None or b is None:
        assert a is None and b is None, f"{what}: {a} recomputed, {b} in summary.json"
        return
    assert abs(a - b) <= tol * max(1.0, abs(a)), f"{what}: {a!r} recomputed from cells.jsonl, {b!r} in summary.json"


def fmt_pm(m: float | None, se: float | None, nd: int = 3, signed: bool = False) -> str:
    """``"0.123 ± 0.010"`` (``"+0.123 ± ..."`` when ``signed``); ``"n/a"`` for no value, no ``±`` without an SE."""
    if m is None:
        return "n/a"
    s = f"{m:+.{nd}f}" if signed else f"{m:.{nd}f}"
    return s if se is None else f"{s} ± {se:.{nd}f}"


def _seed_text(seeds: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts, run = [], []
    for s in sorted(seeds):
        if run and s == run[-1] + 1:
            run.append(s)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [s]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(parts)


def fmt_p(p: float | None) -> str:
    """A p-value to 3 significant digits (``"n/a"`` for none)."""
    return "n/a" if p is None else f"{p:.3g}"
