"""Notebooks 07 and 08 print what they read from the committed results/ with a fingerprint of the rows
they used; their committed outputs must come from the committed data (rerun them after a sweep lands)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bupo_core.reporting.sweep_results import SweepResults

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def _outputs(name: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    return "\n".join(
        "".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
    )


def test_notebook07_shows_the_committed_main_comparison():
    text = _outputs("07_evaluation")
    m = re.search(r"results/main, main comparison \(([^)]*)\): fingerprint ([0-9a-f]{12})", text)
    assert m, "notebook 07 has no output of its committed-sweep cell: execute it (python tools/nbbuild.py --execute 07)"
    res = SweepResults.load(RESULTS / "main")
    arms = m.group(1).split(", ")
    assert arms == res.groups()["main comparison"]
    assert m.group(2) == res.fingerprint(arms), "notebook 07 was executed on other results/main data: execute it again"


def test_notebook08_shows_every_committed_sweep():
    text = _outputs("08_experiments")
    m = re.search(r"sweep 'main': \d+ of \d+ cells finished; fingerprint ([0-9a-f]{12})", text)
    assert m, "notebook 08 has no outputs: execute it (python tools/nbbuild.py --execute 08)"
    assert m.group(1) == SweepResults.load(RESULTS / "main").fingerprint(), (
        "notebook 08 was executed on other results/main data than the committed: execute it again"
    )
    for spec in sorted((RESULTS / "specs").glob("*.yaml")):
        if spec.stem == "main":
            continue
        if (RESULTS / spec.stem / "summary.json").exists():
            fp = SweepResults.load(RESULTS / spec.stem).fingerprint()
            assert f"fingerprint {fp}" in text, (
                f"notebook 08 does not show the committed results/{spec.stem}: execute it again"
            )
        else:
            assert f"{spec.stem}: not run yet" in text


@pytest.mark.parametrize("name", sorted(p.name for p in RESULTS.iterdir() if (p / "summary.json").exists()))
def test_committed_summaries_are_what_the_cells_give(name):
    SweepResults.load(RESULTS / name).check()
