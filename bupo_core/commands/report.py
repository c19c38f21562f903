"""``bupo report``: rebuild the results page (and its figures) from the committed results."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputFormatError
from ..reporting.report import write_page

NAME = "report"
HELP = "rebuild docs/results.md and docs/figures/ from results/ (sweep summaries), bench/results/ and the executed notebooks"
DESCRIPTION = (
    "Rebuild the results page from committed data only: results/specs/*.yaml (arms, seeds, the paper's prediction "
    "per arm), results/<sweep>/summary.json and cells.jsonl, bench/results/*.json and notebook 05's table. Every "
    "number on the page is formatted from those files; figures (mean +- SE across seeds with per-seed points, reward "
    "per step) go to <out dir>/figures/. tests/test_report.py fails when the committed page and the data disagree."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="the results folder (holding specs/ and one folder per sweep)")
    p.add_argument("--out", required=True, help="the page to write, e.g. docs/results.md")
    p.add_argument("--bench", default=None, help="benchmark results folder (default: RESULTS/../bench/results)")
    p.add_argument("--notebooks", default=None, help="executed notebooks folder (default: RESULTS/../notebooks)")


def run(args: argparse.Namespace) -> int:
    if not Path(args.results).is_dir():
        raise InputFormatError(
            f"{args.results} is not a folder; give the results folder that holds specs/ (e.g. results/)"
        )
    if Path(args.out).is_dir():
        raise InputFormatError(
            f"--out {args.out} is a folder; give the page's file name, e.g. {Path(args.out) / 'results.md'}"
        )
    if not (Path(args.results) / "specs").is_dir():
        raise InputFormatError(
            f"{args.results} has no specs/ folder; give the results folder that holds specs/ and one folder per sweep (e.g. results/)"
        )
    path = write_page(args.results, args.out, bench=args.bench, notebooks=args.notebooks)
    print(f"wrote {path}")
    return 0
