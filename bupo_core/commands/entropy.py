"""``bupo entropy``: the paper's internal-policy entropy analysis, written to ``DIR/entropy.json`` + figures."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .. import analysis, models  # looked up when called: tests replace analyse_entropy and load_model
from ..adapter import ArchitectureAdapter
from ..analysis import AnalysisConfig, load_pairs, task_prompts
from ..config_cli import add_config_arguments, check_seed, config_from_args, parse_key_values
from ..errors import InputFormatError
from ..models import check_device, check_model
from ..policy_head import REDUCERS
from ..reporting.entropy_plots import save_entropy_report
from ..runs import prepare_output_dir
from ..tasks import TEMPLATES
from ._common import add_task_arg

NAME = "entropy"
HELP = "internal-policy entropy, entropy change and boundary layer of a model (writes DIR/entropy.json and PNG figures)"
DESCRIPTION = (
    "Measure the entropy of every internal layer and module policy (paper numbering: layer 0 = "
    "embedding, 1..L = blocks) over the response tokens of the model's own seeded samples (--task) or "
    "of given responses (--pairs), then the per-layer attention/FFN entropy change and the boundary "
    "layer. Example: bupo entropy --task chain_sum --n 8 --out runs/entropy"
)
# AnalysisConfig fields without a generated flag: the chat-template variables come from --prompt-style, and the
# per-token statistics are always kept (the token x layer heatmap is drawn from them)
ANALYSIS_BY_HAND = ("chat_template_kwargs", "keep_token_statistics")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="model name, local folder or hub id (default: the embedded smollm2-135m-instruct)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--task", help="reasoning-gym task whose questions the model answers (e.g. chain_sum, basic_arithmetic)"
    )
    src.add_argument(
        "--pairs",
        type=Path,
        help='JSONL file, one {"messages": [...], "response": "..."} or {"prompt": "...", "response": "..."} a line',
    )
    p.add_argument("--n", type=int, default=8, help="number of task prompts (with --task; default 8)")
    add_task_arg(p)
    p.add_argument(
        "--prompt-style",
        choices=list(TEMPLATES),
        default="boxed",
        help="a prompt template: boxed: the paper's system message (default); "
        "short: '... Reply with just the number.'; plain: the question only; qwen3-boxed: boxed without thinking",
    )
    # the analysis settings: one flag per AnalysisConfig field (help and defaults from its docstring)
    add_config_arguments(
        p,
        AnalysisConfig,
        exclude=ANALYSIS_BY_HAND,
        flags={"samples_per_prompt": "--samples"},
        overrides={"statistics": {"choices": sorted(REDUCERS), "metavar": "NAME"}},
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="model dtype (statistics are float32 anyway)",
    )
    p.add_argument("--no-figures", action="store_true", help="write entropy.json only")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")


def run(args: argparse.Namespace) -> int:
    # every argument and the output folder are checked before the (slow) model load
    if args.n < 1:
        raise InputFormatError(f"--n must be >= 1, got {args.n}")
    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputFormatError("--device cuda was given but no CUDA GPU is visible; use --device cpu")
    check_device(args.device)
    cfg = config_from_args(
        AnalysisConfig,
        args,
        chat_template_kwargs=(TEMPLATES[args.prompt_style].chat_template_kwargs or None)
        if args.pairs is None
        else None,
    )
    check_seed(cfg.seed)
    check_model(args.model)
    prepare_output_dir(args.out)
    # read and validate inputs before the (slow) model load
    if args.pairs is not None:
        items = load_pairs(args.pairs)
        source = {"pairs": str(args.pairs)}
    else:
        kwargs = parse_key_values(args.task_arg)
        items = task_prompts(args.task, args.n, seed=cfg.seed, style=args.prompt_style, **kwargs)
        source = {"task": args.task, "task_args": kwargs, "prompt_style": args.prompt_style}
    dtype = getattr(torch, args.dtype) if args.dtype else None
    t0 = time.perf_counter()
    model, tok = models.load_model(args.model, device=args.device, dtype=dtype)
    vocab = ArchitectureAdapter(model).vocab_size
    if cfg.top_k > vocab:
        raise InputFormatError(
            f"--top-k {cfg.top_k} is larger than the model's vocabulary ({vocab} tokens); use 0..{vocab}"
        )
    report = analysis.analyse_entropy(
        model, tok, items, config=cfg, model_name=args.model, progress=True, settings=source
    )
    report.timing["total_s"] = round(time.perf_counter() - t0, 3)

    paths = save_entropy_report(report, args.out, figures=not args.no_figures)
    print(report.summary())
    for path in paths.values():
        print(f"wrote {path}")
    return 0
