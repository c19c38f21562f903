"""The course as an instructor runs it: exercise metadata and hints, nbgrader metadata and grading,
stated times that come from the recorded ones, and student notebooks that survive skipped exercises.

The tests marked ``course`` execute whole student notebooks at the CI sizes (``BUPO_FAST=1``); CI
runs them (``make test``), ``-m "not course"`` skips them on a busy machine.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _nbbuild():
    if "nbbuild" in sys.modules:
        return sys.modules["nbbuild"]
    spec = importlib.util.spec_from_file_location("nbbuild", ROOT / "tools" / "nbbuild.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["nbbuild"] = module
    spec.loader.exec_module(module)
    return module


nbbuild = _nbbuild()
STUDENT = nbbuild.student_notebooks()
SOURCES = sorted(STUDENT, key=lambda p: p.stem)


def _nbg(cell):
    return cell.metadata.get("nbgrader")


# --------------------------------------------------------------------------- exercises that teach
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_every_exercise_has_rating_time_points_and_collapsed_hints(src):
    cells = nbbuild.parse_percent(src.read_text())
    found = nbbuild.exercises_of(cells, src.name)
    assert found and all(
        1 <= e.difficulty <= 3 and 1 <= e.importance <= 3 and 1 <= e.minutes <= 60 and e.points >= 1 for e in found
    )
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    for e in found:
        start = text.index(f"Exercise {e.number} ·")
        section = text[
            start : text.find("### Exercise", start + 1) if "### Exercise" in text[start + 1 :] else len(text)
        ]
        assert re.search(r"<details><summary>Hint[^<]*</summary>", section), f"exercise {e.number}: no collapsed hint"
    # one exercise heading per solution cell group, numbered by chapter
    assert all(e.number.startswith(str(int(src.stem[:2])) + ".") for e in found)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_exercise_cells_do_not_import_from_the_library(src):
    """The function an exercise asks for is one import away only if the exercise cell imports it."""
    for cell in STUDENT[src].cells:
        meta = _nbg(cell)
        if meta and meta["solution"]:
            imports = [ln for ln in cell.source.splitlines() if re.match(r"\s*(from|import)\s+bupo_core", ln)]
            assert not imports, f"{src.stem}, {meta['grade_id']}: the exercise cell imports {imports}"


def test_chapter_04_clip_is_the_students():
    src = ROOT / "notebooks" / "src" / "04_grpo_from_scratch.py"
    student = "\n".join(c.source for c in STUDENT[src].cells if c.cell_type == "code")
    assert "torch.maximum(unclipped, clipped)" not in student and "ratio.clamp(1 - eps_low" not in student
    assert "torch.maximum(unclipped, clipped)" in "\n".join(c.source for c in nbbuild.build(src).cells)


# --------------------------------------------------------------------------- nbgrader metadata
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_student_notebook_carries_nbgrader_metadata(src):
    from nbgrader.utils import compute_checksum

    nb = STUDENT[src]
    found = nbbuild.exercises_of(nb.cells, src.name)
    graded = [c for c in nb.cells if _nbg(c) and _nbg(c)["grade"]]
    solutions = [c for c in nb.cells if _nbg(c) and _nbg(c)["solution"]]
    assert [c.metadata.nbgrader["grade_id"] for c in graded] == [f"{e.grade_id}-check" for e in found]
    assert [c.metadata.nbgrader["points"] for c in graded] == [e.points for e in found]
    assert all(c.metadata.nbgrader["locked"] and c.source.startswith("check_") for c in graded)
    assert all(not c.metadata.nbgrader["locked"] and "raise NotImplementedError" in c.source for c in solutions)
    assert all(
        "check_" not in line for c in solutions for line in c.source.splitlines() if not line.startswith((" ", "#"))
    )
    for c in graded + solutions:
        assert c.metadata.nbgrader["checksum"] == compute_checksum(c), (
            "tools/nbbuild.py's checksum differs from nbgrader's"
        )
    ids = [_nbg(c)["grade_id"] for c in nb.cells if _nbg(c)]
    assert len(ids) == len(set(ids))


def _write_student(tmp_path: Path, src: Path, filled: bool) -> Path:
    stems = {s.stem for s in STUDENT}
    nb = nbbuild.build(src, student=True, student_stems=stems, filled=filled)
    path = tmp_path / f"{src.stem}.ipynb"
    nbformat.write(nb, path)
    return path


def _marks(nb: nbformat.NotebookNode) -> tuple[float, float]:
    from nbgrader.utils import determine_grade

    scores = [determine_grade(c) for c in nb.cells if _nbg(c) and _nbg(c)["grade"]]
    return sum(s for s, _ in scores), sum(m for _, m in scores)


@pytest.mark.course
@pytest.mark.parametrize("filled", [True, False], ids=["reference-solution", "stubs"])
def test_nbgrader_gives_full_marks_to_the_reference_and_zero_to_stubs(tmp_path, filled, monkeypatch):
    """nbgrader's own validator and grade rule on chapter 01 (the quickest to execute)."""
    from nbgrader.validator import Validator

    monkeypatch.setenv("BUPO_FAST", "1")
    src = ROOT / "notebooks" / "src" / "01_residual_stream.py"
    path = _write_student(tmp_path, src, filled)
    validator = Validator()
    nb = nbformat.read(path, as_version=4)
    executed = validator._preprocess(nb)  # nbgrader's execution (every cell runs, errors recorded)
    got, total = _marks(executed)
    assert total == sum(e.points for e in nbbuild.exercises_of(nb.cells, src.name)) > 0
    results = Validator().validate(str(path))
    assert "changed" not in results and "type_changed" not in results
    if filled:
        assert got == total and "failed" not in results, results.get("failed")
    else:
        assert got == 0 and len(results["failed"]) == len([c for c in nb.cells if _nbg(c) and _nbg(c)["grade"]])


# --------------------------------------------------------------------------- robust student notebooks
def _execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    NotebookClient(
        nb, timeout=1800, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def _errors(cell) -> list[str]:
    return [o.get("ename", "") for o in cell.get("outputs", []) if o.output_type == "error"]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


@pytest.mark.course
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_student_notebook_with_stubs_fails_only_where_an_exercise_is_used(src, monkeypatch):
    """Executed unfilled at the CI sizes: only the checker cells raise, only cells that use an exercise's
    result say they fell back to the library, and nothing anywhere is undefined."""
    monkeypatch.setenv("BUPO_FAST", "1")
    monkeypatch.setenv("BUPO_STATIC_WIDGETS", "1")
    nb = _execute(nbformat.reads(nbformat.writes(STUDENT[src]), as_version=4), ROOT / "notebooks" / "exercises")
    code = [c for c in nb.cells if c.cell_type == "code"]
    names = [e for c in code for e in _errors(c)]
    assert "NameError" not in names, [c.source[:200] for c in code if "NameError" in _errors(c)]
    for c in code:
        graded = bool(_nbg(c)) and _nbg(c)["grade"]
        if graded:
            assert _errors(c) == ["AssertionError"] and "not implemented yet" in "".join(
                o.get("evalue", "") for o in c.outputs if o.output_type == "error"
            ), c.source[:200]
        else:
            assert not _errors(c), (
                f"{src.stem}: a cell that is not an exercise check failed: {c.source[:300]}\n"
                f"{[o for o in c.outputs if o.output_type == 'error']}"
            )
        if "has not passed check_" in _text(c):
            assert "yours_or_library(" in c.source, (
                f"{src.stem}: a fallback note from a cell that does not use an exercise: {c.source[:200]}"
            )
    users = [
        c for c in code if "yours_or_library(" in c.source and not _nbg(c)
    ]  # (a checker cell stops at its failing check)
    assert users and all("has not passed check_" in _text(c) for c in users), (
        "every cell that uses an exercise's result says it fell back"
    )


# --------------------------------------------------------------------------- times from measurement
def test_stated_times_are_the_recorded_ones():
    """Every chapter's run time, the README's and docs/teaching.md's come from the recorded execution times."""
    expected = nbbuild.stated_times(nbbuild.recorded_times())
    stale = [str(p.relative_to(ROOT)) for p, text in expected.items() if p.read_text() != text]
    assert not stale, (
        f"{stale}: run `python tools/nbbuild.py --times --write`, then `python tools/nbbuild.py --reuse-outputs`"
    )


def test_no_other_run_time_claims_in_the_chapters():
    """Run times appear only in the generated sentence; 'about N min' elsewhere is an exercise's working time."""
    claim = re.compile(r"\b(?:about|under|within|takes?|in)\s+(?:a|one|\d+)\s*(?:-\d+\s*)?(?:minutes?|min)\b", re.I)
    for src in sorted((ROOT / "notebooks" / "src").glob("*.py")):
        for cell in nbbuild.parse_percent(src.read_text()):
            for line in cell.source.splitlines():
                if (
                    nbbuild.TIME_SENTENCE.search(line)
                    or nbbuild.WORK_SENTENCE.search(line)
                    or nbbuild.RATING.search(line)
                ):
                    continue
                assert not claim.search(line), f"{src.name}: a stated time not from the recorded ones: {line.strip()}"


def test_times_write_is_mechanical(tmp_path, monkeypatch):
    """--times --write rewrites the sentences and table cells from whatever times are recorded."""
    fake = {p: 61 * (i + 1) for i, p in enumerate(nbbuild.recorded_times())}
    texts = nbbuild.stated_times(fake)
    readme = texts[ROOT / "README.md"]
    assert "| ~1 min |" in readme and "| ~9 min |" in readme
    src = ROOT / "notebooks" / "src" / "07_evaluation.py"
    assert f"({fake['07']} s recorded)" in texts[src]
    assert nbbuild.run_time(13) == "< 1 min" and nbbuild.run_time(683) == "~11 min"
