"""Imports of ``bupo_core``: each module's dependencies are in its header.

An import inside a function says why on its line (``# noqa: PLC0415  (cycle: ...)``, ``(optional: ...)``),
the package has no import cycle except those a local import names, and ``import bupo_core`` plus the CLI's
start-up load none of the optional packages that are imported only where they are used.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bupo_core"
NOQA = re.compile(r"#\s*noqa:[A-Z0-9,\s]*\bPLC0415\b(?P<reason>.*)$")
# imported only inside the functions that use them (plotting, notebooks, extras, slow to import)
LAZY = ("matplotlib.pyplot", "trl", "datasets", "ipywidgets", "reasoning_gym", "math_verify")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _reason(lines: list[str], node: ast.stmt) -> str | None:
    """The text after ``# noqa: PLC0415`` on a line of the statement (``None`` without the noqa)."""
    for line in lines[node.lineno - 1 : node.end_lineno]:
        m = NOQA.search(line)
        if m:
            return m.group("reason").strip().lstrip("-:").strip()
    return None


def _imports(name: str) -> list[tuple[ast.stmt, bool, set[str]]]:
    """Every import of module ``name`` outside ``if TYPE_CHECKING:``: (node, inside a function, the
    bupo_core modules it imports)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                else:
                    base = ".".join(
                        (package[: len(package) - child.level + 1] if child.level else [])
                        + ([child.module] if child.module else [])
                    )
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
                out.append((child, in_function, {t for t in targets if t in MODULES and t != name}))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return out


def test_an_import_inside_a_function_says_why():
    missing = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node, in_function, _ in _imports(name):
            reason = _reason(lines, node) or ""
            said = re.search(r"[A-Za-z]{3}", reason) and reason.startswith("(") == reason.endswith(")")
            if in_function and not said:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not missing, (
        "imports inside a function without `# noqa: PLC0415  (reason)` naming the cycle or the optional "
        "dependency they avoid (else move them to the module's header):\n" + "\n".join(missing)
    )


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while not comp or v not in comp:
                comp.add(stack.pop())
            if len(comp) > 1:
                found.append(comp)

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_but_the_ones_a_local_import_names():
    top: dict[str, set[str]] = {}
    every: dict[str, set[str]] = {}
    named: set[tuple[str, str]] = set()
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        top[name], every[name] = set(), set()
        for node, in_function, targets in _imports(name):
            every[name] |= targets
            if not in_function:
                top[name] |= targets
            elif (_reason(lines, node) or "").startswith("(cycle:"):
                named |= {(name, t) for t in targets}
    assert not _cycles(top), f"import cycles at import time: {_cycles(top)}"
    unnamed = [c for c in _cycles(every) if not any(a in c and b in c for a, b in named)]
    assert not unnamed, f"import cycles that no `(cycle: ...)` comment names: {unnamed}"


def test_import_bupo_core_and_the_cli_load_no_optional_package():
    code = (
        "import json, sys\nimport bupo_core, bupo_core.cli\nbupo_core.cli.build_parser()\n"
        f"print(json.dumps([n for n in {LAZY!r} if n in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
