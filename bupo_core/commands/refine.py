"""``bupo refine``: feature-refinement measures over the checkpoints of a training run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import models  # models.load_model is looked up when called: tests replace it
from ..adapter import check_layer
from ..errors import InputFormatError
from ..models import check_device, check_model
from ..policy_head import NORMS
from ..refinement import ReferenceSet, build_reference_set, list_checkpoints, refinement_over_run, summarise
from ..runs import prepare_output_dir
from ..sampling import MAX_NEW_TOKENS_SHORT_ANALYSIS
from ..tasks import load_task
from ._common import add_task_arguments, task_kwargs

NAME = "refine"
HELP = "cosine similarity, entropy change, perplexity and KL at the target layer across a run's checkpoints"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a `bupo train` output folder (with checkpoints/)")
    p.add_argument("--layer", type=int, default=None, help="target layer, paper numbering (default: the run's --layer)")
    p.add_argument(
        "--norm", choices=list(NORMS), default="none", help="internal-policy convention (none = the paper's)"
    )
    add_task_arguments(p)
    p.add_argument("--n", type=int, default=16, help="prompts in the fixed reference set")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=MAX_NEW_TOKENS_SHORT_ANALYSIS,
        help=f"response length limit of the reference set's answers (default {MAX_NEW_TOKENS_SHORT_ANALYSIS})",
    )
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="output folder (default: RUN/refinement)")


def reference_key(model: str, args: argparse.Namespace, seed: int) -> dict:
    """What a cached ``reference_set.json`` depends on: the base model, the task and its settings, n, the length limit."""
    return {
        "model": model,
        "task": args.task,
        "task_kwargs": task_kwargs(args),
        "template": args.template,
        "task_seed": seed,
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
    }


def run(args: argparse.Namespace) -> int:
    from ..reporting.evaluation_plots import plot_refinement  # noqa: PLC0415  (optional: it imports matplotlib.pyplot)

    # every input is checked before the model loads and before a file is written
    if args.n < 1 or args.max_new_tokens < 1:
        raise InputFormatError(
            f"--n and --max-new-tokens must be >= 1 (got --n {args.n}, --max-new-tokens {args.max_new_tokens})"
        )
    run_dir = Path(args.run)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise InputFormatError(f"{cfg_path} not found: --run must be a `bupo train` output folder")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFormatError(
            f"{cfg_path} is corrupt ({exc}); each checkpoint keeps a copy of the run's config (checkpoints/checkpoint-<step>/"
            'trainer_state.json, key "config"): copy it back into config.json'
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise InputFormatError(
            f"{cfg_path} does not name the run's model (a JSON object with \"model\"); restore it from a checkpoint's trainer_state.json"
        )
    layer = args.layer if args.layer is not None else config.get("layer")
    if layer is None:
        raise InputFormatError("the run has no target layer (a GRPO run?): pass --layer L (paper numbering)")
    check_device(args.device)
    num_layers = check_model(config["model"])
    if num_layers is not None:
        check_layer(
            int(layer),
            num_layers,
            allow_embedding=False,
            below_top=True,
            what="feature refinement needs a layer below the top one; layer",
        )
    if not list_checkpoints(run_dir):
        raise InputFormatError(
            f"no checkpoints under {run_dir / 'checkpoints'}: train with --save-every N (or --keep-checkpoints) to keep some"
        )
    seed = 20_000 if args.task_seed is None else args.task_seed
    task = load_task(args.task, size=args.n, seed=seed, template=args.template, **task_kwargs(args))
    out = prepare_output_dir(Path(args.out) if args.out else run_dir / "refinement")
    ref_path = out / "reference_set.json"
    key = reference_key(config["model"], args, seed)
    reference = None
    if ref_path.exists():
        try:
            cached = ReferenceSet.load(ref_path)
        except (OSError, ValueError, TypeError) as exc:
            print(f"[bupo] {ref_path} is unreadable ({str(exc)[:80]}); building it again")
        else:
            if cached.source.get("cache_key") == key:
                reference = cached
            else:
                print(f"[bupo] {ref_path} was built for other settings (model, task, --n or length); building it again")
    if reference is None:
        base, tok = models.load_model(config["model"], device=args.device, dtype="float32")
        reference = build_reference_set(base, tok, task, num_prompts=args.n, max_new_tokens=args.max_new_tokens)
        reference.source["cache_key"] = key
        reference.save(ref_path)
        del base
    points = refinement_over_run(run_dir, reference, int(layer), norm=args.norm, device=args.device)
    rows = [p.to_json() for p in points]
    (out / "refinement.json").write_text(
        json.dumps({"layer": layer, "norm": args.norm, "points": rows, "summary": summarise(points)}, indent=1)
    )
    plot_refinement(rows, title=f"{config['model']}, target layer {layer}").savefig(out / "refinement.png", dpi=120)
    print(json.dumps(summarise(points), indent=1))
    print(f"wrote {out / 'refinement.json'}")
    return 0
