"""Base pass rate and share of mixed groups of 8 for candidate held-out tasks (embedded model).

GRPO learns only from *mixed* groups (some of the G responses right, some wrong): an all-wrong or
all-right group has zero advantage. A task for CPU-scale BuPO/GRPO comparisons therefore needs a
base pass rate at which most groups of 8 are mixed, and, for a held-out evaluation, thousands of
distinct questions (see ``bupo_core.tasks.question_split``).

For each candidate this samples ``--k`` responses to ``--n`` training-split prompts from the base
model (temperature 1, the "short" template) and records the pass rate, the share of mixed groups,
the share of responses with no parseable answer, and the number of distinct questions in the task.

    python bench/task_pass_rate.py            # writes bench/results/task_pass_rate.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

CANDIDATES = {
    "chain_sum 2 terms, 1-2 digits": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
    "chain_sum 2 terms, 2 digits": {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2},
    "chain_sum 2 terms, 1 digit (EASY_CHAIN_SUM)": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    "chain_sum 3 terms, 1 digit": {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1},
    "chain_sum 2-3 terms, 1 digit (HELD_OUT_CHAIN_SUM)": {
        "min_terms": 2,
        "max_terms": 3,
        "min_digits": 1,
        "max_digits": 1,
    },
}


def all_questions(kw: dict) -> list[str]:
    """Every chain_sum expression the settings can generate (exact enumeration; ``bupo_core.tasks.chain_sum_questions``)."""
    from bupo_core.tasks import chain_sum_questions

    return chain_sum_questions(kw)


def split_sizes(kw: dict) -> dict:
    """Distinct questions of the task and how many fall in each split."""
    from bupo_core.tasks import Example, question_split

    qs = all_questions(kw)
    n_eval = sum(question_split(Example("", "", entry={"metadata": {"expression": q}})) == "eval" for q in qs)
    return {"distinct_questions": len(qs), "train_questions": len(qs) - n_eval, "eval_questions": n_eval}


def split_kind_mix(kw: dict) -> dict:
    """Share of each number of terms among the distinct questions of each split (exact enumeration)."""
    from bupo_core.tasks import chain_sum_split_counts

    return {side: {k: n / sum(c.values()) for k, n in c.items()} for side, c in chain_sum_split_counts(kw).items()}


def choose(results: dict) -> str | None:
    """The candidate with >= 1000 distinct questions whose groups are most often mixed."""
    ok = {k: v for k, v in results.items() if v["distinct_questions"] >= 1000}
    return max(ok, key=lambda k: ok[k]["mixed_group_share"]) if ok else None


def write(out_path: Path, args: argparse.Namespace, results: dict) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": args.model,
        "settings": {
            "prompts": args.n,
            "samples_per_prompt": args.k,
            "max_new_tokens": args.max_new_tokens,
            "temperature": 1.0,
            "template": "short",
            "split": "train",
            "pool": "uniform",
            "task_seed": 0,
            "sampling_seed": 0,
            "device": args.device,
        },
        "command": "python bench/task_pass_rate.py",
        "candidates": results,
        "rule": "among candidates with >= 1000 distinct questions, the highest share of mixed groups",
        "chosen": choose(results),
    }
    out_path.write_text(json.dumps(payload, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=32, help="prompts per candidate")
    ap.add_argument("--k", type=int, default=8, help="samples per prompt (group size)")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--only", action="append", default=None, help="substring of a candidate name (repeatable)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "task_pass_rate.json"))
    ap.add_argument("--device", default="cpu", help="cpu (default, as committed) or cuda")
    args = ap.parse_args()

    from bupo_core import load_model
    from bupo_core.evaluate import EvalConfig, evaluate
    from bupo_core.tasks import kind_mix, load_task

    torch.manual_seed(0)
    model, tok = load_model(args.model, device=args.device)
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}
    # keep earlier candidates only if they were measured with the same pool rule (an --only rerun adds to them)
    results = previous.get("candidates", {}) if previous.get("settings", {}).get("pool") == "uniform" else {}
    for name, kw in CANDIDATES.items():
        if args.only and not any(o in name for o in args.only):
            continue
        # the same pool rule as the sweeps' training pool and evaluation set (pool="uniform"): a uniform sample of
        # the split's distinct questions, so all three see the same mix of question kinds (kind_mix below)
        task = load_task("chain_sum", size=args.n, seed=0, split="train", pool="uniform", **kw)
        t0 = time.time()
        res = evaluate(
            model,
            tok,
            task,
            EvalConfig(num_problems=args.n, k=args.k, max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0),
            progress=False,
        )
        data = res.to_json()
        correct = res.correct
        results[name] = {
            "task_kwargs": kw,
            **split_sizes(kw),
            "pool": "uniform",
            "kind_mix": kind_mix(task.examples[: args.n]),
            "split_kind_mix": split_kind_mix(kw),
            "pass_rate": data["avg_at_k"],
            "mixed_group_share": sum(0 < c < args.k for c in correct) / len(correct),
            "all_wrong_group_share": sum(c == 0 for c in correct) / len(correct),
            "all_right_group_share": sum(c == args.k for c in correct) / len(correct),
            "no_answer_rate": data["no_answer_rate"],
            "accuracy_among_answered": data.get("accuracy_among_answered"),
            "seconds": round(time.time() - t0, 1),
        }
        print(name, json.dumps(results[name]), flush=True)
        write(out_path, args, results)  # after every candidate: an interrupted run keeps what it measured
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
