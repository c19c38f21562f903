"""Move bupo_core's teaching and reporting modules into subpackages and rename misleading modules (issue 19).

The plan (the reasons are in the module docstrings of the new packages and in docs/architecture.md)::

    bupo_core/exercises.py         -> bupo_core/teaching/exercises.py
    bupo_core/widgets.py           -> bupo_core/teaching/widgets.py
    bupo_core/demo.py              -> bupo_core/teaching/demo.py
    bupo_core/report.py            -> bupo_core/reporting/report.py
    bupo_core/sweep_results.py     -> bupo_core/reporting/sweep_results.py
    bupo_core/sweep_plots.py       -> bupo_core/reporting/sweep_plots.py
    bupo_core/plots.py             -> bupo_core/reporting/entropy_plots.py
    bupo_core/training_plots.py    -> bupo_core/reporting/training_plots.py
    bupo_core/evaluation_plots.py  -> bupo_core/reporting/evaluation_plots.py
    bupo_core/checks.py            -> bupo_core/tolerances.py
    bupo_core/settings.py          -> bupo_core/runtime.py
    tests/test_checks.py           -> tests/test_tolerances.py

What it does, in order:

1. rewrites every reference to a moved module in bupo_core/, tests/, notebooks/src/, tools/, bench/,
   docs/, README.md, the Makefile and the notebooks (``.ipynb`` sources): relative imports inside
   bupo_core are resolved from the file's old place and written relative to its new one;
   ``from bupo_core import plots`` becomes ``from bupo_core.reporting import entropy_plots as plots``
   (split into one statement per package when it mixes moved and staying modules); dotted names
   (``bupo_core.report.glance_lines``, ``:mod:`bupo_core.plots```, ``"bupo_core.settings.x"`` in a
   monkeypatch) and paths (``bupo_core/checks.py``) are renamed;
2. creates ``bupo_core/teaching/__init__.py`` and ``bupo_core/reporting/__init__.py``;
3. moves the files (``git mv`` inside a git work tree, so history follows them).

Idempotent: a second run finds nothing to do (every rewrite maps old names only, and no new name is
an old one). ``--dry-run`` prints the moves and the files it would change, and changes nothing.

    python tools/apply_layout.py --dry-run
    python tools/apply_layout.py
    python tools/apply_layout.py --root /tmp/layout-try   # another checkout
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = "bupo_core"
#: old module (under bupo_core) -> new module
MOVES: dict[str, str] = {
    "exercises": "teaching.exercises",
    "widgets": "teaching.widgets",
    "demo": "teaching.demo",
    "report": "reporting.report",
    "sweep_results": "reporting.sweep_results",
    "sweep_plots": "reporting.sweep_plots",
    "plots": "reporting.entropy_plots",
    "training_plots": "reporting.training_plots",
    "evaluation_plots": "reporting.evaluation_plots",
    "checks": "tolerances",
    "settings": "runtime",
}
#: other files that move with them
FILE_MOVES: dict[str, str] = {"tests/test_checks.py": "tests/test_tolerances.py"}
NEW_PACKAGES: dict[str, str] = {
    "teaching": '"""Teaching code: the notebooks\' exercise checkers, the interactive lens widgets and the end-to-end\n'
    'demo (``bupo demo``). Nothing in the algorithm modules imports from here.\n"""\n',
    "reporting": '"""Reporting: reading sweeps back (``sweep_results``), every figure (entropy, training, evaluation,\n'
    "sweep plots) and the results page (``report``). They read what the algorithm wrote and compute no\n"
    'training; nothing in the algorithm modules imports from here.\n"""\n',
}
#: where references are rewritten (globs relative to the root)
SCOPES = (
    "bupo_core/**/*.py",
    "tests/**/*.py",
    "notebooks/src/*.py",
    "tools/*.py",
    "bench/**/*.py",
    "docs/**/*.md",
    "README.md",
    "Makefile",
    "notebooks/*.ipynb",
    "notebooks/exercises/*.ipynb",
)

_OLD = "|".join(sorted(MOVES, key=len, reverse=True))
_DOTTED = re.compile(rf"\b{PACKAGE}\.({_OLD})(?![\w])")
_PATH = re.compile(rf"(?<![\w/]){PACKAGE}/({_OLD})\.py\b")
_FROM_PACKAGE = re.compile(rf"^([ \t]*)from {PACKAGE} import (\(([^)]*)\)|[^\n(]+?)([ \t]*#[^\n]*)?$", re.M)
_RELATIVE = re.compile(r"^([ \t]*)from (\.+)([\w.]*) import ", re.M)


def new_module(old: str) -> str:
    """``"bupo_core.plots"`` -> ``"bupo_core.reporting.entropy_plots"``; other names unchanged."""
    parts = old.split(".")
    if len(parts) >= 2 and parts[0] == PACKAGE and parts[1] in MOVES:
        return ".".join([PACKAGE, MOVES[parts[1]], *parts[2:]])
    return old


def module_of(path: Path, root: Path) -> str:
    """``bupo_core/commands/eval.py`` -> ``bupo_core.commands.eval`` (``__init__`` -> the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _package_of(module: str, is_init: bool) -> list[str]:
    return module.split(".") if is_init else module.split(".")[:-1]


def _relative(target: str, package: list[str]) -> tuple[str, str]:
    """(dots, rest) of a relative import of ``target`` from ``package``."""
    t = target.split(".")
    common = 0
    while common < min(len(t), len(package)) and t[common] == package[common]:
        common += 1
    dots = "." * (len(package) - common + 1)
    return dots, ".".join(t[common:])


def _split_names(text: str) -> list[tuple[str, str | None]]:
    names = []
    for item in text.replace("\n", " ").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, alias = item.partition(" as ")
        names.append((name.strip(), alias.strip() or None))
    return names


def _import_line(indent: str, module: str, names: list[tuple[str, str | None]], comment: str) -> str:
    body = ", ".join(f"{n} as {a}" if a and a != n else n for n, a in names)
    return f"{indent}from {module} import {body}{comment}"


def rewrite_from_package(text: str, base: str = PACKAGE, pattern: re.Pattern | None = None) -> str:
    """``from bupo_core import plots, stats`` -> one statement per package, moved modules renamed."""

    def fix(m: re.Match) -> str:
        indent, names_text, comment = m.group(1), m.group(3) if m.group(3) is not None else m.group(2), m.group(4) or ""
        names = _split_names(names_text)
        if not any(n in MOVES for n, _ in names):
            return m.group(0)
        groups: dict[str, list[tuple[str, str | None]]] = {}
        for name, alias in names:
            if name in MOVES:
                pkg, _, leaf = f"{base}.{MOVES[name]}".rpartition(".")
                groups.setdefault(pkg, []).append((leaf, alias or name))
            else:
                groups.setdefault(base, []).append((name, alias))
        return "\n".join(
            _import_line(indent, pkg, ns, comment if i == 0 else "") for i, (pkg, ns) in enumerate(groups.items())
        )

    return (pattern or _FROM_PACKAGE).sub(fix, text)


def rewrite_relative(text: str, old_module: str, new_mod: str, is_init: bool, where: str = "") -> str:
    """Relative imports of a bupo_core file, resolved from ``old_module``, written for ``new_mod``."""
    old_pkg = _package_of(old_module, is_init)
    new_pkg = _package_of(new_mod, is_init)

    def fix(m: re.Match) -> str:
        indent, dots, rest = m.group(1), m.group(2), m.group(3)
        base = old_pkg[: len(old_pkg) - (len(dots) - 1)]
        target = new_module(".".join(base + ([rest] if rest else [])))
        if not rest:  # `from . import x`: the names are modules or attributes of the package
            line = text[m.end() : text.find("\n", m.end())]
            if any(n in MOVES for n, _ in _split_names(line.strip("() "))) and ".".join(base) == PACKAGE:
                raise SystemExit(
                    f"{where}: `from {dots} import {line.strip()}` imports a moved module: rewrite it by hand"
                )
        d, r = _relative(target, new_pkg)
        return f"{indent}from {d}{r} import "

    return _RELATIVE.sub(fix, text)


def rewrite_text(text: str) -> str:
    """Absolute references: ``from bupo_core import x``, dotted names and file paths."""
    text = rewrite_from_package(text)
    text = _DOTTED.sub(lambda m: f"{PACKAGE}.{MOVES[m.group(1)]}", text)
    return _PATH.sub(lambda m: f"{PACKAGE}/{MOVES[m.group(1)].replace('.', '/')}.py", text)


def files_in_scope(root: Path) -> list[Path]:
    seen: dict[Path, None] = {}
    for pattern in SCOPES:
        for p in sorted(root.glob(pattern)):
            if (
                p.is_file()
                and ".venv" not in p.parts
                and "__pycache__" not in p.parts
                and p.name != Path(__file__).name
            ):
                seen[p] = None
    return list(seen)


def planned_moves(root: Path) -> list[tuple[Path, Path]]:
    """(old, new) paths still to move."""
    pairs = [
        (root / PACKAGE / f"{old}.py", root / PACKAGE / (new.replace(".", "/") + ".py")) for old, new in MOVES.items()
    ]
    pairs += [(root / a, root / b) for a, b in FILE_MOVES.items()]
    return [(a, b) for a, b in pairs if a.exists() and not b.exists()]


def rewrite_source(text: str, path: Path, root: Path) -> str:
    """The rewritten text of one source (a .py, .md, Makefile, or a notebook cell's source)."""
    rel = path.relative_to(root)
    if path.suffix == ".py" and rel.parts[0] == PACKAGE:
        old = module_of(path, root)
        text = rewrite_relative(text, old, new_module(old), path.name == "__init__.py", where=str(rel))
    return rewrite_text(text)


def new_text_of(path: Path, root: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        return rewrite_source(text, path, root)
    nb = json.loads(text)
    changed = False
    for cell in nb.get("cells", []):
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        new = rewrite_source(src, path, root)
        if new != src:
            cell["source"] = new.splitlines(keepends=True)
            changed = True
    # nbformat's own layout (indent 1, sorted keys, non-ASCII kept), so only the changed lines differ
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n" if changed else text


def _git(root: Path, *args: str) -> bool:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def apply(root: Path, *, dry_run: bool = False) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Rewrite references, create the packages, move the files; return (moves, changed files)."""
    changed = []
    for path in files_in_scope(root):
        old = path.read_text(encoding="utf-8")
        new = new_text_of(path, root)
        if new != old:
            changed.append(path)
            if not dry_run:
                path.write_text(new, encoding="utf-8")
    moves = planned_moves(root)
    created = [
        root / PACKAGE / name / "__init__.py"
        for name in NEW_PACKAGES
        if not (root / PACKAGE / name / "__init__.py").exists()
    ]
    if dry_run:
        return moves, changed + created
    for name, doc in NEW_PACKAGES.items():
        init = root / PACKAGE / name / "__init__.py"
        if not init.exists():
            init.parent.mkdir(exist_ok=True)
            init.write_text(doc, encoding="utf-8")
            _git(root, "add", str(init.relative_to(root)))
    in_git = _git(root, "rev-parse", "--is-inside-work-tree")
    for a, b in moves:
        b.parent.mkdir(parents=True, exist_ok=True)
        if not (in_git and _git(root, "mv", str(a.relative_to(root)), str(b.relative_to(root)))):
            a.rename(b)
    return moves, changed + created


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[1], help="the checkout (default: this one)"
    )
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    args = p.parse_args(argv)
    root = args.root.resolve()
    if not (root / PACKAGE).is_dir():
        print(f"{root} has no {PACKAGE}/ folder: pass --root CHECKOUT", file=sys.stderr)
        return 2
    moves, changed = apply(root, dry_run=args.dry_run)
    verb = "would " if args.dry_run else ""
    for a, b in moves:
        print(f"{verb}move {a.relative_to(root)} -> {b.relative_to(root)}")
    for path in changed:
        print(
            f"{verb}{'create' if path.name == '__init__.py' and path.parent.name in NEW_PACKAGES else 'rewrite'} {path.relative_to(root)}"
        )
    if not moves and not changed:
        print("nothing to do: the layout is already applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
