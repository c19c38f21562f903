"""The single-GPU check: the full BuPO loop at the card's recipe, measured, in the precision the card gets.

Part 1 runs the whole BuPO loop with the trainer (``--inter-steps`` internal-phase steps on layer
``--layer``, the switch, then ``--full-steps`` GRPO steps) with the sizes of the card's recipe
(:func:`bupo_core.recipes.recipe_for_gpu`: T4 16 GB, 24 GB, 40-80 GB; any size can be overridden) in
the precision ``--precision`` (``auto``: bf16 on cards with compute capability >= 8.0, fp16 with
loss scaling below, fp32 without a GPU), and records per step: time split into generation /
grading / update (old log-probs + mini-batch updates), tokens per second of generation and of the
update separately, peak GPU memory of each phase, and whether the blocks above the target layer
(and the final norm) stayed bit-identical through the internal phase. Part 2 runs one GRPO step and
one BuPO internal-phase step at the sizes of ``--memory-recipe`` (default: the same recipe) and
reports the measured peak next to the estimate of :func:`bupo_core.recipes.estimate_memory`, and
whether it fits 16 / 24 / 40 / 80 GB cards.

Self-contained on purpose: it needs only ``torch`` and ``transformers`` plus the ``bupo_core`` folder
of this repository (no network, no reasoning-gym, math-verify, gguf or datasets, no embedded model).
Models: ``random-qwen3-0.6b`` (the real Qwen3-0.6B configuration, random weights, a byte-level
tokenizer built here; alias ``qwen3-0.6b``), ``random-smollm2-135m`` (the embedded SmolLM2-135M's
configuration, random weights), ``tiny-random-<family>``, or any name :func:`bupo_core.models.load_model`
takes (the embedded ``smollm2-135m-instruct`` needs its converted weights). The task is synthetic
arithmetic and the reward is random-like (parity of the reply's length), so that groups have mixed
rewards and every update runs. It measures cost and invariants, not learning.

    python bench/gpu_check.py                                 # CUDA: the card's recipe, writes bench/results/gpu.json
    python bench/gpu_check.py --precision fp16 --device cpu --model tiny-random-qwen3 --out /tmp/gpu_check.json   # CPU smoke run
    bash bench/gpu_device.sh OUT_DIR                          # the GPU session: bf16 and fp16, embedded model and Qwen3-0.6B
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's bupo_core (carried with the script), not an installed one

import torch  # noqa: E402

GiB = 2**30
QWEN3_0_6B = dict(  # the Qwen3-0.6B configuration (Qwen/Qwen3-0.6B's config.json); weights are random
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
SMOLLM2_135M = dict(  # the embedded SmolLM2-135M-Instruct's configuration (Llama family); ids of the specials moved
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    max_position_embeddings=8192,
    rope_theta=100_000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    bos_token_id=49150,
    eos_token_id=49151,
    pad_token_id=49150,
)
RANDOM_MODELS = {
    "random-qwen3-0.6b": ("qwen3", QWEN3_0_6B),
    "qwen3-0.6b": ("qwen3", QWEN3_0_6B),
    "random-smollm2-135m": ("llama", SMOLLM2_135M),
}
# usable memory of the cards (what torch reports as total_memory): T4 16 GB, L4/A10 24 GB, A100 40 GB, A100/H100 80 GB
CARD_GIB = {"16": 14.7, "24": 22.0, "40": 39.4, "80": 79.1}
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
        raise ValueError(
            f"special token ids {sorted(specials)} must be >= {len(alphabet)} (the byte symbols come first)"
        )
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
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config  # noqa: PLC0415

    torch.manual_seed(seed)
    if name in RANDOM_MODELS:
        family, fields = RANDOM_MODELS[name]
        cfg = (Qwen3Config if family == "qwen3" else LlamaConfig)(**fields)
        desc = f"{name}: the {'Qwen3-0.6B' if family == 'qwen3' else 'SmolLM2-135M'} configuration, random weights, byte-level tokenizer"
    elif name.startswith("tiny-random-"):
        from bupo_core.models import tiny_config  # noqa: PLC0415

        cfg = tiny_config(name.removeprefix("tiny-random-"), vocab_size=512, num_layers=4)
        cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = 258, 256, 257
        cfg.max_position_embeddings = 4096  # room for the default 1,024-token responses
        desc = f"{name} (4 layers, vocab 512), random weights"
    else:  # an embedded name, a local folder or a hub id (needs the weights at hand)
        from bupo_core.models import load_model  # noqa: PLC0415

        model, tok = load_model(name, device=str(device), dtype=torch.float32)
        return model, tok, name
    with torch.device(device):  # initialise the random weights on the device directly (fast on a GPU)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
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


# --------------------------------------------------------------------------- sizes
SIZE_KEYS = ("prompts", "max_new_tokens", "generation_batch_size", "micro_batch_size", "logprob_chunk_size")


def recipe_sizes(name: str) -> dict:
    """The sizes of recipe ``name`` (bupo_core.recipes) as this script's settings."""
    from bupo_core.recipes import build_recipe  # noqa: PLC0415

    s = build_recipe(name, out_root=tempfile.gettempdir()).settings
    return {
        "recipe": name,
        "prompts": s["prompts_per_step"],
        "max_new_tokens": s["max_new_tokens"],
        "precision": s["precision"],
        "generation_batch_size": s["generation_batch_size"],
        "micro_batch_size": s["micro_batch_size"],
        "logprob_chunk_size": s["logprob_chunk_size"],
        "group_size": s["group_size"],
    }


CPU_SIZES = {
    "recipe": "cpu-smoke",
    "prompts": 2,
    "max_new_tokens": 48,
    "generation_batch_size": 16,
    "micro_batch_size": 8,
    "logprob_chunk_size": 1024,
    "group_size": 8,
    "precision": "fp32",
}


def card_recipe(device: torch.device) -> str | None:
    """The recipe of the visible card (``None`` off CUDA)."""
    if device.type != "cuda":
        return None
    from bupo_core.recipes import recipe_for_gpu  # noqa: PLC0415

    props = torch.cuda.get_device_properties(device)
    return recipe_for_gpu(props.name, props.total_memory / GiB).name


# --------------------------------------------------------------------------- instrumentation
class PhaseMeter:
    """Peak GPU memory and wall time of generation vs. the rest of a step (scoring + update)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.rows: dict[str, dict] = {}

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def start(self) -> None:
        self._sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.t = time.perf_counter()

    def stop(self, name: str) -> None:
        self._sync()
        row = self.rows.setdefault(name, {"seconds": 0.0, "peak_allocated_gib": None, "peak_reserved_gib": None})
        row["seconds"] += time.perf_counter() - self.t
        if self.cuda:
            alloc, res = torch.cuda.max_memory_allocated() / GiB, torch.cuda.max_memory_reserved() / GiB
            row["peak_allocated_gib"] = round(max(row["peak_allocated_gib"] or 0.0, alloc), 3)
            row["peak_reserved_gib"] = round(max(row["peak_reserved_gib"] or 0.0, res), 3)
            torch.cuda.reset_peak_memory_stats()
        self.t = time.perf_counter()


def instrument_generation(current: dict) -> list:
    """Wrap ``generate`` wherever a bupo_core module bound it, so each call is its own phase."""
    import bupo_core.rollout as rollout  # noqa: PLC0415

    original = rollout.generate

    def generate(*args, **kwargs):
        meter = current["meter"]
        meter.stop("before_generation")
        try:
            return original(*args, **kwargs)
        finally:
            meter.stop("generation")

    patched = []
    for name, mod in list(sys.modules.items()):
        if name.startswith("bupo_core") and getattr(mod, "generate", None) is original:
            mod.generate = generate
            patched.append((mod, original))
    return patched


def restore(patched: list) -> None:
    for mod, original in patched:
        mod.generate = original


def make_trainer(model, tok, task, args, sizes: dict, *, method: str, steps: int, inter_steps: int):
    from bupo_core.trainer import TrainConfig, Trainer  # noqa: PLC0415

    cfg = TrainConfig(
        model=args.model,
        task=task.name,
        task_kwargs={},
        reward=REWARD,
        method=method,
        layer=args.layer if method == "bupo" else None,
        inter_steps=inter_steps,
        steps=steps,
        prompts_per_step=sizes["prompts"],
        group_size=sizes["group_size"],
        max_new_tokens=sizes["max_new_tokens"],
        lr=args.lr,
        num_mini_batches=min(args.num_mini_batches, sizes["prompts"]),
        micro_batch_size=sizes["micro_batch_size"],
        generation_batch_size=sizes["generation_batch_size"],
        logprob_chunk_size=sizes["logprob_chunk_size"],
        gradient_checkpointing=args.gradient_checkpointing,
        precision=sizes["precision"],
        device=str(model.device),
        seed=args.seed,
        out_dir=tempfile.mkdtemp(prefix="gpu_check_"),
    )
    return Trainer(cfg, model=model, tokenizer=tok, task=task)


def fits(peak_gib: float | None) -> dict | None:
    """Whether a measured peak (reserved, plus ~0.5 GiB of CUDA context) fits each card size."""
    if peak_gib is None:
        return None
    return {f"{k}_gb": peak_gib + 0.5 <= v for k, v in CARD_GIB.items()}


def timed_step(tr, device, current) -> tuple[dict, PhaseMeter, float]:
    meter = current["meter"] = PhaseMeter(device)
    meter.start()
    t0 = time.perf_counter()
    row = tr.train_step()
    meter.stop("update")  # everything after generation: grading, old log-probs, mini-batch updates
    return row, meter, time.perf_counter() - t0


def precision_info(tr) -> dict:
    choice = tr.precision
    return {"mode": choice.mode, "reason": choice.reason, "loss_scale": tr.scaler.scale}


# --------------------------------------------------------------------------- part 1: the BuPO loop
def run_bupo_loop(model, tok, task, args, sizes: dict, device) -> dict:
    from bupo_core.adapter import ArchitectureAdapter  # noqa: PLC0415

    tr = make_trainer(
        model,
        tok,
        task,
        args,
        sizes,
        method="bupo",
        steps=args.inter_steps + args.full_steps,
        inter_steps=args.inter_steps,
    )
    assert all(p.dtype == torch.float32 for p in tr.model.parameters()), "master weights must be float32"
    adapter = ArchitectureAdapter(tr.model)
    # snapshots on the CPU, so that they do not inflate the GPU peaks measured below
    upper_ids = {id(q) for q in adapter.upper_parameters(args.layer)}
    upper = {n: p.detach().cpu().clone() for n, p in tr.model.named_parameters() if id(p) in upper_ids}
    lower_before = {n: p.detach().cpu().clone() for n, p in tr.model.named_parameters() if n not in upper}
    torch.manual_seed(args.seed)
    steps, upper_identical, lower_moved = [], True, False
    t_start = time.perf_counter()
    current: dict = {}
    patched = instrument_generation(current)
    try:
        for _ in range(tr.config.steps):
            if time.perf_counter() - t_start > args.time_budget_s * 0.6:
                break
            row, meter, seconds = timed_step(tr, device, current)
            if row["phase"] == "internal":
                params = dict(tr.model.named_parameters())
                upper_identical &= all(torch.equal(params[n].detach().cpu(), v) for n, v in upper.items())
                lower_moved |= any(not torch.equal(params[n].detach().cpu(), v) for n, v in lower_before.items())
            tokens = int(round(row["response_length_mean"] * tr.config.prompts_per_step * tr.config.group_size))
            gen, upd = meter.rows.get("generation", {}), meter.rows.get("update", {})
            steps.append(
                {
                    "step": row["step"],
                    "phase": row["phase"],
                    "updates": row["updates"],
                    "reward_mean": row["reward_mean"],
                    "response_length_mean": row["response_length_mean"],
                    "response_tokens": tokens,
                    "seconds": {
                        "step": round(seconds, 3),
                        "generation": round(gen.get("seconds", row["time_generate"]), 3),
                        "grading": round(row["time_score"], 3),
                        "update": round(row["time_update"], 3),
                    },
                    "tokens_per_s": round(tokens / seconds, 1),
                    "generation_tokens_per_s": round(tokens / gen["seconds"], 1) if gen.get("seconds") else None,
                    "update_tokens_per_s": round(tokens / row["time_update"], 1) if row["time_update"] > 0 else None,
                    "peak_gpu_gib": {
                        "generation": gen.get("peak_allocated_gib"),
                        "update": upd.get("peak_allocated_gib"),
                    },
                    "peak_gpu_reserved_gib": {
                        "generation": gen.get("peak_reserved_gib"),
                        "update": upd.get("peak_reserved_gib"),
                    },
                    "loss_scale": tr.scaler.scale,
                }
            )
            print(json.dumps(steps[-1]), flush=True)
    finally:
        restore(patched)
    later = steps[1:] or steps  # the first step includes CUDA start-up costs

    def med(key, src="seconds"):
        return round(statistics.median(s[src][key] for s in later), 3)

    def med_rate(key):
        if not any(s[key] for s in later):
            return None
        return round(statistics.median(s[key] for s in later if s[key] is not None), 1)

    def peak(key):
        return max((s["peak_gpu_reserved_gib"].get(key) or 0.0) for s in steps) if device.type == "cuda" else None

    peak_all = max(peak("generation") or 0.0, peak("update") or 0.0) if device.type == "cuda" else None
    return {
        "settings": {
            "method": "bupo",
            "layer": args.layer,
            "inter_steps": args.inter_steps,
            "full_steps": args.full_steps,
            **sizes,
            "gradient_checkpointing": args.gradient_checkpointing,
            "lr": args.lr,
        },
        "master_weights_dtype": str(next(tr.model.parameters()).dtype),
        "precision": precision_info(tr),
        "phases_run": [s["phase"] for s in steps],
        "switched_to_full": any(s["phase"] == "full" for s in steps) and steps[0]["phase"] == "internal",
        "upper_blocks_bit_identical_in_internal_phase": bool(upper_identical),
        "lower_blocks_moved_in_internal_phase": bool(lower_moved),
        "median_seconds_after_first_step": {k: med(k) for k in ("step", "generation", "grading", "update")},
        "median_tokens_per_s_after_first_step": {
            "step": med_rate("tokens_per_s"),
            "generation": med_rate("generation_tokens_per_s"),
            "update": med_rate("update_tokens_per_s"),
        },
        "median_seconds_by_phase": {  # internal phase (blocks 1..l only in scoring/update) vs full GRPO
            ph: {
                k: round(statistics.median(s["seconds"][k] for s in steps if s["phase"] == ph), 3)
                for k in ("step", "generation", "update")
            }
            for ph in ("internal", "full")
            if any(s["phase"] == ph for s in steps)
        },
        "peak_gpu_reserved_gib": {"generation": peak("generation"), "update": peak("update")},
        "fits": fits(peak_all),
        "steps": steps,
    }


# --------------------------------------------------------------------------- part 2: one step of each phase at a recipe's sizes
def run_memory_config(model, tok, task, args, sizes: dict, device) -> dict:
    from bupo_core.recipes import ModelShape, estimate_memory  # noqa: PLC0415

    out = {"settings": {**sizes, "gradient_checkpointing": args.gradient_checkpointing}, "phases": {}}
    gc.collect()  # part 1's trainer (optimizer states) must be gone before measuring
    for method in ("grpo", "bupo"):
        tr = make_trainer(model, tok, task, args, sizes, method=method, steps=2, inter_steps=1)  # one step is run
        if device.type == "cuda":
            torch.cuda.empty_cache()
        current: dict = {}
        patched = instrument_generation(current)
        try:
            row, meter, seconds = timed_step(tr, device, current)
        finally:
            restore(patched)
        gen, upd = meter.rows.get("generation", {}), meter.rows.get("update", {})
        tokens = int(round(row["response_length_mean"] * tr.config.prompts_per_step * tr.config.group_size))
        out["phases"][f"{method}_{row['phase']}"] = {
            "peak_reserved_gib": {"generation": gen.get("peak_reserved_gib"), "update": upd.get("peak_reserved_gib")},
            "peak_allocated_gib": {
                "generation": gen.get("peak_allocated_gib"),
                "update": upd.get("peak_allocated_gib"),
            },
            "step_seconds": round(seconds, 2),
            "time_generate": round(row["time_generate"], 2),
            "time_update": round(row["time_update"], 2),
            "generation_tokens_per_s": round(tokens / max(row["time_generate"], 1e-9), 1),
            "update_tokens_per_s": round(tokens / max(row["time_update"], 1e-9), 1),
            "response_length_mean": row["response_length_mean"],
            "updates": row["updates"],
            "precision": precision_info(tr),
        }
        print(method, json.dumps(out["phases"][f"{method}_{row['phase']}"]), flush=True)
        del tr
        gc.collect()
    if device.type == "cuda":
        out["peak_gib"] = max(v or 0.0 for p in out["phases"].values() for v in p["peak_reserved_gib"].values())
        out["fits"] = fits(out["peak_gib"])
    mode = out["phases"]["grpo_full"]["precision"]["mode"]
    est = estimate_memory(
        ModelShape.from_config(model.config, args.model),
        precision=mode,
        max_new_tokens=sizes["max_new_tokens"],
        group_size=sizes["group_size"],
        generation_batch_size=sizes["generation_batch_size"],
        micro_batch_size=sizes["micro_batch_size"],
        logprob_chunk_size=sizes["logprob_chunk_size"],
        gradient_checkpointing=args.gradient_checkpointing,
        prompt_tokens=args.prompt_tokens_estimate,
    )
    out["estimate_for_comparison"] = est.summary()
    return out


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument(
        "--model",
        default="random-qwen3-0.6b",
        help="random-qwen3-0.6b (Qwen3-0.6B's configuration, random weights), random-smollm2-135m, tiny-random-<family>, "
        "an embedded name (smollm2-135m-instruct) or a local model folder",
    )
    ap.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp16", "fp32"],
        help="auto: bf16 on compute capability >= 8.0, fp16 with loss scaling below, fp32 on CPU (default: the recipe's, i.e. auto)",
    )
    ap.add_argument(
        "--recipe", default=None, help="t4-16gb, 24gb or 40-80gb (default: the visible card's; small CPU sizes on CPU)"
    )
    ap.add_argument("--memory-recipe", default=None, help="part 2's sizes (default: the same as part 1)")
    ap.add_argument(
        "--layer",
        type=int,
        default=None,
        help="BuPO target layer (paper numbering); default min(6, L // 2): 6 for Qwen3-0.6B",
    )
    ap.add_argument("--inter-steps", type=int, default=2)
    ap.add_argument("--full-steps", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=None, help="prompts per step (x G responses); default: the recipe's")
    ap.add_argument("--group-size", type=int, default=None, help="G; default: the recipe's (8)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="response length; default: the recipe's")
    ap.add_argument(
        "--generation-batch-size",
        type=int,
        default=None,
        help="part 1: sequences per generate call; default: the recipe's (part 2 keeps its recipe's)",
    )
    ap.add_argument("--micro-batch-size", type=int, default=None)
    ap.add_argument("--logprob-chunk-size", type=int, default=None)
    ap.add_argument(
        "--memory-prompts", type=int, default=None, help="part 2: prompts per step (default: part 2's recipe)"
    )
    ap.add_argument(
        "--memory-max-new-tokens", type=int, default=None, help="part 2: response length (default: part 2's recipe)"
    )
    ap.add_argument("--skip-memory-config", action="store_true")
    ap.add_argument("--num-mini-batches", type=int, default=2)
    ap.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--prompt-tokens-estimate",
        type=int,
        default=32,
        help="prompt length the estimate assumes (the synthetic prompts are ~25 tokens)",
    )
    ap.add_argument("--time-budget-s", type=float, default=420.0, help="stop adding steps / skip part 2 past this")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu.json"))
    args = ap.parse_args(argv)

    from bupo_core.precision import check_precision  # noqa: PLC0415
    from bupo_core.rewards import register_scorer  # noqa: PLC0415

    check_precision(args.precision)
    register_scorer(REWARD, lambda text, example: float(len(text) % 2 == 0))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but no CUDA GPU is visible; use --device cpu", file=sys.stderr)
        return 2
    name = args.recipe or card_recipe(device)
    sizes = recipe_sizes(name) if name else dict(CPU_SIZES)
    for key in (*SIZE_KEYS, "group_size"):
        if getattr(args, key, None) is not None:
            sizes[key] = getattr(args, key)
    sizes["precision"] = args.precision
    mem_name = args.memory_recipe or name
    mem_sizes = recipe_sizes(mem_name) if mem_name else dict(CPU_SIZES, prompts=1)
    mem_sizes.update(precision=sizes["precision"], group_size=sizes["group_size"])
    if args.memory_prompts is not None:
        mem_sizes["prompts"] = args.memory_prompts
    if args.memory_max_new_tokens is not None:
        mem_sizes["max_new_tokens"] = args.memory_max_new_tokens
    t0 = time.perf_counter()
    model, tok, desc = build_model(args.model, device, args.seed)
    if args.layer is None:
        from bupo_core.adapter import ArchitectureAdapter  # noqa: PLC0415

        args.layer = max(1, min(6, ArchitectureAdapter(model).num_layers // 2))
    task = synthetic_task(max(64, sizes["prompts"] * (args.inter_steps + args.full_steps + 2)), args.seed)
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    result = {
        "measured": True,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()})",
        "compute_capability": list(capability) if capability else None,
        "total_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / GiB, 2)
        if device.type == "cuda"
        else None,
        "model": desc,
        "parameters": sum(p.numel() for p in model.parameters()),
        "reward": "synthetic: parity of the reply's length (random weights cannot learn; cost and invariants only)",
        "bupo_loop": run_bupo_loop(model, tok, task, args, sizes, device),
    }
    elapsed = time.perf_counter() - t0
    if args.skip_memory_config:
        result["memory_config"] = {"skipped": "--skip-memory-config"}
    elif elapsed > args.time_budget_s * 0.6:
        result["memory_config"] = {"skipped": f"time budget: {elapsed:.0f} s used of {args.time_budget_s:.0f}"}
    else:
        result["memory_config"] = run_memory_config(model, tok, task, args, mem_sizes, device)
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    result["machine"] = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "cuda": torch.version.cuda,
    }
    result["command"] = "python bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    loop = result["bupo_loop"]
    print(
        json.dumps(
            {
                "out": args.out,
                "total_seconds": result["total_seconds"],
                "precision": loop["precision"],
                "phases": loop["phases_run"],
                "upper_blocks_bit_identical": loop["upper_blocks_bit_identical_in_internal_phase"],
                "median_tokens_per_s": loop["median_tokens_per_s_after_first_step"],
                "peak_gpu_reserved_gib": loop["peak_gpu_reserved_gib"],
                "fits": loop["fits"],
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
