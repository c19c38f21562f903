"""The single-GPU check: the full BuPO loop in bf16 autocast over float32 master weights, measured on CUDA.

Part 1 runs the whole BuPO loop with :class:`bupo_core.trainer.Trainer` (``--inter-steps`` internal-
phase steps on layer ``--layer``, the switch, then GRPO steps) at the paper's group size G = 8 and
``--max-new-tokens`` (512) response tokens, and records per step: time split into generation /
grading / scoring (old log-probs) / update, tokens per second, peak GPU memory of generation and of
the update, and whether the blocks above the target layer (and the final norm) stayed bit-identical
through the internal phase. Part 2 measures the Qwen3-0.6B, G = 8, 1,024-token configuration that
``bench/gpu_memory.py`` estimates analytically (one GRPO step and one BuPO internal-phase step) and,
on CUDA, replaces ``bench/results/gpu_memory.json``'s estimate with the measurement.

Self-contained on purpose: it needs only ``torch`` and ``transformers`` plus the ``bupo_core`` folder
of this repository (no network, no reasoning-gym, math-verify, gguf or datasets, no embedded model).
Without weights at hand the model is a RANDOM-WEIGHT Qwen3-0.6B built from its configuration; the
tokenizer is a byte-level one built here with the model's vocabulary size; the task is synthetic
arithmetic and the reward is random-like (parity of the reply's length), so that groups have mixed
rewards and every update runs. It measures cost and invariants, not learning.

    python bench/gpu_check.py                                 # CUDA: writes bench/results/gpu.json (< 8 min on one H100)
    python bench/gpu_check.py --device cpu --model tiny-random-qwen3 --out /tmp/gpu_check.json   # CPU smoke run (small default sizes)
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's bupo_core (carried with the script), not an installed one

import torch  # noqa: E402

GiB = 2**30
QWEN3_0_6B = dict(  # the Qwen3-0.6B configuration (as in bench/gpu_memory.py); weights are random
    vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1_000_000, rms_norm_eps=1e-6,
    tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
)
REWARD = "gpu_check_length_parity"


# --------------------------------------------------------------------------- model, tokenizer, task
def byte_tokenizer(vocab_size: int, eos_id: int, pad_id: int):
    """A byte-level tokenizer whose ids cover ``vocab_size``: 256 byte symbols, the special ids, and
    synthetic multi-byte tokens for every other id (so a random model's samples decode to text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = {eos_id: "<|endoftext|>", pad_id: "<|pad|>" if pad_id != eos_id else "<|endoftext|>"}
    if min(specials) < len(alphabet):
        raise ValueError(f"special token ids {sorted(specials)} must be >= {len(alphabet)} (the byte symbols come first)")
    vocab: dict[str, int] = {c: i for i, c in enumerate(alphabet)}
    pairs = (a + b for a in alphabet for b in alphabet)
    triples = (a + b + c for a in alphabet[:64] for b in alphabet for c in alphabet)
    filler = itertools.chain(pairs, triples)
    for i in range(len(alphabet), vocab_size):
        vocab[specials[i] if i in specials else next(filler)] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=specials[eos_id], pad_token=specials[pad_id])
    out.padding_side = "left"
    return out


def build_model(name: str, device: torch.device, seed: int):
    """(model in float32 on ``device``, tokenizer, description)."""
    from transformers import AutoModelForCausalLM, Qwen3Config  # noqa: PLC0415

    torch.manual_seed(seed)
    if name == "qwen3-0.6b":
        cfg = Qwen3Config(**QWEN3_0_6B)
        desc = "Qwen3-0.6B configuration, random weights"
    elif name.startswith("tiny-random-"):
        from bupo_core.models import tiny_config  # noqa: PLC0415

        cfg = tiny_config(name.removeprefix("tiny-random-"), vocab_size=512, num_layers=4)
        cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = 258, 256, 257
        cfg.max_position_embeddings = 4096  # room for the default 1,024-token responses
        desc = f"{name} (4 layers, vocab 512), random weights"
    else:  # a local folder or a hub id (needs the weights at hand)
        from bupo_core.models import load_model  # noqa: PLC0415

        model, tok = load_model(name, device=str(device), dtype=torch.float32)
        return model, tok, name
    with torch.device(device):  # initialise the random weights on the device directly (fast on a GPU)
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
    model = model.to(device).eval()
    tok = byte_tokenizer(cfg.vocab_size, cfg.eos_token_id, cfg.pad_token_id)
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.generation_config.pad_token_id = cfg.pad_token_id
    return model, tok, desc


def synthetic_task(size: int, seed: int):
    """Two-term additions posed with the short template (the reward ignores correctness, see REWARD)."""
    from bupo_core.tasks import Example, Task, get_template  # noqa: PLC0415

    rng = random.Random(seed)
    examples = []
    for i in range(size):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        examples.append(Example(f"What is {a} + {b}?", str(a + b), source=f"gpu_check:{i}"))
    return Task("gpu-check-synthetic", examples, get_template("short"), REWARD, seed)


# --------------------------------------------------------------------------- instrumentation
class PhaseMeter:
    """Wall time and peak GPU memory of named phases (CUDA synchronised at both ends)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.rows: dict[str, dict] = {}

    @contextmanager
    def phase(self, name: str):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            row = self.rows.setdefault(name, {"seconds": 0.0, "peak_allocated_gib": None, "peak_reserved_gib": None})
            row["seconds"] += time.perf_counter() - t0
            if self.cuda:
                alloc, res = torch.cuda.max_memory_allocated() / GiB, torch.cuda.max_memory_reserved() / GiB
                row["peak_allocated_gib"] = round(max(row["peak_allocated_gib"] or 0.0, alloc), 3)
                row["peak_reserved_gib"] = round(max(row["peak_reserved_gib"] or 0.0, res), 3)


def instrument(trainer, current: dict) -> list[str]:
    """Wrap generation, old-log-prob scoring and the update of ``trainer`` (once) in phases of
    ``current["meter"]`` (a :class:`PhaseMeter` replaced every step)."""
    import bupo_core.step as step_mod  # noqa: PLC0415

    wrapped = []
    for attr, name in (("generate", "generation"), ("score_batch", "scoring"), ("update_policy", "update")):
        fn = getattr(step_mod, attr, None)
        if fn is None:  # renamed: the trainer's own time_* metrics still split the step
            continue
        fn = getattr(fn, "_bench_original", fn)

        def timed(*args, _fn=fn, _name=name, **kwargs):
            with current["meter"].phase(_name):
                return _fn(*args, **kwargs)

        timed._bench_original = fn
        setattr(step_mod, attr, timed)
        wrapped.append(name)
    return wrapped


def make_trainer(model, tok, task, args, *, method: str, steps: int, inter_steps: int, prompts: int, max_new_tokens: int):
    from bupo_core.trainer import TrainConfig, Trainer  # noqa: PLC0415

    cfg = TrainConfig(
        model=args.model, task=task.name, task_kwargs={}, reward=REWARD, method=method,
        layer=args.layer if method == "bupo" else None, inter_steps=inter_steps, steps=steps, prompts_per_step=prompts,
        group_size=args.group_size, max_new_tokens=max_new_tokens, lr=args.lr, num_mini_batches=min(args.num_mini_batches, prompts),
        micro_batch_size=args.micro_batch_size, generation_batch_size=args.generation_batch_size,
        logprob_chunk_size=args.logprob_chunk_size, gradient_checkpointing=args.gradient_checkpointing,
        bf16_autocast="on", device=str(model.device), seed=args.seed, out_dir=tempfile.mkdtemp(prefix="gpu_check_"),
    )
    return Trainer(cfg, model=model, tokenizer=tok, task=task)


# --------------------------------------------------------------------------- part 1: the BuPO loop
def run_bupo_loop(model, tok, task, args, device) -> dict:
    from bupo_core.adapter import ArchitectureAdapter  # noqa: PLC0415
    from bupo_core.step import autocast as step_autocast  # noqa: PLC0415

    tr = make_trainer(model, tok, task, args, method="bupo", steps=args.inter_steps + args.full_steps,
                      inter_steps=args.inter_steps, prompts=args.prompts, max_new_tokens=args.max_new_tokens)
    assert all(p.dtype == torch.float32 for p in tr.model.parameters()), "master weights must be float32"
    autocast = step_autocast(tr)
    adapter = ArchitectureAdapter(tr.model)
    # snapshots on the CPU, so that they do not inflate the GPU peaks measured below
    upper = {n: p.detach().cpu().clone() for n, p in tr.model.named_parameters() if id(p) in {id(q) for q in adapter.upper_parameters(args.layer)}}
    lower_before = {n: p.detach().cpu().clone() for n, p in tr.model.named_parameters() if n not in upper}
    torch.manual_seed(args.seed)
    steps, upper_identical, lower_moved = [], True, False
    t_start = time.perf_counter()
    current: dict = {}
    wrapped = instrument(tr, current)
    for _ in range(tr.config.steps):
        if time.perf_counter() - t_start > args.time_budget_s * 0.6:
            break
        meter = current["meter"] = PhaseMeter(device)
        t_step = time.perf_counter()
        row = tr.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        meter.rows["step"] = {"seconds": time.perf_counter() - t_step}
        if row["phase"] == "internal":
            params = dict(tr.model.named_parameters())
            upper_identical &= all(torch.equal(params[n].detach().cpu(), v) for n, v in upper.items())
            lower_moved |= any(not torch.equal(params[n].detach().cpu(), v) for n, v in lower_before.items())
        tokens = row["response_length_mean"] * tr.config.prompts_per_step * tr.config.group_size
        gen = meter.rows.get("generation", {})
        steps.append({
            "step": row["step"], "phase": row["phase"], "updates": row["updates"], "reward_mean": row["reward_mean"],
            "response_length_mean": row["response_length_mean"], "response_tokens": int(tokens),
            "seconds": {
                "step": round(meter.rows["step"]["seconds"], 3),
                "generation": round(gen.get("seconds", row["time_generate"]), 3),
                "grading": round(row["time_score"], 3),
                "scoring": round(meter.rows["scoring"]["seconds"], 3) if "scoring" in meter.rows else None,
                "update": round(meter.rows["update"]["seconds"], 3) if "update" in meter.rows else None,
                "scoring_plus_update": round(row["time_update"], 3),
            },
            "tokens_per_s": round(tokens / meter.rows["step"]["seconds"], 1),
            "generation_tokens_per_s": round(tokens / gen["seconds"], 1) if gen.get("seconds") else None,
            "peak_gpu_gib": {k: meter.rows[k]["peak_allocated_gib"] for k in ("generation", "scoring", "update") if k in meter.rows},
            "peak_gpu_reserved_gib": {k: meter.rows[k]["peak_reserved_gib"] for k in ("generation", "scoring", "update") if k in meter.rows},
            "instrumented_phases": wrapped,
        })
        print(json.dumps(steps[-1]), flush=True)
    import bupo_core.step as step_mod  # noqa: PLC0415

    for attr in ("generate", "score_batch", "update_policy"):
        setattr(step_mod, attr, getattr(getattr(step_mod, attr), "_bench_original", getattr(step_mod, attr)))
    later = steps[1:] or steps  # the first step includes CUDA start-up costs
    med = lambda key: round(statistics.median(s["seconds"][key] for s in later if s["seconds"][key] is not None), 3) if any(s["seconds"][key] is not None for s in later) else None  # noqa: E731
    peaks = lambda key: max((s["peak_gpu_gib"].get(key) or 0.0) for s in steps) if device.type == "cuda" else None  # noqa: E731
    return {
        "settings": {"method": "bupo", "layer": args.layer, "inter_steps": args.inter_steps, "full_steps": args.full_steps,
                     "prompts_per_step": args.prompts, "group_size": args.group_size, "max_new_tokens": args.max_new_tokens,
                     "micro_batch_size": args.micro_batch_size, "gradient_checkpointing": args.gradient_checkpointing, "lr": args.lr},
        "master_weights_dtype": str(next(tr.model.parameters()).dtype),
        "autocast": f"{autocast.device}:{autocast.fast_dtype}" if isinstance(autocast, torch.autocast) else "off",
        "phases_run": [s["phase"] for s in steps],
        "switched_to_full": any(s["phase"] == "full" for s in steps) and steps[0]["phase"] == "internal",
        "upper_blocks_bit_identical_in_internal_phase": bool(upper_identical),
        "lower_blocks_moved_in_internal_phase": bool(lower_moved),
        "median_seconds_after_first_step": {k: med(k) for k in ("step", "generation", "grading", "scoring", "update")},
        "median_tokens_per_s_after_first_step": round(statistics.median(s["tokens_per_s"] for s in later), 1),
        "median_seconds_by_phase": {  # internal phase (blocks 1..l only in scoring/update) vs full GRPO
            ph: {k: round(statistics.median(s["seconds"][k] for s in steps if s["phase"] == ph), 3)
                 for k in ("step", "generation", "scoring", "update") if all(s["seconds"][k] is not None for s in steps if s["phase"] == ph)}
            for ph in ("internal", "full") if any(s["phase"] == ph for s in steps)
        },
        "peak_gpu_gib_generation": peaks("generation"),
        "peak_gpu_gib_update": peaks("update"),
        "steps": steps,
    }


# --------------------------------------------------------------------------- part 2: gpu_memory's configuration
def run_memory_config(model, tok, task, args, device) -> dict:
    out = {"settings": {"prompts": args.memory_prompts, "group_size": args.group_size, "max_new_tokens": args.memory_max_new_tokens,
                        "micro_batch_size": args.micro_batch_size, "generation_batch_size": args.generation_batch_size,
                        "logprob_chunk_size": args.logprob_chunk_size, "gradient_checkpointing": args.gradient_checkpointing},
           "phases": {}}
    gc.collect()  # part 1's trainer (optimizer states) must be gone before measuring
    for method in ("grpo", "bupo"):
        tr = make_trainer(model, tok, task, args, method=method, steps=2, inter_steps=1, prompts=args.memory_prompts,
                          max_new_tokens=args.memory_max_new_tokens)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        row = tr.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out["phases"][f"{method}_{row['phase']}"] = {
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GiB, 3) if device.type == "cuda" else None,
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GiB, 3) if device.type == "cuda" else None,
            "step_seconds": round(time.perf_counter() - t0, 2), "time_generate": round(row["time_generate"], 2),
            "time_update": round(row["time_update"], 2), "response_length_mean": row["response_length_mean"], "updates": row["updates"],
        }
        print(method, json.dumps(out["phases"][f"{method}_{row['phase']}"]), flush=True)
        del tr
        gc.collect()
    if device.type == "cuda":
        out["peak_gib"] = max(p["peak_reserved_gib"] for p in out["phases"].values())
        out["fits_24_gib"] = out["peak_gib"] < 24
    return out


def analytic_estimate(args) -> dict | None:
    """bench/gpu_memory.py's estimate of the same configuration, for comparison."""
    path = Path(__file__).with_name("gpu_memory.py")
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("gpu_memory", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    ns = argparse.Namespace(prompts=args.memory_prompts, group_size=args.group_size, max_new_tokens=args.memory_max_new_tokens,
                            prompt_tokens=128, micro_batch_size=args.micro_batch_size, generation_batch_size=args.generation_batch_size,
                            logprob_chunk_size=args.logprob_chunk_size)
    est = mod.estimate(ns)
    return {k: est[k] for k in ("estimated_peak_gib", "peak_training_gib", "peak_generation_gib", "components_gib")}


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--model", default="qwen3-0.6b", help="qwen3-0.6b (random weights from its config), tiny-random-<family>, or a local model folder")
    ap.add_argument("--layer", type=int, default=None, help="BuPO target layer (paper numbering); default min(6, L // 2): 6 for Qwen3-0.6B")
    ap.add_argument("--inter-steps", type=int, default=2)
    ap.add_argument("--full-steps", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=None, help="prompts per step (x G responses); default 4 on CUDA, 2 on CPU")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="response length; default 512 on CUDA, 48 on CPU")
    ap.add_argument("--memory-prompts", type=int, default=None, help="part 2 (gpu_memory.py's configuration): default 4 on CUDA, 1 on CPU")
    ap.add_argument("--memory-max-new-tokens", type=int, default=None, help="part 2: default 1024 on CUDA, 48 on CPU")
    ap.add_argument("--skip-memory-config", action="store_true")
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--generation-batch-size", type=int, default=32)
    ap.add_argument("--logprob-chunk-size", type=int, default=1024)
    ap.add_argument("--num-mini-batches", type=int, default=2)
    ap.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-budget-s", type=float, default=420.0, help="stop adding steps / skip part 2 past this (the H100 limit is 8 min)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu.json"))
    ap.add_argument("--memory-json", default=None, help="where part 2's measurement replaces the estimate (default on CUDA: bench/results/gpu_memory.json)")
    args = ap.parse_args(argv)

    from bupo_core.rewards import register_scorer  # noqa: PLC0415

    register_scorer(REWARD, lambda text, example: float(len(text) % 2 == 0))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"  # the CPU defaults only smoke-test the script: same code, smaller sizes
    for name, on_cuda, on_cpu in (("prompts", 4, 2), ("max_new_tokens", 512, 48), ("memory_prompts", 4, 1), ("memory_max_new_tokens", 1024, 48)):
        if getattr(args, name) is None:
            setattr(args, name, on_cuda if cuda else on_cpu)
    t0 = time.perf_counter()
    model, tok, desc = build_model(args.model, device, args.seed)
    if args.layer is None:
        from bupo_core.adapter import ArchitectureAdapter  # noqa: PLC0415

        args.layer = max(1, min(6, ArchitectureAdapter(model).num_layers // 2))
    task = synthetic_task(max(64, args.prompts * (args.inter_steps + args.full_steps)), args.seed)
    result = {
        "measured": True,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "model": desc, "parameters": sum(p.numel() for p in model.parameters()),
        "reward": "synthetic: parity of the reply's length (random weights cannot learn; cost and invariants only)",
        "bupo_loop": run_bupo_loop(model, tok, task, args, device),
    }
    elapsed = time.perf_counter() - t0
    if args.skip_memory_config:
        result["memory_config"] = {"skipped": "--skip-memory-config"}
    elif elapsed > args.time_budget_s * 0.6:
        result["memory_config"] = {"skipped": f"time budget: {elapsed:.0f} s used of {args.time_budget_s:.0f}"}
    else:
        result["memory_config"] = run_memory_config(model, tok, task, args, device)
        result["memory_config"]["analytic_estimate_for_comparison"] = (
            analytic_estimate(args) if args.model == "qwen3-0.6b" else "only for --model qwen3-0.6b (bench/gpu_memory.py models that configuration)"
        )
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    result["machine"] = {"platform": platform.platform(), "torch": torch.__version__,
                         "transformers": __import__("transformers").__version__, "cuda": torch.version.cuda}
    result["command"] = "python bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    memory_json = args.memory_json or (str(ROOT / "bench" / "results" / "gpu_memory.json") if device.type == "cuda" else None)
    mc = result["memory_config"]
    if memory_json and "phases" in mc:
        Path(memory_json).write_text(json.dumps({
            "measured": True, "produced_by": "bench/gpu_check.py (part 2)", "device": result["device"],
            "model": result["model"], "parameters": result["parameters"], "settings": mc["settings"], "phases": mc["phases"],
            "peak_gib": mc.get("peak_gib"), "fits_24_gib": mc.get("fits_24_gib"),
            "analytic_estimate_for_comparison": mc.get("analytic_estimate_for_comparison"), "machine": result["machine"],
        }, indent=1, default=str))
    loop = result["bupo_loop"]
    print(json.dumps({"out": args.out, "total_seconds": result["total_seconds"], "phases": loop["phases_run"],
                      "upper_blocks_bit_identical": loop["upper_blocks_bit_identical_in_internal_phase"],
                      "median_seconds": loop["median_seconds_after_first_step"],
                      "peak_gpu_gib_generation": loop["peak_gpu_gib_generation"], "peak_gpu_gib_update": loop["peak_gpu_gib_update"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
