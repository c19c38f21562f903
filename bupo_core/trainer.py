"""A plain GRPO / BuPO training loop (nanoGPT style: one function you can read top to bottom).

One *step* is::

    prompts  = task.batch(data_position, prompts_per_step)
    rollout  = generate(full policy, prompts, G samples each)              # always the FULL policy
    rewards  = grader(rollout.texts)                                      # time-limited, crash-proof
    A        = group_advantages(rewards, G)
    old_logp = logp of the sampled tokens under the step's policy, weights before any update
    for each mini-batch (num_mini_batches per step, ppo_epochs times):
        compute_gradients: logp = the same with grad; loss = POLICY_LOSSES[config.loss](logp, old_logp, A);
                           backward (micro-batches, gradient accumulation)
        apply_step: clip grad norm; AdamW step
    append one line to metrics.jsonl (flushed), checkpoint every save_every steps

The step's policy is the full model for ``method="grpo"``. For ``method="bupo"`` it is the
internal layer policy pi^l = softmax(H^l E_u^T) (raw H^l, paper numbering) for steps
1..``inter_steps`` (phase ``"internal"``: Internal Policy Alignment) and the full model afterwards
(phase ``"full"``). In the internal phase only the embedding and blocks 1..l run
(:func:`~bupo_core.capture.forward_to_layer`), so the blocks above ``l`` and the final norm get
no gradient; their ``.grad`` stays ``None``, so AdamW (weight decay included) leaves them
bit-identical.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn

from .adapter import ArchitectureAdapter
from . import runs
from .capture import base_model, forward_kwargs, forward_to_layer
from .errors import BupoError, ConfigMismatchError, InputFormatError
from .grpo import group_advantages, masked_mean, token_logprobs
from .losses import get_policy_loss
from .precision import LossScaler, check_precision, resolve_precision
from .rewards import Grader
from .rollout import SamplingConfig, encode_prompt, generate
from .runs import latest_checkpoint, list_checkpoints, read_metrics  # noqa: F401 - re-exported
from .sequences import PackedBatch, context_length
from .tasks import EASY_CHAIN_SUM, Task, check_training_task, load_task


class TrainingError(BupoError, RuntimeError):
    """Training cannot continue (repeated non-finite updates); the message says what to change."""


class TrainingOutOfMemoryError(BupoError, MemoryError):
    """The GPU ran out of memory; the message lists the settings that reduce memory."""


@dataclass
class TrainConfig:
    """Every setting of a GRPO / BuPO run. Saved as ``config.json``; a resumed run must match it.

    Model and data:
        model: model name or path for :func:`bupo_core.models.load_model` (recorded even when a
            model object is passed to :class:`Trainer`).
        task: task name for :func:`bupo_core.tasks.load_task` (``chain_sum``, ``gsm8k``, a
            ``.jsonl`` path...).
        task_kwargs: the task's generator settings, e.g. ``{"min_terms": 2, "max_terms": 2}``.
        task_size: number of distinct examples (served in a seeded order, reshuffled per epoch).
        template: prompt template (``"short"``, ``"boxed"``, ``"qwen3-boxed"``); ``None`` = the
            task's default.
        reward: scorer name (``"last_number"``, ``"boxed_math"``, ``"reasoning_gym"``, or one
            registered with :func:`bupo_core.rewards.register_scorer`); ``None`` = the task's default.
        binary_reward: map scores to 1/0 (the paper's reward is binary).
        grader_timeout_s: time limit per graded response; slower ones score 0 and are counted.
        allow_test_set_training: train on a known test set (``math500``, ``aime24``, ``aime25``,
            ``amc23``, ``gsm8k-test``). Off by default: such runs are refused before anything is
            downloaded, naming the training split to use instead (``deepmath``, ``math-train``,
            ``gsm8k``); evaluate on the test sets.

    Method:
        method: ``"grpo"`` (full policy every step) or ``"bupo"`` (internal phase, then GRPO).
        layer: BuPO's target layer l (paper numbering, 1..L: the output of block l). Required
            for ``"bupo"``; pick the boundary layer from the FFN entropy change (notebook 02).
        inter_steps: s_inter, the number of internal-phase steps (paper: 20-30 of 300).
        ipa_norm: the internal policy optimised in the internal phase: ``"none"`` (the paper's
            softmax(H^l E_u^T), default) or ``"final"`` (softmax(LN_final(H^l) E_u^T), paper
            Table 5 "with LN"; the final norm is then part of that policy and also gets gradient).
        ipa_lr: learning rate during the internal phase (``None`` = ``lr``).
        reset_optimizer_at_switch: clear AdamW's moment estimates when BuPO switches from the
            internal phase to GRPO (the moments of the lower blocks were built for another policy).
        freeze_through_layer: l: the embedding and blocks 1..l get no update in any phase
            ("frozen layers" baseline, paper Table 11). With tied embeddings E_u is the input
            embedding, so it stays frozen too. ``None`` = off.
        upper_lr_scale: multiply the learning rate of the blocks above ``upper_lr_layer`` (and the
            final norm, and an untied E_u) by this factor ("layerwise LR" baseline, paper Table
            11, uses 0.1). 1.0 = off.
        upper_lr_layer: l for ``upper_lr_scale`` (paper numbering; blocks l+1..L are "upper").

    Rollouts:
        steps: number of training steps (one rollout batch each).
        prompts_per_step: B, prompts per step (paper: 128).
        group_size: G, sampled responses per prompt (paper: 8); must be >= 2.
        max_new_tokens: response length limit.
        temperature: sampling temperature (paper: 1.0).
        top_p: nucleus sampling mass (1.0 = off).
        generation_batch_size: sequences per ``generate`` call.

    Optimisation:
        lr: AdamW learning rate (constant). The paper uses 1e-6 on 4B-8B models; the embedded
            135M model needs 1e-5..5e-5 to move within tens of steps.
        weight_decay: AdamW weight decay (paper code: 0.01).
        adam_betas: AdamW betas.
        adam_eps: AdamW epsilon.
        max_grad_norm: gradient-norm clipping (paper code: 1.0).
        num_mini_batches: optimizer updates per rollout batch per epoch; the B groups are split
            into this many contiguous mini-batches (paper: 128 prompts / 32 = 4).
        ppo_epochs: passes over the rollout batch.
        micro_batch_size: sequences per forward/backward (gradient accumulation); lower it to
            save memory.
        loss: the policy loss, a name in :data:`bupo_core.losses.POLICY_LOSSES` (``"grpo"``: the
            clipped surrogate with dual clip of the paper's code).
        eps_low, eps_high: ratio clip range [1 - eps_low, 1 + eps_high] (paper: 0.2 / 0.2).
        dual_clip: c of the dual clip for negative advantages (paper code: 10); ``None`` = off.
        loss_aggregation: ``"token-mean"`` (paper code, default) or ``"sequence-mean"`` (paper eq.).
        kl_coef: weight of a k3 KL penalty to the frozen initial model (0 = off, the paper).
        skip_zero_advantage_rows: do not run forward/backward on responses whose advantage is 0
            (their loss and gradient are exactly 0 when ``kl_coef == 0``; the token-mean
            normaliser still counts them, so the update is identical, only faster). A mini-batch
            whose rows all have advantage 0 takes no optimizer step (without skipping, AdamW would
            still move the weights by momentum and weight decay on zero gradients).
        max_nonfinite_updates: stop with :class:`TrainingError` after this many consecutive
            updates with a non-finite loss or gradient (each one is skipped and logged).

    Memory and speed:
        logprob_chunk_size: tokens per chunk when computing log-probs/entropies of sampled tokens
            (peak extra memory: one [chunk x vocabulary] float32 block).
        gradient_checkpointing: recompute block activations in backward (less memory, ~30% slower).
        precision: compute precision of the blocks: ``"auto"`` (by the card's compute capability:
            bf16 from 8.0, fp16 with dynamic loss scaling below, e.g. on a T4; fp32 without a GPU,
            see :func:`bupo_core.precision.choose_precision`), ``"bf16"``, ``"fp16"`` or ``"fp32"``.
            The policy head, log-probs, ratios and entropies are float32 in every mode.
        device: ``None`` = CUDA if available, else CPU.
        dtype: the dtype the model is loaded in. Training always keeps float32 master weights: a
            model loaded or passed in bf16/fp16 is cast to float32 in place by :class:`Trainer`
            (AdamW on bf16 weights rounds away updates at small learning rates: at lr 1e-6 almost
            every update). bf16/fp16 *compute* comes from autocast (``precision``), in which the
            log-softmax, entropies and lens statistics still run in float32.
        share_prefill: compute each prompt's key/value cache once for its G samples during
            generation (same samples up to float rounding; see ``SamplingConfig.share_prefill``).
        fused_optimizer: use torch's fused AdamW kernel (``fused=True``) instead of the per-tensor
            loop: the same update up to float rounding, several times faster on CPU and GPU.
        score_needed_rows_only: compute old log-probs only where an update needs them: not for
            zero-advantage responses (when they are skipped) and not for the first mini-batch,
            whose own first forward (weights not yet changed) gives them. The full policy's
            entropy is then read from the sampler's logits during generation (no extra forward in
            either phase). Same results up to float rounding; off = score every row first.

    Bookkeeping:
        seed: seeds the task order, every step's sampling and torch.
        save_every: write a checkpoint every this many steps (0 = only at the end / on Ctrl-C).
        keep_checkpoints: keep only the newest this many checkpoints (0 = keep all).
        out_dir: run folder: ``config.json``, ``metrics.jsonl``, ``checkpoints/checkpoint-<step>/``.
    """

    model: str = "smollm2-135m-instruct"
    task: str = "chain_sum"
    task_kwargs: dict = field(default_factory=lambda: dict(EASY_CHAIN_SUM))
    task_size: int = 1000
    template: str | None = None
    reward: str | None = None
    binary_reward: bool = True
    grader_timeout_s: float = 5.0
    allow_test_set_training: bool = False
    method: Literal["grpo", "bupo"] = "grpo"
    layer: int | None = None
    inter_steps: int = 30
    ipa_norm: Literal["none", "final"] = "none"
    ipa_lr: float | None = None
    reset_optimizer_at_switch: bool = False
    freeze_through_layer: int | None = None
    upper_lr_scale: float = 1.0
    upper_lr_layer: int | None = None
    steps: int = 100
    prompts_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    generation_batch_size: int = 64
    lr: float = 2e-5
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    num_mini_batches: int = 2
    ppo_epochs: int = 1
    micro_batch_size: int = 16
    loss: str = "grpo"
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = 10.0
    loss_aggregation: Literal["token-mean", "sequence-mean"] = "token-mean"
    kl_coef: float = 0.0
    skip_zero_advantage_rows: bool = True
    max_nonfinite_updates: int = 3
    logprob_chunk_size: int = 1024
    gradient_checkpointing: bool = False
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    device: str | None = None
    dtype: str = "float32"
    share_prefill: bool = True
    fused_optimizer: bool = True
    score_needed_rows_only: bool = True
    seed: int = 0
    save_every: int = 0
    keep_checkpoints: int = 0
    out_dir: str = "runs/bupo"

    # fields that may differ when resuming (they do not change what the completed steps did)
    RESUMABLE_CHANGES = ("steps", "save_every", "keep_checkpoints", "out_dir", "device", "generation_batch_size", "grader_timeout_s", "allow_test_set_training")

    # settings of older versions that no longer change anything (dropped when a config.json is read)
    OBSOLETE_KEYS = ("full_entropy_in_internal_phase",)

    def validate(self) -> None:
        """Raise :class:`InputFormatError` for settings that cannot work, naming the fix."""
        if self.method not in ("grpo", "bupo"):
            raise InputFormatError(f"method must be 'grpo' or 'bupo', got {self.method!r}")
        if self.group_size < 2:
            raise InputFormatError(f"group_size must be at least 2 (GRPO compares the G responses to one prompt with each other), got {self.group_size}")
        if self.method == "bupo":
            if self.layer is None:
                raise InputFormatError("method='bupo' needs layer=l (paper numbering 1..L); pick the boundary layer from the FFN entropy change (notebook 02, `bupo entropy`)")
            if self.inter_steps < 0:
                raise InputFormatError(f"inter_steps must be >= 0, got {self.inter_steps}")
        for name in ("steps", "prompts_per_step", "max_new_tokens", "num_mini_batches", "ppo_epochs", "micro_batch_size", "logprob_chunk_size", "generation_batch_size"):
            if getattr(self, name) < 1:
                raise InputFormatError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_mini_batches > self.prompts_per_step:
            raise InputFormatError(f"num_mini_batches={self.num_mini_batches} is more than prompts_per_step={self.prompts_per_step}; lower it")
        for name in ("lr", "temperature", "top_p", "weight_decay", "adam_eps", "max_grad_norm", "eps_low", "eps_high", "kl_coef", "grader_timeout_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputFormatError(f"{name} must be a finite number, got {v!r}")
        if self.dual_clip is not None and not math.isfinite(self.dual_clip):
            raise InputFormatError(f"dual_clip must be a finite number > 1 or None, got {self.dual_clip}")
        loss = get_policy_loss(self.loss)
        if loss.validate is not None:
            loss.validate(self)
        if self.lr <= 0:
            raise InputFormatError(f"lr must be > 0, got {self.lr}")
        if self.temperature <= 0:
            raise InputFormatError(
                f"temperature must be > 0 for training, got {self.temperature}: 0 means greedy decoding, which gives the G "
                "responses of a group the same text, so every advantage is 0 and nothing is learned (the paper uses 1.0)"
            )
        if not 0 < self.top_p <= 1:
            raise InputFormatError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.kl_coef < 0:
            raise InputFormatError(f"kl_coef must be >= 0 (0 = no KL penalty, the paper's setting), got {self.kl_coef}")
        for name in ("save_every", "keep_checkpoints", "inter_steps"):
            if getattr(self, name) < 0:
                raise InputFormatError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("task_size", "max_nonfinite_updates"):
            if getattr(self, name) < 1:
                raise InputFormatError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.grader_timeout_s <= 0 or self.max_grad_norm <= 0 or self.adam_eps <= 0 or self.weight_decay < 0:
            raise InputFormatError("grader_timeout_s, max_grad_norm and adam_eps must be > 0 and weight_decay >= 0")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise InputFormatError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        from .models import check_device  # noqa: PLC0415
        from .rewards import get_scorer  # noqa: PLC0415

        check_device(self.device)
        if self.reward is not None:
            get_scorer(self.reward)
        if self.loss_aggregation not in ("token-mean", "sequence-mean"):
            raise InputFormatError(f"loss_aggregation must be 'token-mean' or 'sequence-mean', got {self.loss_aggregation!r}")
        from .policy_head import check_norm  # noqa: PLC0415

        check_norm(self.ipa_norm, what="ipa_norm")
        if self.ipa_lr is not None and not (self.ipa_lr > 0 and math.isfinite(self.ipa_lr)):
            raise InputFormatError(f"ipa_lr must be a positive number or None (= lr), got {self.ipa_lr}")
        if self.freeze_through_layer is not None and self.freeze_through_layer < 0:
            raise InputFormatError(f"freeze_through_layer must be a layer 0..L-1 (paper numbering) or None, got {self.freeze_through_layer}")
        if not (self.upper_lr_scale > 0 and math.isfinite(self.upper_lr_scale)):
            raise InputFormatError(f"upper_lr_scale must be > 0, got {self.upper_lr_scale}")
        if self.upper_lr_scale != 1.0 and self.upper_lr_layer is None:
            raise InputFormatError("upper_lr_scale needs upper_lr_layer=l (the blocks above l get lr * upper_lr_scale)")
        check_precision(self.precision)
        check_training_task(self.task, self.allow_test_set_training)

    def phase(self, step: int) -> str:
        """``"internal"`` or ``"full"``: the phase of step ``step`` (1-based)."""
        return "internal" if self.method == "bupo" and step <= self.inter_steps else "full"

    def lr_at(self, step: int) -> float:
        """The base learning rate of step ``step`` (``ipa_lr`` in the internal phase when set)."""
        return self.ipa_lr if (self.phase(step) == "internal" and self.ipa_lr is not None) else self.lr

    def to_dict(self) -> dict:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k not in cls.OBSOLETE_KEYS}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigMismatchError(f"unknown config keys {unknown}; this config.json was written by another version")
        d = dict(d)
        if "bf16_autocast" in d:  # older versions: bf16_autocast on/off/auto is precision bf16/fp32/auto
            old = d.pop("bf16_autocast")
            d.setdefault("precision", {"on": "bf16", "off": "fp32"}.get(old, "auto"))
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        return cls(**d)

    def differences(self, other: "TrainConfig") -> dict[str, tuple[Any, Any]]:
        """Fields that differ (ignoring :attr:`RESUMABLE_CHANGES`): ``{name: (self, other)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in self.RESUMABLE_CHANGES and a[k] != b[k]}


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns.

    Attributes:
        out_dir: the run folder.
        metrics: one dict per step run in this call (also in ``metrics.jsonl``).
        step: last completed step.
        interrupted: True when Ctrl-C stopped the run (a checkpoint was written).
        last_checkpoint: path of the newest checkpoint, if any.
    """

    out_dir: Path
    metrics: list[dict]
    step: int
    interrupted: bool = False
    last_checkpoint: Path | None = None


# --------------------------------------------------------------------------- log-probs of a policy
def policy_logprobs(
    model: nn.Module,
    batch: PackedBatch,
    *,
    layer: int | None = None,
    adapter: ArchitectureAdapter | None = None,
    chunk_size: int = 1024,
    mask: torch.Tensor | None = None,
    norm: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies of the sampled tokens under the full or an internal policy.

    Args:
        model: the causal LM.
        batch: packed prompt+response rows.
        layer: ``None`` for the full policy softmax(LN_final(H^L) E_u^T) (with Gemma 2's soft-cap);
            ``l`` (paper numbering) for the internal layer policy softmax(H^l E_u^T), computed by
            running only the embedding and blocks 1..l.
        chunk_size: tokens per log-softmax chunk.
        mask: positions to compute (default ``batch.prediction_mask``).
        norm: for an internal policy, ``"none"`` (the paper's raw H^l) or ``"final"`` (the final
            norm first, and Gemma 2's soft-cap: softmax(LN_final(H^l) E_u^T)).

    Returns:
        ``(logp, entropy)``: [B, T] float32, 0 outside the mask. Gradients flow if enabled.
    """
    adapter = adapter or ArchitectureAdapter(model)
    mask = batch.prediction_mask if mask is None else mask
    if layer is None:
        out = base_model(model)(input_ids=batch.input_ids, use_cache=False, **forward_kwargs(batch.attention_mask))
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        softcap = adapter.logit_softcap
    else:
        hidden = forward_to_layer(model, batch.input_ids, layer, batch.attention_mask, adapter=adapter)
        softcap = None
        if norm == "final":
            hidden, softcap = adapter.apply_norm(hidden, "final"), adapter.logit_softcap
    return token_logprobs(
        hidden, adapter.unembed_weight, batch.targets, mask, bias=adapter.unembed_bias, softcap=softcap, chunk_size=chunk_size
    )


def split_groups(num_groups: int, parts: int) -> list[list[int]]:
    """Split group indices 0..num_groups-1 into ``parts`` contiguous, near-equal lists.

    >>> split_groups(5, 2)
    [[0, 1, 2], [3, 4]]
    """
    base, extra = divmod(num_groups, parts)
    out, start = [], 0
    for i in range(parts):
        n = base + (1 if i < extra else 0)
        out.append(list(range(start, start + n)))
        start += n
    return [p for p in out if p]


def float32_master_weights(model: nn.Module) -> nn.Module:
    """Cast ``model``'s floating-point parameters and buffers to float32 in place (no-op if they are).

    Training keeps float32 master weights whatever dtype the model was loaded in: with bf16 weights
    (8 significant bits) an AdamW step of lr 1e-6 changes no weight above ~2.6e-4 in magnitude,
    i.e. almost none. Compute still runs in bf16/fp16 under autocast (``TrainConfig.precision``).

    >>> from bupo_core.models import tiny_model
    >>> float32_master_weights(tiny_model("llama").to(torch.bfloat16)).model.embed_tokens.weight.dtype
    torch.float32
    """
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in (*model.parameters(), *model.buffers())):
        model.float()
    return model


# --------------------------------------------------------------------------- the trainer
class Trainer:
    """Runs GRPO or BuPO on one device; see the module docstring for the loop.

    Args:
        config: the run's settings.
        model, tokenizer: use these objects instead of loading ``config.model`` (notebooks). A
            bf16/fp16 model is cast to float32 in place (float32 master weights, see ``dtype``).
        task: use this task instead of building ``config.task``.
        resume: continue from the newest intact checkpoint in ``config.out_dir/checkpoints`` (the
            saved config and the checkpoint's own config must match, see
            :attr:`TrainConfig.RESUMABLE_CHANGES`); with no checkpoint yet, start clean from step 0.
        overwrite: delete the run already in ``config.out_dir`` and start clean. Without
            ``resume`` or ``overwrite`` the folder must be empty (:func:`bupo_core.runs.claim_run_dir`).
    """

    def __init__(
        self, config: TrainConfig, *, model: nn.Module | None = None, tokenizer: Any = None, task: Task | None = None,
        resume: bool = False, overwrite: bool = False,
    ) -> None:
        config.validate()
        self.config = config
        # the task (file errors, generator settings) and the folder are checked before the slow model load
        self.task = task or load_task(config.task, size=config.task_size, seed=config.seed, template=config.template, scorer=config.reward, **config.task_kwargs)
        self.out_dir = runs.claim_run_dir(config.out_dir, resume=resume, overwrite=overwrite)
        self.ckpt_root = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.step = 0
        self.data_position = 0
        self.nonfinite_streak = 0
        resume_from = self._check_resume() if resume else None
        self._resumed_from = resume_from
        if resume_from is not None:
            from .models import load_model  # noqa: PLC0415

            model, tokenizer = load_model(str(resume_from), device=config.device, dtype=config.dtype)
        elif model is None:
            from .models import load_model  # noqa: PLC0415

            model, tokenizer = load_model(config.model, device=config.device, dtype=config.dtype, seed=config.seed)
        if tokenizer is None:
            raise InputFormatError("pass the tokenizer together with the model")
        # float32 master weights whatever the load dtype (bf16 on CUDA): AdamW on bf16 weights rounds
        # away updates below ~2^-8 of a weight (all of them at lr 1e-6); bf16 compute comes from autocast
        model = float32_master_weights(model)
        self.model, self.tokenizer = model, tokenizer
        self.adapter = ArchitectureAdapter(model)
        if config.method == "bupo":
            self.adapter.check_layer(config.layer, allow_embedding=False)  # type: ignore[arg-type]
        self.device = next(model.parameters()).device
        # the compute precision, chosen by the card (bupo_core.precision) and printed with its reason
        self.precision = resolve_precision(config.precision, self.device)
        self.scaler = LossScaler(self.precision.mode, self.device.type, device=str(self.device))
        print(self.precision.message())
        self._check_prompt_lengths()
        self.grader = Grader(scorer=config.reward or self.task.scorer, binary=config.binary_reward, timeout_s=config.grader_timeout_s)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.params, groups = self._parameter_groups()
        self.optimizer = self._new_optimizer(groups)
        self.reference: nn.Module | None = None
        if config.kl_coef > 0:
            import copy  # noqa: PLC0415

            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        if config.gradient_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # parameters the internal policy does not depend on (blocks above l, the final norm unless
        # ipa_norm="final" makes it part of that policy); they must never move in the internal phase
        self._upper_ids = set()
        if config.method == "bupo":
            self._upper_ids = {id(p) for p in self.adapter.upper_parameters(config.layer)}
            if config.ipa_norm == "final":
                self._upper_ids -= {id(p) for p in self.adapter.final_norm.parameters()}
        if resume_from is not None:
            self._load_state(resume_from)
        self._interrupt_requested = False
        self._in_update = False

    # ----------------------------------------------------------------- optimizer
    def _params_above(self, layer: int) -> list[nn.Parameter]:
        """Blocks layer+1..L, the final norm and an untied E_u: the "upper" part of the model."""
        params = list(self.adapter.upper_parameters(layer))
        if not self.adapter.tied_embeddings:
            params += list(self.model.get_output_embeddings().parameters())
        return params

    def _check_split_layer(self, layer: int, name: str) -> None:
        """A layer that splits the model into "embedding and blocks 1..l" and "blocks l+1..L": 0..L-1."""
        self.adapter.check_layer(layer, allow_embedding=True, below_top=True,
                                 what=f"{name} (the embedding and blocks 1..l below it, the blocks above it)")

    def _parameter_groups(self) -> tuple[list[nn.Parameter], list[dict]]:
        """Trainable parameters and AdamW groups (``lr_scale`` multiplies the step's lr).

        ``freeze_through_layer`` removes the embedding and blocks 1..l from training
        (``requires_grad=False``); ``upper_lr_scale`` puts the blocks above ``upper_lr_layer``
        (with the final norm and an untied E_u) in a group with a scaled lr.
        """
        cfg = self.config
        every = list(self.model.parameters())
        frozen: set[int] = set()
        if cfg.freeze_through_layer is not None:
            self._check_split_layer(cfg.freeze_through_layer, "freeze_through_layer")
            keep = {id(p) for p in self._params_above(cfg.freeze_through_layer)}
            frozen = {id(p) for p in every if id(p) not in keep}
        upper: set[int] = set()
        if cfg.upper_lr_layer is not None:
            self._check_split_layer(cfg.upper_lr_layer, "upper_lr_layer")
            upper = {id(p) for p in self._params_above(cfg.upper_lr_layer)}
        for p in every:
            p.requires_grad_(id(p) not in frozen)
        trainable = [p for p in every if id(p) not in frozen]
        groups = [
            {"params": [p for p in trainable if id(p) not in upper], "lr_scale": 1.0, "name": "lower"},
            {"params": [p for p in trainable if id(p) in upper], "lr_scale": float(cfg.upper_lr_scale), "name": "upper"},
        ]
        return trainable, [g for g in groups if g["params"]]

    def _new_optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        cfg = self.config
        impl = {"fused": True} if cfg.fused_optimizer else {"foreach": False}
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay, **impl)

    def _set_learning_rate(self, step: int) -> float:
        """Set every group's lr for step ``step``; returns the base lr."""
        base = self.config.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = base * group.get("lr_scale", 1.0)
        return base

    # ----------------------------------------------------------------- resume / checkpoints
    def _check_resume(self) -> Path | None:
        saved = TrainConfig.from_dict(runs.read_config(self.out_dir))
        saved_path = self.out_dir / runs.CONFIG
        diff = saved.differences(self.config)
        if diff:
            lines = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ConfigMismatchError(
                f"--resume: the settings differ from the run saved in {self.out_dir} ({lines}). Use the saved "
                f"settings (see {saved_path}) or a new --out folder. Only {', '.join(TrainConfig.RESUMABLE_CHANGES)} may change."
            )
        ckpt = runs.find_resume_checkpoint(self.out_dir, lambda d: TrainConfig.from_dict(d).differences(self.config))
        if ckpt is None:
            dropped = runs.truncate_metrics(self.metrics_path, 0)
            warnings.warn(
                f"--resume: no checkpoint in {self.ckpt_root} yet; starting clean from step 0"
                + (f" ({dropped} metrics rows of the lost steps removed)" if dropped else ""),
                stacklevel=3,
            )
        return ckpt

    def _load_state(self, ckpt: Path) -> None:
        state = runs.load_checkpoint_state(ckpt)
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.step = int(state["step"])
        self.data_position = int(state["data_position"])
        self.nonfinite_streak = int(state.get("nonfinite_streak", 0))
        self.scaler.load_state_dict(state.get("loss_scaler") or {})
        if self.reference is not None and "reference_state" in state:
            self.reference.load_state_dict(state["reference_state"])
        runs.set_rng_state(state["rng_tensors"], state["rng"])
        # drop metrics of steps after the checkpoint (a crash after it): they will be rerun
        runs.truncate_metrics(self.metrics_path, self.step)

    def _check_prompt_lengths(self) -> None:
        """Refuse, before step 1, an example whose prompt + max_new_tokens exceeds the context (naming file:line)."""
        limit = context_length(self.model)
        if limit is None or not self.task.examples:
            return
        budget = limit - self.config.max_new_tokens
        kwargs = self.task.chat_template_kwargs
        overhead = len(encode_prompt(self.tokenizer, self.task.template.messages(""), chat_template_kwargs=kwargs)) + 2
        for e in self.task.examples:
            if len(e.question.encode("utf-8")) + overhead < budget:  # a token covers >= 1 byte: cannot be too long
                continue
            ids = encode_prompt(self.tokenizer, self.task.prompt(e), chat_template_kwargs=self.task.chat_template_kwargs)
            if len(ids) > budget:
                where = e.source.removeprefix("jsonl:") or f"example {self.task.examples.index(e)}"
                raise InputFormatError(
                    f"{where}: the prompt has {len(ids)} tokens; with max_new_tokens={self.config.max_new_tokens} that exceeds the "
                    f"model's context of {limit} tokens. Shorten or remove this example, or lower max_new_tokens."
                )

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/checkpoint-<step>/`` atomically (see :mod:`bupo_core.runs` for the format)."""
        return runs.save_checkpoint(
            self.ckpt_root, step=self.step, model=self.model, tokenizer=self.tokenizer, optimizer=self.optimizer,
            state={"data_position": self.data_position, "nonfinite_streak": self.nonfinite_streak, "loss_scaler": self.scaler.state_dict()},
            config=self.config.to_dict(), reference=self.reference, keep=self.config.keep_checkpoints,
        )

    # ----------------------------------------------------------------- one step
    def _autocast(self):
        return self.precision.autocast()

    def _logprobs(self, batch: PackedBatch, layer: int | None, model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        model = model or self.model
        adapter = self.adapter if model is self.model else ArchitectureAdapter(model)
        with self._autocast():
            return policy_logprobs(model, batch, layer=layer, adapter=adapter, chunk_size=self.config.logprob_chunk_size, norm=self.config.ipa_norm)

    @torch.no_grad()
    def _score_batch(
        self, batch: PackedBatch, layer: int | None, model: nn.Module | None = None, rows: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """No-grad log-probs/entropies of ``rows`` (default all), micro-batched, on the padded [n, T] grid.

        Rows not scored stay 0.
        """
        n, T = batch.input_ids.shape
        logp = torch.zeros(n, T)
        ent = torch.zeros(n, T)
        rows = list(range(n)) if rows is None else rows
        mbs = self.config.micro_batch_size
        for s in range(0, len(rows), mbs):
            r_idx = rows[s : s + mbs]
            sub = batch.select(r_idx).to(self.device)
            lp, en = self._logprobs(sub, layer, model)
            w = sub.input_ids.shape[1]
            logp[r_idx, T - w :] = lp.float().cpu()
            ent[r_idx, T - w :] = en.float().cpu()
        return logp, ent

    def _active_rows(self, rows: list[int], adv: torch.Tensor) -> list[int]:
        """Rows an update must run: all, or those with a non-zero advantage when zero rows are skipped."""
        cfg = self.config
        if not (cfg.skip_zero_advantage_rows and cfg.kl_coef == 0):
            return rows
        return [r for r in rows if float(adv[r]) != 0.0]

    def _update(
        self, batch: PackedBatch, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, adv: torch.Tensor, layer: int | None,
        have_old: torch.Tensor | None = None,
    ) -> dict:
        """All mini-batch updates of one step: :meth:`compute_gradients` then :meth:`apply_step` per mini-batch.

        ``have_old`` [n] bool marks the rows whose ``old_logp`` was computed beforehand; the others
        (the first mini-batch, see ``TrainConfig.score_needed_rows_only``) take it from their own
        first forward, which runs before any optimizer step of this rollout batch.
        """
        have_old = torch.ones(len(batch), dtype=torch.bool) if have_old is None else have_old.clone()
        old_logp = old_logp.clone()
        cfg = self.config
        G = cfg.group_size
        groups = len(batch) // G
        stats: dict[str, list[float]] = {"loss": [], "clip_frac": [], "approx_kl": [], "grad_norm": [], "kl_ref": []}
        updates = skipped = nonfinite = 0
        self.model.train()
        for _epoch in range(cfg.ppo_epochs):
            for mb_groups in split_groups(groups, cfg.num_mini_batches):
                rows = [g * G + i for g in mb_groups for i in range(G)]
                if (updates or nonfinite) and not bool(have_old[self._active_rows(rows, adv)].all()):
                    raise RuntimeError("old log-probs missing after an optimizer step; score these rows first")
                grads = self.compute_gradients(batch, rows, old_logp, ref_logp, adv, layer, have_old)
                if grads is None:
                    skipped += 1
                    continue
                gnorm = self.apply_step(grads["loss"], layer)
                if gnorm is None:
                    nonfinite += 1
                    continue
                updates += 1
                stats["grad_norm"].append(gnorm)
                for key in ("loss", "clip_frac", "approx_kl", "kl_ref"):
                    stats[key].append(grads[key])
        self.model.eval()
        mean = lambda xs: (sum(xs) / len(xs)) if xs else 0.0  # noqa: E731
        return {
            **{key: mean(stats[key]) for key in ("loss", "clip_frac", "approx_kl", "kl_ref", "grad_norm")},
            "updates": updates,
            "skipped_updates": skipped,
            "nonfinite_updates": nonfinite,
        }

    def compute_gradients(
        self, batch: PackedBatch, rows: list[int], old_logp: torch.Tensor, ref_logp: torch.Tensor | None, adv: torch.Tensor, layer: int | None,
        have_old: torch.Tensor | None = None,
    ) -> dict[str, float] | None:
        """Zero the gradients and accumulate those of one mini-batch (``rows`` of ``batch``).

        The loss is ``TrainConfig.loss`` from :data:`bupo_core.losses.POLICY_LOSSES`, normalised over
        the whole mini-batch so the micro-batches add up to its mean. Rows with advantage 0 are not
        run when ``skip_zero_advantage_rows`` (their loss and gradient are exactly 0 without a KL
        term; the normaliser still counts them). Rows whose ``have_old`` is False get their old
        log-probs from this forward (valid only before any optimizer step on this batch); both
        ``old_logp`` and ``have_old`` are updated in place.

        Returns:
            ``{"loss", "clip_frac", "approx_kl", "kl_ref"}`` (token-weighted over the mini-batch),
            or ``None`` when every row was skipped (no update).
        """
        cfg = self.config
        loss_fn = get_policy_loss(cfg.loss)
        mask_all = batch.prediction_mask[rows]
        n_tokens = float(mask_all.sum())
        n_seqs = float((mask_all.sum(1) > 0).sum())
        normalizer = n_tokens if cfg.loss_aggregation == "token-mean" else n_seqs
        active = self._active_rows(rows, adv)
        if not active:
            return None
        self.optimizer.zero_grad(set_to_none=True)
        out_stats = {"loss": 0.0, "clip_frac": 0.0, "approx_kl": 0.0, "kl_ref": 0.0}
        weight = 0.0
        T = batch.input_ids.shape[1]
        for s in range(0, len(active), cfg.micro_batch_size):
            r_idx = active[s : s + cfg.micro_batch_size]
            sub = batch.select(r_idx).to(self.device)
            w = sub.input_ids.shape[1]
            ref = ref_logp[r_idx][:, T - w :].to(self.device) if ref_logp is not None else None
            logp, _ = self._logprobs(sub, layer)
            if have_old is not None and not bool(have_old[r_idx].all()):
                # weights unchanged since the rollout: this forward *is* the old policy
                old_logp[r_idx, T - w :] = logp.detach().float().cpu()
                have_old[r_idx] = True
            old = old_logp[r_idx][:, T - w :].to(self.device)
            out = loss_fn(
                cfg, logp, old, adv[r_idx].to(self.device), sub.prediction_mask,
                aggregation=cfg.loss_aggregation, normalizer=normalizer, ref_logp=ref, kl_coef=cfg.kl_coef,
            )
            self.scaler.backward(out.loss)  # scaled by the dynamic loss scale in fp16
            out_stats["loss"] += float(out.loss.detach())
            k = float(sub.prediction_mask.sum())
            weight += k
            for key in ("clip_frac", "approx_kl", "kl_ref"):
                out_stats[key] += getattr(out, key) * k
        for key in ("clip_frac", "approx_kl", "kl_ref"):
            out_stats[key] /= max(weight, 1.0)
        return out_stats

    def apply_step(self, loss: float, layer: int | None) -> float | None:
        """Clip the accumulated gradients and take one optimizer step.

        In the internal phase (``layer`` set) the gradients of everything above ``layer`` are
        dropped first, so those parameters stay bit-identical. A non-finite loss or gradient norm
        skips the step (``None`` is returned); :attr:`TrainConfig.max_nonfinite_updates` in a row
        raise :class:`TrainingError`.

        Returns:
            The gradient norm before clipping, or ``None`` when the step was skipped.
        """
        cfg = self.config
        if layer is not None:  # defensive: nothing above the target layer may move
            for p in self.params:
                if id(p) in self._upper_ids:
                    p.grad = None
        self.scaler.unscale_(self.optimizer)  # fp16: the true gradients before clipping
        grads = [p for p in self.params if p.grad is not None]
        gnorm = torch.nn.utils.clip_grad_norm_(grads, cfg.max_grad_norm) if grads else torch.tensor(0.0)
        if math.isfinite(loss) and not torch.isfinite(gnorm) and self.scaler.enabled and self.scaler.scale >= 1.0:
            # fp16 overflow at the current loss scale (not a diverged loss): halve the scale, skip the step
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.skip()
            return None
        if not (math.isfinite(loss) and torch.isfinite(gnorm)):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.skip()
            self.nonfinite_streak += 1
            warnings.warn(f"step {self.step + 1}: non-finite loss ({loss}) or gradient norm ({float(gnorm)}); update skipped", stacklevel=3)
            if self.nonfinite_streak >= cfg.max_nonfinite_updates:
                raise TrainingError(
                    f"{self.nonfinite_streak} consecutive updates had a non-finite loss or gradient (last at step {self.step + 1}); "
                    f"training stopped. Lower lr (now {cfg.lr}), keep max_grad_norm, use float32 weights (dtype='float32'), "
                    f"or resume from the last checkpoint with a smaller lr."
                )
            return None
        self.nonfinite_streak = 0
        self.scaler.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        return float(gnorm)

    def train_step(self) -> dict:
        """Run one step (rollout, scoring, updates) and return its metrics (not yet written)."""
        cfg = self.config
        step = self.step + 1
        phase = cfg.phase(step)
        layer = cfg.layer if phase == "internal" else None
        if cfg.reset_optimizer_at_switch and cfg.method == "bupo" and cfg.inter_steps > 0 and step == cfg.inter_steps + 1:
            self.optimizer.state.clear()  # fresh AdamW moments for the full policy (resume-safe: saved state is post-reset)
        lr = self._set_learning_rate(step)
        sampler_entropy = cfg.score_needed_rows_only
        t0 = time.perf_counter()
        examples = self.task.batch(self.data_position, cfg.prompts_per_step)
        prompts = [self.task.prompt(e) for e in examples]
        sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                  batch_size=cfg.generation_batch_size, share_prefill=cfg.share_prefill)
        self.model.eval()
        with self._autocast():
            rollout = generate(
                self.model, self.tokenizer, prompts, group_size=cfg.group_size, config=sampling,
                seed=cfg.seed * 1_000_003 + step, chat_template_kwargs=self.task.chat_template_kwargs,
                record_entropy=sampler_entropy,
            )
        t1 = time.perf_counter()
        rows_examples = [examples[i] for i in rollout.prompt_index]
        scored = self.grader(rollout.texts, rows_examples)
        rewards = torch.tensor(scored.rewards, dtype=torch.float32)
        adv, zero_groups = group_advantages(rewards, cfg.group_size)
        t2 = time.perf_counter()
        all_zero = bool(zero_groups.all())
        if all_zero:
            warnings.warn(
                f"step {step}: every group has equal rewards (mean reward {float(rewards.mean()):.2f}), so every advantage is 0 "
                "and this step cannot learn; updates skipped. If this persists, use an easier task, a larger group_size or more prompts_per_step.",
                stacklevel=2,
            )
        batch = rollout.pack(self.pad_id, max_length=context_length(self.model))
        # Old log-probs. The internal phase scores every row (a truncated forward, cheap) because its
        # log-probs and entropies are logged; the full phase, with score_needed_rows_only, scores only
        # the rows of mini-batches after the first that an update will use.
        have_old = torch.ones(len(batch), dtype=torch.bool)
        score_rows = None
        if sampler_entropy and phase == "full" and not all_zero:
            groups = split_groups(len(examples), cfg.num_mini_batches)
            first = {g * cfg.group_size + i for g in groups[0] for i in range(cfg.group_size)}
            score_rows = [r for r in self._active_rows(list(range(len(batch))), adv) if r not in first]
            have_old[sorted(first)] = False
        elif sampler_entropy and phase == "full":
            score_rows = []
        old_logp, old_ent = self._score_batch(batch, layer, rows=score_rows)
        ref_logp = self._score_batch(batch, layer, self.reference)[0] if self.reference is not None else None
        internal_entropy = internal_logprob = None
        if phase == "internal":
            internal_entropy = masked_mean(old_ent, batch.prediction_mask)
            internal_logprob = masked_mean(old_logp, batch.prediction_mask)
        if sampler_entropy:
            tokens = [e for row in rollout.extras["entropy"] for e in row]
            full_entropy = sum(tokens) / max(len(tokens), 1)
        elif phase == "internal":
            full_entropy = masked_mean(self._score_batch(batch, None)[1], batch.prediction_mask)
        else:
            full_entropy = masked_mean(old_ent, batch.prediction_mask)
        if all_zero:
            upd = {"loss": 0.0, "clip_frac": 0.0, "approx_kl": 0.0, "kl_ref": 0.0, "grad_norm": 0.0, "updates": 0,
                   "skipped_updates": len(split_groups(len(examples), cfg.num_mini_batches)) * cfg.ppo_epochs, "nonfinite_updates": 0}
        else:
            self._in_update = True
            try:
                upd = self._update(batch, old_logp, ref_logp, adv, layer, have_old)
            finally:
                self._in_update = False
        t3 = time.perf_counter()
        self.step = step
        self.data_position += cfg.prompts_per_step
        lengths = rollout.response_lengths
        n_tokens = sum(lengths)
        return {
            "step": step,
            "phase": phase,
            "layer": layer,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "loss": upd["loss"],
            "zero_adv_group_frac": float(zero_groups.float().mean()),
            "clip_frac": upd["clip_frac"],
            "approx_kl": upd["approx_kl"],
            "kl_ref": upd["kl_ref"],
            "entropy": full_entropy,
            "internal_entropy": internal_entropy,
            "internal_logprob": internal_logprob,
            "response_length_mean": n_tokens / max(len(lengths), 1),
            "finished_frac": sum(rollout.finished) / max(len(lengths), 1),
            "grad_norm": upd["grad_norm"],
            "updates": upd["updates"],
            "skipped_updates": upd["skipped_updates"],
            "nonfinite_updates": upd["nonfinite_updates"],
            "grader_failures": scored.failed,
            "grader_timeouts": scored.timeouts,
            "time_generate": t1 - t0,
            "time_score": t2 - t1,
            "time_update": t3 - t2,
            "tokens_per_s": n_tokens / max(t3 - t0, 1e-9),
            "data_position": self.data_position,
            "lr": lr,
            "sample_text": rollout.texts[0][:200],
        }

    # ----------------------------------------------------------------- the loop
    @contextmanager
    def _sigint_guard(self) -> Iterator[None]:
        """Ctrl-C (SIGINT) or SIGTERM during an update finishes the step first; elsewhere it stops at once.

        SIGTERM is what ``kill``, a job scheduler or a notebook host sends on preemption; it is
        treated like Ctrl-C, so it too writes a checkpoint and the run resumes.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):  # noqa: ARG001
            if self._in_update:
                self._interrupt_requested = True
            else:
                raise KeyboardInterrupt

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def _write_metrics(self, row: dict) -> None:
        runs.append_metrics(self.metrics_path, row)

    def train(self, *, progress: bool = False, callback: Callable[[dict], None] | None = None) -> TrainResult:
        """Run steps ``step + 1 .. config.steps``.

        Args:
            progress: show a tqdm bar with the running reward.
            callback: called with each step's metrics right after they are written.

        Returns:
            :class:`TrainResult`. Ctrl-C writes a checkpoint of the last completed step and
            returns with ``interrupted=True``.
        """
        from tqdm.auto import tqdm  # noqa: PLC0415

        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        runs.write_json_atomic(self.out_dir / runs.CONFIG, cfg.to_dict())
        if self.step == 0:
            torch.manual_seed(cfg.seed)
        rows: list[dict] = []
        last_ckpt = self._resumed_from if self._resumed_from is not None and self._resumed_from.name == f"checkpoint-{self.step}" else None
        interrupted = False
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"{cfg.method}", disable=not progress)
        running = None
        try:
            with self._sigint_guard():
                while self.step < cfg.steps:
                    try:
                        row = self.train_step()
                    except torch.OutOfMemoryError as exc:
                        raise TrainingOutOfMemoryError(
                            f"out of GPU memory at step {self.step + 1} ({str(exc).splitlines()[0][:120]}). Reduce micro_batch_size "
                            f"(now {cfg.micro_batch_size}; --micro-batch-size), max_new_tokens (now {cfg.max_new_tokens}), "
                            f"generation_batch_size (now {cfg.generation_batch_size}) or logprob_chunk_size (now {cfg.logprob_chunk_size}), "
                            "or turn on gradient_checkpointing (--gradient-checkpointing)."
                        ) from exc
                    except RuntimeError as exc:
                        if "probability tensor contains" in str(exc):
                            raise TrainingError(
                                f"training diverged at step {self.step + 1}: the model's output probabilities became inf/NaN "
                                f"({str(exc).splitlines()[0][:100]}). The learning rate is the likely cause (lr={cfg.lr}); "
                                "lower it (e.g. 10x) and resume from the last checkpoint or start again."
                            ) from exc
                        raise
                    self._write_metrics(row)
                    rows.append(row)
                    running = row["reward_mean"] if running is None else 0.9 * running + 0.1 * row["reward_mean"]
                    bar.update(1)
                    bar.set_postfix(phase=row["phase"], reward=f"{row['reward_mean']:.3f}", running=f"{running:.3f}")
                    if callback is not None:
                        callback(row)
                    if cfg.save_every and self.step % cfg.save_every == 0:
                        last_ckpt = self.save_checkpoint()
                    if self._interrupt_requested:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            interrupted = True
            # weights and optimizer are those of the last completed step (an interrupted update
            # is finished before stopping), so this checkpoint resumes exactly
            last_ckpt = self.save_checkpoint()
            print(f"[bupo] interrupted: checkpoint of step {self.step} written to {last_ckpt}")
        finally:
            bar.close()
        if not interrupted and (last_ckpt is None or last_ckpt.name != f"checkpoint-{self.step}"):
            last_ckpt = self.save_checkpoint()
        return TrainResult(self.out_dir, rows, self.step, interrupted, last_ckpt)


def train(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Build a :class:`Trainer` and run it (``kwargs`` go to the constructor, e.g. ``resume=True``)."""
    progress = kwargs.pop("progress", False)
    callback = kwargs.pop("callback", None)
    return Trainer(config, **kwargs).train(progress=progress, callback=callback)
