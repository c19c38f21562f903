"""``bupo sweep``: a resumable grid of (train -> evaluate) cells over arms and seeds, with paired statistics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputFormatError
from ..reporting.sweep_results import power_lines, power_plan, results_dir
from ..sweep import check_spec_for_run, load_spec, plan_cells, read_cells, row_matches, run_sweep, summarize

NAME = "sweep"
HELP = "run a spec's grid of (train -> evaluate) cells over arms and seeds; writes DIR/cells.jsonl and DIR/summary.json"
DESCRIPTION = (
    "Run every (arm, seed) cell of a sweep spec (YAML or JSON: shared TrainConfig settings, a list of arms "
    "that set TrainConfig fields by name, seeds, eval settings, the control arm; see results/specs/ and "
    "docs/training.md). Each cell trains with its seed, then evaluates on the held-out split with the same "
    "seed, so arms pair by seed. One row per finished cell goes to DIR/cells.jsonl; DIR/summary.json holds "
    "per arm the mean, standard error and per-seed values of every metric and the paired difference with "
    "the control arm (sign-flip permutation p-value). Rerunning the command resumes: finished cells are "
    "skipped, an interrupted cell continues from its checkpoint. Checkpoints of finished cells are deleted."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="sweep spec file (.yaml, .yml or .json)")
    p.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    p.add_argument(
        "--arm",
        action="append",
        default=None,
        metavar="NAME",
        help="run only this arm (repeatable); the summary covers every finished cell",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--skip-unavailable",
        action="store_true",
        help="skip arms that set TrainConfig fields this version does not have (they are listed) instead of stopping",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate the spec and list the cells and their state, run nothing"
    )
    p.add_argument(
        "--summary-only",
        action="store_true",
        help="print the table computed from DIR/cells.jsonl; reads only (writes no file, runs no cell, safe while another "
        "process is still running cells of the same sweep); a spec that is not the folder's is refused",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="cells trained at once, each in its own process (for a GPU with room for several small models; "
        "on a CPU each worker gets an equal share of the threads unless OMP_NUM_THREADS is set); "
        "results do not depend on N",
    )
    p.add_argument("--quiet", action="store_true", help="no per-step progress bars")


def run(args: argparse.Namespace) -> int:
    # with --arm, the arms not selected may use fields this version lacks
    if args.workers < 1:
        raise InputFormatError(
            f"--workers {args.workers}: give a whole number >= 1 (1 runs the cells one after another)"
        )
    spec = load_spec(args.spec, skip_unavailable=args.skip_unavailable or bool(args.arm))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputFormatError(f"sweep folder {out} is a file, not a folder; pass a folder path with --out")
    if args.summary_only:
        if not (out / "cells.jsonl").is_file():
            raise InputFormatError(f"{out / 'cells.jsonl'}: missing; run `bupo sweep {args.spec} --out {out}` first")
        rows = read_cells(out / "cells.jsonl")
        _refuse_foreign_spec(spec, out, rows)
        s = summarize(spec, rows)  # in memory: --summary-only writes nothing
        print(
            f"[sweep] {s['cells_finished']}/{s['cells_planned']} cells done (from {out / 'cells.jsonl'}; no file written)"
        )
        _print_table(s)
        return 0
    # the same checks for a dry run and a real one, all before any file is written
    check_spec_for_run(spec, args.device)
    for arm in spec.arms:
        if arm.unavailable:
            print(f"[sweep] skipping arm {arm.name}: {arm.unavailable}")
    if args.dry_run:
        done = {(r["arm"], r["seed"]): r for r in read_cells(out / "cells.jsonl")}
        for arm, seed in spec.cells():
            row = done.get((arm.name, seed))
            state = (
                "missing"
                if row is None
                else ("done" if row_matches(spec, arm, seed, row) else "STALE (other settings)")
            )
            print(f"{arm.name:28s} seed {seed}: {state}  {json.dumps(spec.arm_differences(arm))}")
        try:
            plan_cells(spec, out, device=args.device, only_arms=args.arm)
            verdict = "a run would start now"
        except InputFormatError as exc:
            verdict = f"a run would be refused: {exc}"
        print(f"{len(spec.cells())} cells; spec {spec.path} is valid; {verdict}")
        _print_power(spec)
        return 0
    else:
        report = run_sweep(
            spec, args.out, device=args.device, progress=not args.quiet, only_arms=args.arm, workers=args.workers
        )
        s = report.summary
        print(
            f"[sweep] ran {len(report.ran)} cells in {report.wall_s / 60:.1f} min, {len(report.skipped)} were already finished; "
            f"{s['cells_finished']}/{s['cells_planned']} cells done"
        )
    _print_table(s)
    print(f"[sweep] wrote {out / 'summary.json'} and cells.jsonl")
    return 0


def _refuse_foreign_spec(spec, out, rows: list[dict]) -> None:
    """Refuse a spec that is not the one ``out`` was run with (by name, or with no matching row)."""
    saved = None
    try:
        saved = json.loads((out / "spec.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if isinstance(saved, dict) and saved.get("name") not in (None, spec.name):
        raise InputFormatError(
            f"{out} holds sweep {saved.get('name')!r} (spec {saved.get('path')}), not {spec.name!r} from {spec.path}; "
            f"pass the spec it was run with, or another --out folder"
        )
    names = {a.name: a for a in spec.available_arms()}
    if rows and not any(
        r["arm"] in names and r["seed"] in names[r["arm"]].seeds and row_matches(spec, names[r["arm"]], r["seed"], r)
        for r in rows
    ):
        raise InputFormatError(
            f"none of the {len(rows)} cells in {out / 'cells.jsonl'} was run with the settings of {spec.path}: it is not this folder's "
            f"spec (its copy is {out / 'spec.json'}); pass the spec the folder was run with, or another --out folder"
        )


def _print_table(s: dict) -> None:
    k = s["k"]
    for name, arm in s["arms"].items():
        m = arm["metrics"]["avg_at_k"]
        if m["mean"] is None:
            continue
        se = f" +- {m['se']:.3f}" if m["se"] is not None else ""
        line = f"  {name:28s} avg@{k} {m['mean']:.3f}{se} (n={len(arm['seeds'])})"
        d = arm["vs_control"]["avg_at_k"]
        if name != s["control"] and d["diff_mean"] is not None:
            line += f"   vs {s['control']}: {d['diff_mean']:+.3f}, p = {d['p_value']:.3g}"
        print(line)


def _print_power(spec) -> None:
    """The spec's power statement (``notes: [{power: {pilot, arm, target_diff}}]``), from the pilot's committed variance."""
    here = Path(spec.path).resolve().parent.parent  # results/specs/x.yaml -> results/
    try:
        results = here if (here / "specs").is_dir() else results_dir()
    except Exception:  # noqa: BLE001 - no results folder: no pilot to read
        results = None
    if results is None:
        print("power: no results/ folder with the pilot sweep found; detectable differences unknown before the run")
        return
    plan = power_plan(spec, results)
    if plan is None:
        print(
            "power: the spec states no power basis (notes: [{power: {pilot: SWEEP, arm: ARM, target_diff: X}}]); "
            "detectable differences unknown before the run"
        )
        return
    for line in power_lines(plan, spec.eval["k"]):
        print(line.replace("`", ""))
