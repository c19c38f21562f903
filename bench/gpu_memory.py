"""Peak GPU memory of our GRPO/BuPO loop for a Qwen3-0.6B-sized model, G = 8, 1k-token responses.

On a CUDA machine it builds a RANDOM-WEIGHT model from the Qwen3-0.6B configuration (written out
below; nothing is downloaded), uses the embedded SmolLM2 tokenizer for the prompts (its ids are a
subset of the 151,936-token vocabulary), and runs real training steps of :class:`Trainer`: one GRPO
step and one BuPO internal-phase step, each with ``--prompts`` prompts x G = 8 samples of exactly
``--max-new-tokens`` tokens (a random model almost never emits EOS, so responses are full length),
float32 master weights + AdamW, bf16 autocast, gradient checkpointing. It records
``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` per phase.

On a machine without CUDA it writes an ANALYTIC ESTIMATE instead (marked ``"measured": false``),
component by component, with the formulas.

    python bench/gpu_memory.py                      # on a GPU: measures; on CPU: estimates
    python bench/gpu_memory.py --prompts 4 --max-new-tokens 1024 --micro-batch-size 8

Writes bench/results/gpu_memory.json. ``bench/gpu_check.py`` (part 2) measures the same configuration
with only torch + transformers installed and replaces the estimate there too.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from bupo_core.recipes import estimate_memory

QWEN3_0_6B = dict(
    vocab_size=151936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1_000_000,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    bos_token_id=151643,
    eos_token_id=151645,
    pad_token_id=151643,
)
GiB = 2**30


def estimate(args) -> dict:
    """The corrected analytic estimate (:func:`bupo_core.recipes.estimate_memory`, part by part)."""
    from bupo_core.recipes import QWEN3_0_6B as SHAPE  # noqa: PLC0415

    est = estimate_memory(
        SHAPE,
        precision=args.precision,
        prompt_tokens=args.prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        group_size=args.group_size,
        generation_batch_size=args.generation_batch_size,
        micro_batch_size=args.micro_batch_size,
        logprob_chunk_size=args.logprob_chunk_size,
        gradient_checkpointing=True,
    )
    summary = est.summary()
    return {
        "measured": False,
        "note": "ANALYTIC ESTIMATE (bupo_core.recipes.estimate_memory): no CUDA device in this session. Run `python bench/gpu_memory.py` "
        "on a GPU machine to measure; the script then overwrites this file with measured figures.",
        "model": "Qwen3-0.6B configuration (random weights when measured)",
        "parameters": SHAPE.parameters,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "precision": args.precision,
        "components_gib": {
            **{f"generation.{k}": v for k, v in summary["generation_parts_gib"].items()},
            **{f"update.{k}": v for k, v in summary["update_parts_gib"].items()},
        },
        "peak_training_gib": summary["update_gib"],
        "peak_generation_gib": summary["generation_gib"],
        "estimated_peak_gib": summary["peak_gib"],
        "fits_24_gib": est.fits(22.0),
        "head_chunk_rows": summary["head_chunk_rows"],
        "formulas": "see bupo_core/recipes.py (module docstring and estimate_memory) and docs/training.md",
    }


def measure(args) -> dict:
    from transformers import AutoModelForCausalLM, Qwen3Config

    from bupo_core.models import load_model
    from bupo_core.rewards import register_scorer
    from bupo_core.trainer import TrainConfig, Trainer

    register_scorer("bench_even_length", lambda text, example: float(len(text) % 2 == 0))
    _, tok = load_model("tiny-random-llama", device="cpu")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen3Config(**QWEN3_0_6B), dtype=torch.float32).cuda()
    model.generation_config.eos_token_id = QWEN3_0_6B["eos_token_id"]
    out = {
        "measured": True,
        "device": torch.cuda.get_device_name(0),
        "model": "Qwen3-0.6B configuration, random weights",
        "parameters": sum(p.numel() for p in model.parameters()),
        "settings": vars(args),
        "phases": {},
    }
    for method in ("grpo", "bupo"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        cfg = TrainConfig(
            model="qwen3-0.6b-random",
            task="chain_sum",
            reward="bench_even_length",
            method=method,
            layer=6 if method == "bupo" else None,
            inter_steps=1,
            steps=2,
            prompts_per_step=args.prompts,
            group_size=args.group_size,
            max_new_tokens=args.max_new_tokens,
            micro_batch_size=args.micro_batch_size,
            generation_batch_size=args.generation_batch_size,
            logprob_chunk_size=args.logprob_chunk_size,
            gradient_checkpointing=True,
            precision=args.precision,
            lr=1e-6,
            out_dir=tempfile.mkdtemp(),
            device="cuda",
        )
        tr = Trainer(cfg, model=model, tokenizer=tok)
        t0 = time.time()
        row = tr.train_step()
        out["phases"][f"{method}_{row['phase']}"] = {
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GiB, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GiB, 2),
            "response_length_mean": row["response_length_mean"],
            "step_seconds": round(time.time() - t0, 1),
            "time_generate": row["time_generate"],
            "time_update": row["time_update"],
        }
        print(method, out["phases"][f"{method}_{row['phase']}"])
        del tr
    out["peak_gib"] = max(p["peak_reserved_gib"] for p in out["phases"].values())
    out["fits_24_gib"] = out["peak_gib"] < 24
    out["analytic_estimate_for_comparison"] = estimate(args)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--prompt-tokens", type=int, default=128, help="(estimate only) prompt length")
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--generation-batch-size", type=int, default=32)
    ap.add_argument("--logprob-chunk-size", type=int, default=1024)
    ap.add_argument(
        "--precision", default="bf16", choices=["bf16", "fp16", "fp32"], help="(estimate) compute precision"
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_memory.json"))
    args = ap.parse_args()
    result = measure(args) if torch.cuda.is_available() else estimate(args)
    result["machine"] = {"platform": platform.platform(), "torch": torch.__version__}
    result["command"] = "python bench/gpu_memory.py"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(
        json.dumps(
            {
                k: result[k]
                for k in result
                if k in ("measured", "estimated_peak_gib", "peak_gib", "fits_24_gib", "components_gib")
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
