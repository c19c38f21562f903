"""Training recipes sized to the card, and the memory estimate they are sized with.

:func:`recipe_for_gpu` picks one recipe from the GPU's name and memory (:func:`detect_recipe` reads
them from torch): a T4 recipe (16 GB, Colab's free tier), a 24 GB recipe (L4, A10) and a 40-80 GB
recipe (A100, H100). Each is a set of :class:`~bupo_core.trainer.TrainConfig` settings plus

* its estimated peak memory (:func:`estimate_memory`, part by part, for the precision the card gets),
* its estimated seconds per step (:func:`estimate_step_seconds`, stated assumptions per card),
* how many steps fit a 90-minute Colab session, and checkpoint settings for a run that spans
  several sessions: the last ``keep_checkpoints`` kept, written to a mounted Google Drive folder
  when there is one, so a disconnected session resumes from there (``Trainer(..., resume=True)``).

The memory estimate counts what runs in this package's code:

* float32 master weights, gradients and AdamW's two moments (4 + 4 + 8 bytes per parameter);
* under bf16/fp16 autocast, the cached low-precision copies of the block weights (2 bytes per
  parameter; the unembedding is not cast in the update: the policy head runs in float32);
* generation: the KV cache of ``generation_batch_size`` rows in the compute dtype, the prefill's
  logits of the last position only (``logits_to_keep=1``, see :mod:`bupo_core.rollout`), and the
  sampler's per-step float32 [rows x vocab] blocks;
* the update: checkpointed block inputs (float32 residual stream) and one block's recompute, the
  policy head's backward (:class:`bupo_core.policy_head._ChunkedLogProbEntropy`): six float32
  [chunk x vocab] blocks alive at its peak (logits, log-probs, probabilities, the gradient dL/dz and
  two temporaries of the entropy term; counted by ``tests/test_recipes.py``) plus the float32
  ``g_w`` [vocab x d] accumulator, with ``chunk = min(logprob_chunk_size, micro-batch tokens)``;
* the CUDA context and allocator slack (a fixed 1.5 GiB).

Seconds per step are an ESTIMATE until ``bench/gpu_check.py`` measures the card
(``bench/results/gpu.json``); the assumptions are in :data:`CARDS`.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .trainer import TrainConfig

GiB = 2**30
SESSION_MINUTES = 90.0  # a Colab session (free tier: up to ~90 min idle-free, often less)
SESSION_SETUP_MINUTES = 8.0  # install cell, model download, first-step start-up
CONTEXT_AND_SLACK_GIB = 1.5
HEAD_BACKWARD_BLOCKS = (
    6  # float32 [chunk x vocab] blocks alive at once in the policy head's backward (measured, tests/test_recipes.py)
)
HEAD_FORWARD_BLOCKS = 3  # z, log-probs, probabilities in the forward
SAMPLER_BLOCKS = (
    5  # per decoding step: lm_head output, its float32 copy, our entropy's softmax, the warped scores, probabilities
)
PREFILL_LOGITS_TO_KEEP = 1  # rollout's shared prefill keeps the last position's logits only
DRIVE_ROOT = Path("/content/drive/MyDrive")


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs of a decoder-only model."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied_embeddings: bool = True
    qk_norm: bool = False

    @property
    def parameters(self) -> int:
        """Parameter count (embeddings + blocks + final norm; + an untied unembedding)."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        attn = (
            d * self.num_heads * hd
            + 2 * d * self.num_kv_heads * hd
            + self.num_heads * hd * d
            + (2 * hd if self.qk_norm else 0)
        )
        block = attn + 3 * d * f + 2 * d
        emb = self.vocab_size * d
        return emb * (1 if self.tied_embeddings else 2) + self.num_layers * block + d

    @property
    def unembedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size

    @classmethod
    def from_config(cls, config: Any, name: str | None = None) -> ModelShape:
        """From a ``transformers`` config (Llama, Qwen2/3, Mistral, Gemma-style fields)."""
        heads = config.num_attention_heads
        return cls(
            name=name or getattr(config, "name_or_path", "") or type(config).__name__,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", heads) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
            qk_norm=getattr(config, "model_type", "") == "qwen3",
        )


QWEN3_0_6B = ModelShape("Qwen/Qwen3-0.6B", 151936, 1024, 3072, 28, 16, 8, 128, True, True)
SMOLLM2_135M = ModelShape("smollm2-135m-instruct", 49152, 576, 1536, 30, 9, 3, 64, True, False)
SHAPES = {s.name: s for s in (QWEN3_0_6B, SMOLLM2_135M)}


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak GPU memory of one training step, part by part (bytes).

    Attributes:
        generation: parts alive during generation.
        update: parts alive during the update (forward + backward of a micro-batch).
        head_chunk_rows: rows of one [chunk x vocab] block of the policy head.
    """

    generation: dict[str, int]
    update: dict[str, int]
    head_chunk_rows: int
    precision: str

    @property
    def generation_gib(self) -> float:
        return sum(self.generation.values()) / GiB

    @property
    def update_gib(self) -> float:
        return sum(self.update.values()) / GiB

    @property
    def peak_gib(self) -> float:
        return max(self.generation_gib, self.update_gib)

    def fits(self, memory_gib: float) -> bool:
        return self.peak_gib <= memory_gib

    def summary(self) -> dict:
        return {
            "precision": self.precision,
            "peak_gib": round(self.peak_gib, 2),
            "generation_gib": round(self.generation_gib, 2),
            "update_gib": round(self.update_gib, 2),
            "head_chunk_rows": self.head_chunk_rows,
            "generation_parts_gib": {k: round(v / GiB, 3) for k, v in self.generation.items()},
            "update_parts_gib": {k: round(v / GiB, 3) for k, v in self.update.items()},
        }


def estimate_memory(
    shape: ModelShape,
    *,
    precision: str = "bf16",
    prompt_tokens: int = 128,
    max_new_tokens: int = 1024,
    group_size: int = 8,
    generation_batch_size: int = 32,
    micro_batch_size: int = 8,
    logprob_chunk_size: int = 1024,
    gradient_checkpointing: bool = True,
) -> MemoryEstimate:
    """Peak memory of a training step of ``shape`` (see the module docstring for what is counted).

    >>> e = estimate_memory(QWEN3_0_6B, precision="fp16", max_new_tokens=512, generation_batch_size=16,
    ...                     micro_batch_size=4, logprob_chunk_size=128)
    >>> e.update["head_backward_blocks_fp32"] == 6 * 128 * 151936 * 4, e.peak_gib <= 13
    (True, True)
    """
    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be bf16, fp16 or fp32 for an estimate, got {precision!r}")
    P, V, d, f, L = shape.parameters, shape.vocab_size, shape.hidden_size, shape.intermediate_size, shape.num_layers
    low = precision != "fp32"
    cb = 2 if low else 4  # bytes per element of the compute dtype
    T = prompt_tokens + max_new_tokens
    weights = {"weights_fp32": 4 * P, "adamw_moments_fp32": 8 * P}
    # generation (grads are freed between updates: zero_grad(set_to_none=True))
    rows = max(1, generation_batch_size)
    prompts_in_batch = max(1, math.ceil(rows / group_size))
    kv = rows * T * L * 2 * shape.num_kv_heads * shape.head_dim * cb
    gen = dict(weights)
    if low:
        gen["autocast_weight_copies"] = 2 * P  # the lm_head runs under autocast in generate: every weight is cast
    gen["kv_cache"] = kv
    gen["prefill_last_logits"] = prompts_in_batch * PREFILL_LOGITS_TO_KEEP * V * 4
    gen["prefill_activations"] = prompts_in_batch * prompt_tokens * (2 * d * 4 + 3 * f * cb)
    gen["sampler_blocks_fp32"] = SAMPLER_BLOCKS * rows * V * 4
    gen["cuda_context_and_slack"] = int(CONTEXT_AND_SLACK_GIB * GiB)
    # update: one micro-batch forward + backward
    mb_tokens = micro_batch_size * T
    chunk = max(1, min(logprob_chunk_size, micro_batch_size * max_new_tokens))
    upd = {"weights_fp32": 4 * P, "grads_fp32": 4 * P, "adamw_moments_fp32": 8 * P}
    if low:
        upd["autocast_weight_copies"] = 2 * (P - shape.unembedding_parameters)  # the head is float32, E_u not cast
    per_block = mb_tokens * (12 * d + 4 * f) * cb  # saved activations of one block under autocast
    if gradient_checkpointing:
        upd["checkpointed_block_inputs_fp32"] = L * mb_tokens * d * 4
        upd["one_block_recompute"] = per_block
    else:
        upd["block_activations"] = L * per_block
    upd["final_hidden_fp32"] = 2 * mb_tokens * d * 4
    upd["head_backward_blocks_fp32"] = HEAD_BACKWARD_BLOCKS * chunk * V * 4
    upd["head_g_w_accumulator_fp32"] = V * d * 4
    upd["cuda_context_and_slack"] = int(CONTEXT_AND_SLACK_GIB * GiB)
    return MemoryEstimate(gen, upd, chunk, precision)


# --------------------------------------------------------------------------- cards and time
@dataclass(frozen=True)
class Card:
    """Throughput assumptions for one GPU (ESTIMATES, replaced by measurements in bench/results/gpu.json).

    Attributes:
        memory_gib: usable memory.
        capability: CUDA compute capability (decides the precision).
        low_precision_tflops: sustained bf16/fp16 matmul rate we assume for the blocks (about a
            third of the tensor-core peak: small matrices, HF eager kernels).
        fp32_tflops: sustained float32 rate (the policy head runs in float32).
        bandwidth_gbs: memory bandwidth (decoding reads every weight once per token).
        decode_overhead_ms_per_layer: kernel-launch / Python time per layer per decoding step
            (HF ``generate`` is launch-bound for small models).
    """

    name: str
    memory_gib: float
    capability: tuple[int, int]
    low_precision_tflops: float
    fp32_tflops: float
    bandwidth_gbs: float
    decode_overhead_ms_per_layer: float = 0.6


CARDS: dict[str, Card] = {
    "T4": Card("T4", 15.0, (7, 5), 20.0, 5.0, 300.0, 0.8),
    "L4": Card("L4", 22.5, (8, 9), 40.0, 20.0, 300.0, 0.6),
    "A10": Card("A10", 22.5, (8, 6), 40.0, 20.0, 600.0, 0.6),
    "A100": Card("A100", 40.0, (8, 0), 110.0, 15.0, 1555.0, 0.5),
    "H100": Card("H100", 80.0, (9, 0), 300.0, 40.0, 3350.0, 0.4),
}


def estimate_step_seconds(
    shape: ModelShape,
    card: Card,
    *,
    prompts_per_step: int,
    group_size: int,
    max_new_tokens: int,
    prompt_tokens: int = 128,
    generation_batch_size: int = 32,
    gradient_checkpointing: bool = True,
    precision: str = "bf16",
) -> dict[str, float]:
    """Seconds of generation and of the update (old log-probs + forward/backward) of one step.

    Generation: ``calls x max_new_tokens`` decoding steps, each the larger of the per-layer launch
    overhead and reading the compute-dtype weights plus the KV cache once. Update: FLOPs of a
    scoring forward (2 P per token), forward + backward (6 P) and, with checkpointing, a recompute
    (2 P) for the blocks in the compute dtype, and the float32 head (2 V d per token in the scoring
    and the forward, 4 V d in its backward, 2 V d for its recompute), at the card's sustained rates.
    """
    rows = prompts_per_step * group_size
    calls = math.ceil(rows / generation_batch_size)
    cb = 2 if precision != "fp32" else 4
    T = prompt_tokens + max_new_tokens
    kv_bytes = generation_batch_size * T / 2 * shape.num_layers * 2 * shape.num_kv_heads * shape.head_dim * cb
    per_token = max(
        shape.num_layers * card.decode_overhead_ms_per_layer / 1000,
        (shape.parameters * cb + kv_bytes) / (card.bandwidth_gbs * 1e9),
    )
    gen = calls * max_new_tokens * per_token
    tokens = rows * (prompt_tokens + max_new_tokens)
    response_tokens = rows * max_new_tokens
    block_params = shape.parameters - shape.unembedding_parameters
    block_flops = tokens * block_params * (2 + 6 + (2 if gradient_checkpointing else 0))
    head_flops = response_tokens * shape.unembedding_parameters * (2 + 2 + 4 + 2)
    block_rate = (card.low_precision_tflops if precision != "fp32" else card.fp32_tflops) * 1e12
    update = block_flops / block_rate + head_flops / (card.fp32_tflops * 1e12)
    return {"generation": round(gen, 1), "update": round(update, 1), "step": round(gen + update, 1)}


# --------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """A training configuration sized to a card, with its estimates.

    Attributes:
        name: ``"t4-16gb"``, ``"24gb"``, ``"40-80gb"``.
        cards: the GPUs it is for.
        settings: :class:`~bupo_core.trainer.TrainConfig` fields (model, sizes, precision, checkpoints).
        memory: the corrected memory estimate.
        seconds_per_step: estimated generation / update / step seconds on ``card``.
        steps_per_session: steps that fit one 90-minute Colab session after setup.
        card: the card the time estimate assumes.
    """

    name: str
    cards: str
    settings: dict
    memory: MemoryEstimate
    seconds_per_step: dict
    steps_per_session: int
    card: str
    notes: str = ""

    def train_config(self, **overrides: Any):
        """The :class:`~bupo_core.trainer.TrainConfig` of this recipe (``overrides`` win)."""
        return TrainConfig(**{**self.settings, **overrides})

    def describe(self) -> str:
        s = self.settings
        t = self.seconds_per_step
        return (
            f"recipe {self.name} ({self.cards}): {s['model']}, precision {s['precision']}, "
            f"{s['prompts_per_step']} prompts x G={s['group_size']}, "
            f"{s['max_new_tokens']} response tokens, generation batch {s['generation_batch_size']}, micro-batch {s['micro_batch_size']}, "
            f"head chunk {s['logprob_chunk_size']}, gradient checkpointing {'on' if s['gradient_checkpointing'] else 'off'}; "
            f"estimated peak {self.memory.peak_gib:.1f} GiB "
            f"(generation {self.memory.generation_gib:.1f}, update {self.memory.update_gib:.1f}); "
            f"ESTIMATED ~{t['step']:.0f} s/step on a {self.card} (generation {t['generation']:.0f} s, update {t['update']:.0f} s), "
            f"~{self.steps_per_session} steps per 90-minute session; "
            f"checkpoint every {s['save_every']} steps, last {s['keep_checkpoints']} kept in {s['out_dir']}"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["memory"] = self.memory.summary()
        return d


_RECIPE_SIZES = {
    # name: (cards, card for the time estimate, precision, prompts, response tokens, generation batch, micro-batch, head chunk)
    "t4-16gb": ("T4 16 GB (Colab free tier)", "T4", "fp16", 8, 512, 16, 4, 128),
    "24gb": ("L4 / A10 24 GB", "L4", "bf16", 16, 768, 32, 8, 1024),
    "40-80gb": ("A100 / H100 40-80 GB", "A100", "bf16", 32, 1024, 64, 8, 1024),
}


def drive_folder() -> Path | None:
    """The mounted Google Drive folder (``/content/drive/MyDrive``) when there is one, else ``None``."""
    root = Path(os.environ.get("BUPO_DRIVE", DRIVE_ROOT))
    return root if root.is_dir() else None


def build_recipe(name: str, *, shape: ModelShape = QWEN3_0_6B, out_root: str | Path | None = None) -> Recipe:
    """The recipe ``name`` (``t4-16gb``, ``24gb``, ``40-80gb``) for ``shape``.

    Checkpoints: every ~15 minutes of estimated steps, the last 2 kept (1 on Google Drive, whose free
    15 GB holds two Qwen3-0.6B checkpoints of ~7.2 GB only while the newest is written); the run
    folder is on Drive when it is mounted, so a new session resumes there.
    """
    if name not in _RECIPE_SIZES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(_RECIPE_SIZES)}")
    cards, card_name, precision, prompts, resp, gen_bs, mbs, chunk = _RECIPE_SIZES[name]
    card = CARDS[card_name]
    G = 8
    mem = estimate_memory(
        shape,
        precision=precision,
        max_new_tokens=resp,
        group_size=G,
        generation_batch_size=gen_bs,
        micro_batch_size=mbs,
        logprob_chunk_size=chunk,
        gradient_checkpointing=True,
    )
    t = estimate_step_seconds(
        shape,
        card,
        prompts_per_step=prompts,
        group_size=G,
        max_new_tokens=resp,
        generation_batch_size=gen_bs,
        precision=precision,
    )
    per_session = max(1, int((SESSION_MINUTES - SESSION_SETUP_MINUTES) * 60 // max(t["step"], 1e-9)))
    drive = drive_folder()
    root = Path(out_root) if out_root is not None else (drive / "bupo-runs" if drive is not None else Path("runs"))
    save_every = max(1, int(15 * 60 // max(t["step"], 1e-9)))
    settings = dict(
        model=shape.name,
        task="deepmath",
        task_size=5000,
        task_kwargs={},
        template="qwen3-boxed",
        reward="boxed_math",
        method="bupo",
        layer=6,
        inter_steps=30,
        steps=300,
        prompts_per_step=prompts,
        group_size=G,
        max_new_tokens=resp,
        lr=1e-6,
        num_mini_batches=min(4, prompts),
        micro_batch_size=mbs,
        generation_batch_size=gen_bs,
        logprob_chunk_size=chunk,
        gradient_checkpointing=True,
        precision=precision,
        save_every=save_every,
        keep_checkpoints=1 if drive is not None else 2,
        out_dir=str(root / f"qwen3-0.6b-bupo-{name}"),
    )
    return Recipe(
        name,
        cards,
        settings,
        mem,
        t,
        per_session,
        card_name,
        notes="memory and time are ESTIMATES (bupo_core.recipes); bench/gpu_check.py measures a card",
    )


def recipe_for_gpu(name: str, memory_gib: float, **kwargs: Any) -> Recipe:
    """The recipe for a GPU called ``name`` with ``memory_gib`` of memory.

    Under 20 GiB (T4, and any 16 GB card): ``t4-16gb``; 20-30 GiB (L4, A10, RTX 3090/4090): ``24gb``;
    30 GiB and more (A100 40/80 GB, which torch reports as 39.4 / 79.1 GiB, H100): ``40-80gb``. Cards under 14 GiB
    get a :class:`ValueError` naming the smallest recipe's estimate.

    >>> recipe_for_gpu("Tesla T4", 14.7).name, recipe_for_gpu("NVIDIA L4", 22.0).name, recipe_for_gpu("NVIDIA H100 80GB HBM3", 79.1).name
    ('t4-16gb', '24gb', '40-80gb')
    """
    if memory_gib < 14:
        smallest = build_recipe("t4-16gb", **kwargs)
        raise ValueError(
            f"{name} has {memory_gib:.1f} GiB; the smallest recipe (t4-16gb) needs an estimated "
            f"{smallest.memory.peak_gib:.1f} GiB. Use the embedded model on CPU (notebook 05's defaults)."
        )
    if memory_gib < 20:
        return build_recipe("t4-16gb", **kwargs)
    if memory_gib < 30:
        return build_recipe("24gb", **kwargs)
    return build_recipe("40-80gb", **kwargs)


def detect_recipe(device: Any = "cuda", **kwargs: Any) -> Recipe | None:
    """The recipe for the visible CUDA GPU (``None`` without one)."""
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(torch.device(device))
    return recipe_for_gpu(props.name, props.total_memory / GiB, **kwargs)


def all_recipes(**kwargs: Any) -> list[Recipe]:
    """Every recipe, smallest card first (for the docs and the tests)."""
    return [build_recipe(n, **kwargs) for n in _RECIPE_SIZES]


__all__ = [
    "CARDS",
    "Card",
    "MemoryEstimate",
    "ModelShape",
    "QWEN3_0_6B",
    "Recipe",
    "SMOLLM2_135M",
    "all_recipes",
    "build_recipe",
    "detect_recipe",
    "drive_folder",
    "estimate_memory",
    "estimate_step_seconds",
    "recipe_for_gpu",
]
