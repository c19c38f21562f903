"""``bupo refine``: feature-refinement measures over the checkpoints of a training run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..policy_head import NORMS
from ..sampling import MAX_NEW_TOKENS_SHORT_ANALYSIS
from ._common import add_task_arguments, task_kwargs

NAME = "refine"
HELP = "cosine similarity, entropy change, perplexity and KL at the target layer across a run's checkpoints"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a `bupo train` output folder (with checkpoints/)")
    p.add_argument("--layer", type=int, default=None, help="target layer, paper numbering (default: the run's --layer)")
    p.add_argument("--norm", choices=list(NORMS), default="none", help="internal-policy convention (none = the paper's)")
    add_task_arguments(p)
    p.add_argument("--n", type=int, default=16, help="prompts in the fixed reference set")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS_SHORT_ANALYSIS,
                   help=f"response length limit of the reference set's answers (default {MAX_NEW_TOKENS_SHORT_ANALYSIS})")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="output folder (default: RUN/refinement)")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputFormatError
    from ..evaluation_plots import plot_refinement
    from ..models import load_model
    from ..refinement import ReferenceSet, build_reference_set, refinement_over_run, summarise
    from ..tasks import load_task

    run_dir = Path(args.run)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise InputFormatError(f"{cfg_path} not found: --run must be a `bupo train` output folder")
    config = json.loads(cfg_path.read_text())
    layer = args.layer if args.layer is not None else config.get("layer")
    if layer is None:
        raise InputFormatError("the run has no target layer (a GRPO run?): pass --layer L (paper numbering)")
    out = Path(args.out) if args.out else run_dir / "refinement"
    out.mkdir(parents=True, exist_ok=True)
    ref_path = out / "reference_set.json"
    if ref_path.exists():
        reference = ReferenceSet.load(ref_path)
    else:
        base, tok = load_model(config["model"], device=args.device, dtype="float32")
        task = load_task(args.task, size=args.n, seed=20_000 if args.task_seed is None else args.task_seed, template=args.template, **task_kwargs(args))
        reference = build_reference_set(base, tok, task, num_prompts=args.n, max_new_tokens=args.max_new_tokens)
        reference.save(ref_path)
        del base
    points = refinement_over_run(run_dir, reference, int(layer), norm=args.norm, device=args.device)
    rows = [p.to_json() for p in points]
    (out / "refinement.json").write_text(json.dumps({"layer": layer, "norm": args.norm, "points": rows, "summary": summarise(points)}, indent=1))
    plot_refinement(rows, title=f"{config['model']}, target layer {layer}").savefig(out / "refinement.png", dpi=120)
    print(json.dumps(summarise(points), indent=1))
    print(f"wrote {out / 'refinement.json'}")
    return 0
