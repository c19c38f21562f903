"""Benchmark: one policy update in BuPO's internal phase (IPA at layer l) vs one full GRPO update.

Both sides run the same code path of :class:`bupo_core.trainer.Trainer` on the same rollout batch
of the embedded SmolLM2-135M-Instruct (30 layers):

* full GRPO update: old log-probs of the full policy (no grad), then ``num_mini_batches`` AdamW
  updates with forward + backward through all 30 blocks, final norm and E_u;
* internal update: the same, but log-probs come from pi^l = softmax(H^l E_u^T), computed by
  running only the embedding and blocks 1..l (:func:`bupo_core.capture.forward_to_layer`).

The rollout batch is sampled once from the full policy (chain_sum, 2 terms, 1 digit, the short
prompt), with advantages from the real rewards; rows with zero advantage are kept (no skipping) so
both sides process exactly the same tokens. Repetitions are interleaved (full, internal, internal,
full, ...) in ONE process so background load hits both alike; the figure is the ratio of medians.

Run (writes bench/results/ipa_vs_full.json, ~3-6 min on 2 busy CPU cores):

    .venv/bin/python bench/ipa_vs_full.py
    .venv/bin/python bench/ipa_vs_full.py --layers 6 --reps 2 --out /tmp/quick.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from bupo_core.grpo import group_advantages
from bupo_core.models import load_model
from bupo_core.rollout import SamplingConfig, generate
from bupo_core.step import score_batch, update_policy
from bupo_core.trainer import TrainConfig, Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 15], help="target layers (paper numbering)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ipa_vs_full.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_model(args.model, device="cpu")
    cfg = TrainConfig(
        model=args.model,
        prompts_per_step=args.prompts,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        micro_batch_size=16,
        num_mini_batches=2,
        skip_zero_advantage_rows=False,
        out_dir="/tmp/bupo-bench-ipa",
        method="bupo",
        layer=args.layers[0],
        inter_steps=1,
        lr=1e-5,
    )
    tr = Trainer(cfg, model=model, tokenizer=tok)
    examples = tr.task.batch(0, args.prompts)
    rollout = generate(
        model,
        tok,
        [tr.task.prompt(e) for e in examples],
        group_size=args.group_size,
        config=SamplingConfig(max_new_tokens=args.max_new_tokens),
        seed=1,
    )
    rewards = torch.tensor(tr.grader(rollout.texts, [examples[i] for i in rollout.prompt_index]).rewards)
    adv, zero = group_advantages(rewards, args.group_size)
    if zero.all():  # keep the bench meaningful even if the sample happens to be all-equal
        adv = torch.linspace(-1, 1, len(adv))
    batch = rollout.pack(tok.pad_token_id)
    L = tr.adapter.num_layers

    def one_update(layer):
        t0 = time.perf_counter()
        old, _ = score_batch(tr, batch, layer)
        update_policy(tr, batch, adv, layer, old_logp=old)
        return time.perf_counter() - t0

    one_update(None)  # warm-up
    results = []
    for layer in args.layers:
        tr.upper_ids = {id(p) for p in tr.adapter.upper_parameters(layer)}
        one_update(layer)
        full_t, ipa_t = [], []
        for r in range(args.reps):
            order = [(None, full_t), (layer, ipa_t)] if r % 2 == 0 else [(layer, ipa_t), (None, full_t)]
            for lay, sink in order:
                sink.append(one_update(lay))
        ratio = statistics.median(ipa_t) / statistics.median(full_t)
        results.append(
            {
                "layer": layer,
                "num_layers": L,
                "update_time_full_s": full_t,
                "update_time_ipa_s": ipa_t,
                "median_full_s": statistics.median(full_t),
                "median_ipa_s": statistics.median(ipa_t),
                "update_time_ratio_ipa_over_full": ratio,
                "target_ratio_max": layer / L + 0.25,
                "meets_target": ratio <= layer / L + 0.25,
            }
        )
        print(
            f"layer {layer}/{L}: full {statistics.median(full_t):.2f} s, IPA {statistics.median(ipa_t):.2f} s, "
            f"ratio {ratio:.3f} (target <= {layer / L + 0.25:.3f})"
        )
    main_row = results[0]
    out = {
        "benchmark": "ipa_vs_full",
        "model": args.model,
        **{
            k: main_row[k]
            for k in (
                "layer",
                "num_layers",
                "update_time_ratio_ipa_over_full",
                "target_ratio_max",
                "meets_target",
                "median_full_s",
                "median_ipa_s",
            )
        },
        "per_layer": results,
        "settings": {
            "prompts": args.prompts,
            "group_size": args.group_size,
            "max_new_tokens": args.max_new_tokens,
            "rows": len(batch),
            "tokens_per_row": int(batch.input_ids.shape[1]),
            "response_tokens": int(batch.prediction_mask.sum()),
            "num_mini_batches": cfg.num_mini_batches,
            "micro_batch_size": cfg.micro_batch_size,
            "reps": args.reps,
            "what_is_timed": "old log-probs (no grad) + all mini-batch AdamW updates of one step, same batch, interleaved",
        },
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "note": "full and internal updates interleaved in one process, so background load hits both alike; "
            "the ratio is the meaningful figure",
        },
        "command": "python bench/ipa_vs_full.py",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
