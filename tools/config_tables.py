"""Write the configuration tables of the docs from the config dataclasses (never edit them by hand).

Every Markdown file under docs/ (and README.md) may hold blocks::

    <!-- BEGIN generated: TrainConfig -->
    ...
    <!-- END generated: TrainConfig -->

This tool replaces each block's body with the table drawn by
:func:`bupo_core.config_cli.markdown_table` from the dataclass's fields, defaults and docstring
lines (names in :data:`bupo_core.config_cli.DOCUMENTED_CONFIGS`).

    python tools/config_tables.py          # rewrite the tables in place
    python tools/config_tables.py --check  # exit 1, naming the files, when a table is out of date

tests/test_config_tables.py runs the check, so a new config field without a regenerated table fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bupo_core.config_cli import fill_generated_blocks  # noqa: E402  (after the path set-up above)


def documented_files(root: Path = ROOT) -> list[Path]:
    """The Markdown files that may carry generated tables."""
    return sorted((root / "docs").glob("*.md")) + [root / "README.md"]


def stale_files(root: Path = ROOT, *, write: bool = False) -> list[Path]:
    """Files whose generated tables differ from the dataclasses (rewritten when ``write``)."""
    stale = []
    for path in documented_files(root):
        text = path.read_text(encoding="utf-8")
        new = fill_generated_blocks(text, where=str(path))
        if new != text:
            stale.append(path)
            if write:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report out-of-date tables (exit 1 when there are any)")
    args = p.parse_args(argv)
    stale = stale_files(write=not args.check)
    for path in stale:
        print(f"{'out of date' if args.check else 'rewrote'}: {path.relative_to(ROOT)}")
    if args.check and stale:
        print("run `python tools/config_tables.py` to regenerate them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
