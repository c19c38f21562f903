"""Build the course's static book from the committed notebooks: ``make book`` -> ``_build/book/html``.

The pages are the executed chapters (``notebooks/*.ipynb``, their committed outputs and figures),
the student versions (``notebooks/exercises/*.ipynb``), ``docs/results.md`` (with its figures) and
``docs/teaching.md``. Nothing is executed. Links to repository files that are not pages (sources,
other docs) point to the repository on GitHub, so the site has no dead links.

    python tools/book.py            # assemble _build/book/src and build _build/book/html
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build" / "book"
REPO_URL = "https://github.com/bupo-notebooks/bupo-notebooks/blob/main"
MATHJAX = ROOT / "node_modules" / "mathjax" / "es5"


def pages() -> list[Path]:
    """The repository files that become pages, in book order."""
    return (
        sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        + sorted((ROOT / "notebooks" / "exercises").glob("*.ipynb"))
        + [ROOT / "docs" / "results.md", ROOT / "docs" / "teaching.md"]
    )


def relink(text: str, where: Path, page_set: set[Path]) -> str:
    """Markdown links from ``where`` to repository files that are not pages become GitHub links."""

    def fix(m: re.Match) -> str:
        label, target = m.group(1), m.group(2)
        if re.match(r"^[a-z]+:|^#|^/", target):
            return m.group(0)
        path, _, anchor = target.partition("#")
        resolved = (where.parent / path).resolve()
        if resolved in page_set or resolved.suffix.lower() in {".png", ".svg", ".jpg", ".gif"} and resolved.exists():
            return m.group(0)
        try:
            rel = resolved.relative_to(ROOT)
        except ValueError:
            return m.group(0)
        return f"[{label}]({REPO_URL}/{rel.as_posix()}{'#' + anchor if anchor else ''})"

    return re.sub(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)", fix, text)


def assemble(src: Path) -> None:
    import nbformat

    if src.exists():
        shutil.rmtree(src)
    page_set = {p.resolve() for p in pages()}
    for page in pages():
        out = src / page.relative_to(ROOT)
        out.parent.mkdir(parents=True, exist_ok=True)
        if page.suffix == ".ipynb":
            nb = nbformat.read(page, as_version=4)
            for cell in nb.cells:
                if cell.cell_type == "markdown":
                    # the Colab badge is an image from another site: a text link keeps the site self-contained
                    cell.source = re.sub(
                        r"\[!\[Open In Colab\]\([^)]*\)\]\(([^)]*)\)", r"[Open in Colab](\1)", cell.source
                    )
                    cell.source = relink(cell.source, page, page_set)
            nbformat.write(nb, out)
        else:
            out.write_text(relink(page.read_text(), page, page_set))
    shutil.copytree(ROOT / "docs" / "figures", src / "docs" / "figures")
    shutil.copy(ROOT / "book" / "index.md", src / "index.md")
    shutil.copy(ROOT / "book" / "conf.py", src / "conf.py")
    shutil.copy(ROOT / "book" / "favicon.svg", src / "favicon.svg")
    if not (MATHJAX / "tex-chtml.js").exists():
        raise SystemExit("MathJax is missing: run `npm ci` in the repository root (package.json), then rebuild")
    shutil.copytree(MATHJAX, src / "_static" / "mathjax")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=BUILD, help="build folder (default _build/book)")
    args = ap.parse_args()
    src = args.out / "src"
    assemble(src)
    html = args.out / "html"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "1", str(src), str(html)]
    rc = subprocess.call(cmd)
    if rc == 0:
        print(f"book: {html / 'index.html'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
