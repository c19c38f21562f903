"""Rewrite the README's "Results at a glance" sweep lines from the committed results.

    python tools/readme_glance.py          # after `bupo report results/ --out docs/results.md`

The lines come from :func:`bupo_core.reporting.report.glance_lines`; tests/test_report.py fails when the
README quotes other numbers than ``results/`` gives.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bupo_core.reporting.report import glance_lines  # noqa: E402

PREFIX = "- Sweep `"


def main() -> int:
    path = ROOT / "README.md"
    lines = path.read_text(encoding="utf-8").splitlines()
    idx = [i for i, line in enumerate(lines) if line.startswith(PREFIX)]
    if not idx:
        print("README.md has no '- Sweep `...' lines to replace", file=sys.stderr)
        return 1
    glance = glance_lines(ROOT / "results")
    new = lines[: idx[0]] + glance + lines[idx[-1] + 1 :]
    path.write_text("\n".join(new) + "\n", encoding="utf-8")
    print(f"README.md: {len(idx)} sweep line(s) replaced by {len(glance)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
