"""Benchmark: one BuPO/GRPO training step at the demo's settings, before vs after the step speedups.

"Before" is the previous code path, kept behind three :class:`~bupo_core.trainer.TrainConfig`
switches; "after" is the default:

* ``share_prefill``: each prompt's key/value cache is computed once for its G samples (the prompt
  is most of a short rollout's tokens);
* ``score_needed_rows_only``: old log-probs only for the rows an update uses (not zero-advantage
  rows, not the first mini-batch, whose own first forward gives them); the full policy's entropy
  comes from the sampler's logits, so the internal phase runs no extra full forward;
* ``fused_optimizer``: torch's fused AdamW instead of the per-tensor loop.

Two trainers start from the same weights and run the same steps (BuPO: ``--inter-steps`` internal
steps at ``--layer``, then GRPO) in ONE process, alternating which goes first at every step, so
background load hits both alike. Their rollouts are the same (same seeds, same weights up to float
rounding), and the script checks that the results agree: rewards, update counts, loss, grad norm,
entropy per step, and the final weights.

Run alone (writes bench/results/train_step.json; ~5-10 min on 2 CPU cores):

    .venv/bin/python bench/train_step.py
    .venv/bin/python bench/train_step.py --steps 2 --inter-steps 1 --out /tmp/quick.json
    .venv/bin/python bench/train_step.py --model tiny-random-llama --steps 2 --out /tmp/tiny.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bupo_core.models import load_model
from bupo_core.trainer import TrainConfig, Trainer

BEFORE = {"share_prefill": False, "score_needed_rows_only": False, "fused_optimizer": False}
PARTS = ("time_generate", "time_score", "time_update")


def _rel(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a == b else float("inf")
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--method", choices=["grpo", "bupo"], default="bupo")
    ap.add_argument("--layer", type=int, default=5)
    ap.add_argument("--inter-steps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="steps per side (default 6: 3 internal + 3 full)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step.json"))
    args = ap.parse_args(argv)
    model, tok = load_model(args.model, device="cpu")
    twin = copy.deepcopy(model)
    tmp = Path(tempfile.mkdtemp(prefix="bupo-bench-step-"))
    common = dict(
        model=args.model,
        method=args.method,
        layer=args.layer if args.method == "bupo" else None,
        inter_steps=args.inter_steps,
        steps=args.steps,
        prompts_per_step=args.prompts,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        lr=args.lr,
        seed=args.seed,
    )
    sides = {
        "before": Trainer(TrainConfig(**common, **BEFORE, out_dir=str(tmp / "before")), model=model, tokenizer=tok),
        "after": Trainer(TrainConfig(**common, out_dir=str(tmp / "after")), model=twin, tokenizer=tok),
    }
    rows: dict[str, list[dict]] = {"before": [], "after": []}
    for step in range(args.steps):
        order = ("before", "after") if step % 2 == 0 else ("after", "before")
        for name in order:
            t0 = time.perf_counter()
            row = sides[name].train_step()
            row["time_total"] = time.perf_counter() - t0
            rows[name].append(row)
        b, a = rows["before"][-1], rows["after"][-1]
        print(
            f"step {step + 1} ({b['phase']}): before {b['time_total']:.2f} s, after {a['time_total']:.2f} s, "
            f"ratio {b['time_total'] / a['time_total']:.2f}",
            flush=True,
        )

    def split(name: str, phase: str | None = None) -> dict:
        rs = [r for r in rows[name] if phase is None or r["phase"] == phase]
        if not rs:
            return {}
        total = sum(r["time_total"] for r in rs)
        out = {"steps": len(rs), "mean_step_s": total / len(rs)}
        for p in PARTS:
            out[p.replace("time_", "") + "_frac"] = sum(r[p] for r in rs) / total
        return out

    agree = []
    for b, a in zip(rows["before"], rows["after"]):
        agree.append(
            {
                "step": b["step"],
                "phase": b["phase"],
                "same_reward": b["reward_mean"] == a["reward_mean"],
                "same_updates": b["updates"] == a["updates"],
                **{f"rel_diff_{k}": _rel(b[k], a[k]) for k in ("loss", "grad_norm", "entropy", "clip_frac")},
            }
        )
    with torch.no_grad():
        max_w = max(
            float((p - q).abs().max())
            for p, q in zip(sides["before"].model.parameters(), sides["after"].model.parameters())
        )
    speedups = [b["time_total"] / a["time_total"] for b, a in zip(rows["before"], rows["after"])]
    total_b = sum(r["time_total"] for r in rows["before"])
    total_a = sum(r["time_total"] for r in rows["after"])
    result = {
        "what": "one training step at the demo's settings, previous code path (before) vs the default (after), alternating in one process",
        "command": "python bench/train_step.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"before_switches": BEFORE},
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "speedup": total_b / total_a,
        "speedup_median_per_step": statistics.median(speedups),
        "speedup_by_phase": {
            ph: (
                sum(b["time_total"] for b in rows["before"] if b["phase"] == ph)
                / sum(a["time_total"] for a in rows["after"] if a["phase"] == ph)
            )
            for ph in sorted({r["phase"] for r in rows["before"]})
        },
        "split": {
            name: {"all": split(name), "internal": split(name, "internal"), "full": split(name, "full")}
            for name in rows
        },
        "results_agree": {
            "all_rewards_equal": all(x["same_reward"] for x in agree),
            "all_update_counts_equal": all(x["same_updates"] for x in agree),
            "max_rel_diff": {
                k: max(x[f"rel_diff_{k}"] for x in agree) for k in ("loss", "grad_norm", "entropy", "clip_frac")
            },
            "max_abs_weight_diff": max_w,
            "per_step": agree,
        },
        "per_step": {
            name: [
                {
                    k: r[k]
                    for k in (
                        "step",
                        "phase",
                        "reward_mean",
                        "updates",
                        "loss",
                        "grad_norm",
                        "entropy",
                        "time_total",
                        *PARTS,
                    )
                }
                for r in rs
            ]
            for name, rs in rows.items()
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(
        f"speedup {result['speedup']:.2f}x (median per step {result['speedup_median_per_step']:.2f}); "
        f"results agree: rewards {result['results_agree']['all_rewards_equal']}, max |dw| {max_w:.2e}; wrote {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
