"""``bupo sweep``: a resumable grid of (train -> evaluate) cells over arms and seeds, with paired statistics."""

from __future__ import annotations

import argparse
import json

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
    p.add_argument("--arm", action="append", default=None, metavar="NAME", help="run only this arm (repeatable); the summary covers every finished cell")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--skip-unavailable", action="store_true",
                   help="skip arms that set TrainConfig fields this version does not have (they are listed) instead of stopping")
    p.add_argument("--dry-run", action="store_true", help="validate the spec and list the cells and their state, run nothing")
    p.add_argument("--summary-only", action="store_true",
                   help="recompute DIR/summary.json (and spec.json) from DIR/cells.jsonl and print the table, run no cell "
                        "(safe while another process is still running cells of the same sweep)")
    p.add_argument("--quiet", action="store_true", help="no per-step progress bars")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from ..errors import InputFormatError  # noqa: PLC0415
    from ..sweep import cell_key, load_spec, read_cells, run_sweep  # noqa: PLC0415

    # with --arm, the arms not selected may use fields this version lacks
    spec = load_spec(args.spec, skip_unavailable=args.skip_unavailable or bool(args.arm))
    for arm in spec.arms:
        if arm.unavailable:
            print(f"[sweep] skipping arm {arm.name}: {arm.unavailable}")
    if args.dry_run:
        done = {(r["arm"], r["seed"]): r for r in read_cells(Path(args.out) / "cells.jsonl")}
        for arm, seed in spec.cells():
            row = done.get((arm.name, seed))
            state = "missing" if row is None else ("done" if row.get("key") == cell_key(spec, arm, seed) else "STALE (other settings)")
            print(f"{arm.name:28s} seed {seed}: {state}  {json.dumps(spec.arm_differences(arm))}")
        print(f"{len(spec.cells())} cells; spec {spec.path} is valid")
        _print_power(spec)
        return 0
    if args.summary_only:
        from ..sweep import spec_to_json, write_summary  # noqa: PLC0415

        out = Path(args.out)
        if not (out / "cells.jsonl").exists():
            raise InputFormatError(f"{out / 'cells.jsonl'}: missing; run `bupo sweep {args.spec} --out {out}` first")
        (out / "spec.json").write_text(json.dumps(spec_to_json(spec), indent=1))
        s = write_summary(spec, out)
        print(f"[sweep] {s['cells_finished']}/{s['cells_planned']} cells done")
    else:
        report = run_sweep(spec, args.out, device=args.device, progress=not args.quiet, only_arms=args.arm)
        s = report.summary
        print(f"[sweep] ran {len(report.ran)} cells in {report.wall_s / 60:.1f} min, {len(report.skipped)} were already finished; "
              f"{s['cells_finished']}/{s['cells_planned']} cells done")
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
    print(f"[sweep] wrote {Path(args.out) / 'summary.json'} and cells.jsonl")
    return 0


def _print_power(spec) -> None:
    """The spec's power statement (``notes: [{power: {pilot, arm, target_diff}}]``), from the pilot's committed variance."""
    from pathlib import Path  # noqa: PLC0415

    from ..sweep_results import power_lines, power_plan, results_dir  # noqa: PLC0415

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
        print("power: the spec states no power basis (notes: [{power: {pilot: SWEEP, arm: ARM, target_diff: X}}]); "
              "detectable differences unknown before the run")
        return
    for line in power_lines(plan, spec.eval["k"]):
        print(line.replace("`", ""))
