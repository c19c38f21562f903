"""The student notebooks in notebooks/exercises/ are generated from notebooks/src/ by tools/nbbuild.py:
they must be up to date, unexecuted, and have every solution region replaced by a stub."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _nbbuild():
    spec = importlib.util.spec_from_file_location("nbbuild", ROOT / "tools" / "nbbuild.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["nbbuild"] = module
    spec.loader.exec_module(module)
    return module


nbbuild = _nbbuild()
STUDENT = nbbuild.student_notebooks()
CHAPTERS = [f"{i:02d}" for i in range(1, 9)]


def test_every_chapter_01_to_08_has_a_student_version():
    stems = sorted(src.stem[:2] for src in STUDENT)
    assert stems == CHAPTERS
    committed = sorted(p.name for p in (ROOT / "notebooks" / "exercises").glob("*.ipynb"))
    assert committed == sorted(f"{src.stem}.ipynb" for src in STUDENT), "stale or missing files in notebooks/exercises/"


@pytest.mark.parametrize("src", sorted(STUDENT), ids=lambda p: p.stem)
def test_student_notebook_is_up_to_date(src):
    path = ROOT / "notebooks" / "exercises" / f"{src.stem}.ipynb"
    assert path.exists(), f"{path} is missing: run `python tools/nbbuild.py --exercises-only`"
    assert (
        path.read_text() == nbformat.writes(STUDENT[src]) + "\n"
        or nbformat.reads(path.read_text(), as_version=4) == STUDENT[src]
    ), f"{path.name} differs from its source notebooks/src/{src.name}: run `python tools/nbbuild.py --exercises-only`"


@pytest.mark.parametrize("src", sorted(STUDENT), ids=lambda p: p.stem)
def test_student_notebook_has_stubs_checkers_badge_and_no_outputs(src):
    nb = STUDENT[src]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    text = "\n".join(c.source for c in code)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    stubs = text.count("raise NotImplementedError")
    checks = sum(1 for line in text.splitlines() if line.startswith("check_"))
    exercises = nbbuild.exercises_of(nb.cells, src.name)
    assert stubs == src.read_text().count("# BEGIN SOLUTION") and stubs >= 1 and checks >= len(exercises) >= 1
    assert f"notebooks/exercises/{src.stem}.ipynb" in nb.cells[0].source  # its own Colab badge


def test_solution_notebook_drops_the_markers_and_keeps_the_solution():
    src = ROOT / "notebooks" / "src" / "04_grpo_from_scratch.py"
    solution = "\n".join(c.source for c in nbbuild.build(src).cells if c.cell_type == "code")
    assert "BEGIN SOLUTION" not in solution and "raise NotImplementedError" not in solution
    assert 're.findall(r"-?\\d+", text)' in solution


def test_split_solutions_keeps_indentation_and_rejects_unbalanced_markers():
    code = "def f(x):\n    # BEGIN SOLUTION\n    return x + 1\n    # END SOLUTION\n\ncheck(f)"
    student = nbbuild.split_solutions(code, student=True)
    assert student.splitlines()[1].startswith("    raise NotImplementedError(") and "x + 1" not in student
    assert nbbuild.split_solutions(code, student=False) == "def f(x):\n    return x + 1\n\ncheck(f)"
    with pytest.raises(SystemExit):
        nbbuild.split_solutions("# BEGIN SOLUTION\nx = 1", student=True)


def test_student_stub_runs_and_the_checker_reports_it():
    """Executing a student cell gives the checker's 'not implemented' message, not a bare error."""
    src = ROOT / "notebooks" / "src" / "07_evaluation.py"
    cells = STUDENT[src].cells
    i = next(i for i, c in enumerate(cells) if c.cell_type == "code" and "def pass_at_k_by_hand" in c.source)
    namespace = {}
    exec("from math import comb\nfrom bupo_core.teaching.exercises import check_pass_at_k", namespace)
    exec(cells[i].source, namespace)  # the solution cell defines the stub
    assert cells[i + 1].metadata["nbgrader"]["grade"]  # the locked checker cell follows it
    with pytest.raises(AssertionError, match="not implemented yet"):
        exec(cells[i + 1].source, namespace)
