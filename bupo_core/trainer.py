"""GRPO / BuPO training: the settings (:class:`TrainConfig`) and the run's state (:class:`Trainer`).

The training code is three modules, each readable on its own:

* this one: :class:`TrainConfig` (every setting, validated) and :class:`Trainer`, which builds
  and holds the run's state (model, optimizer, task, grader, counters) and nothing else;
* :mod:`bupo_core.step`: one step as one function, :func:`~bupo_core.step.train_step`
  (rollout -> rewards -> advantages -> old log-probs -> mini-batch updates), and the public
  update phase :func:`~bupo_core.step.update_policy`;
* :mod:`bupo_core.loop`: the run loop around it (folder, resume, checkpoints, signals,
  out-of-memory messages, metrics rows).

The step's policy is the full model for ``method="grpo"``. For ``method="bupo"`` it is the
internal layer policy pi^l = softmax(H^l E_u^T) (raw H^l, paper numbering) for steps
1..``inter_steps`` (phase ``"internal"``: Internal Policy Alignment) and the full model afterwards
(phase ``"full"``). In the internal phase only the embedding and blocks 1..l run
(:func:`~bupo_core.capture.forward_to_layer`), so the blocks above ``l`` and the final norm get
no gradient; their ``.grad`` stays ``None``, so AdamW (weight decay included) leaves them
bit-identical.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from . import loop, models, runs, step  # models.load_model is looked up when called: tests replace it
from .adapter import ArchitectureAdapter
from .errors import ConfigMismatchError, InputFormatError
from .loop import TrainingOutOfMemoryError, TrainResult  # noqa: F401 - re-exported
from .losses import LossAggregation, get_aggregation, get_policy_loss
from .models import check_device
from .policy_head import check_norm, policy_logprobs  # noqa: F401 - policy_logprobs re-exported
from .precision import LossScaler, check_precision, resolve_precision
from .rewards import SCORER_ANSWER_FORMATS, Grader, get_scorer
from .rollout import check_fits_context, encode_prompt
from .runs import latest_checkpoint, list_checkpoints, read_metrics  # noqa: F401 - re-exported
from .sampling import MAX_NEW_TOKENS_ROLLOUT, SamplingFields
from .sequences import context_length
from .step import TrainingError, split_groups  # noqa: F401 - re-exported
from .tasks import EASY_CHAIN_SUM, HUB_TASKS, Task, check_training_task, get_template, load_task

MAX_SEED = 2**63 - 1  # torch.manual_seed and numpy accept seeds up to this


@dataclass
class TrainConfig(SamplingFields):
    """Every setting of a GRPO / BuPO run. Saved as ``config.json``; a resumed run must match it.

    The rollouts' sampling fields (``max_new_tokens``, ``temperature``, ``top_p``) are
    :class:`~bupo_core.sampling.SamplingFields`; training needs ``temperature > 0``.

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
        inter_steps: s_inter, the number of internal-phase steps (paper: 20-30 of 300); must be
            below ``steps`` so that the run reaches the GRPO phase.
        internal_phase_only: allow ``inter_steps >= steps``: a run that never leaves the internal
            phase (an IPA-only experiment, e.g. notebook 06's long run, or a test of locality).
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
        generation_batch_size: sequences per ``generate`` call.
        dynamic_sampling: DAPO's dynamic sampling, for both methods alike: draw batches of
            ``prompts_per_step`` prompts until ``prompts_per_step`` groups have unequal rewards
            (groups whose G rewards are all equal teach neither phase) and train on those; every
            drawn prompt advances the task order. Each metrics row logs ``prompts_drawn`` and
            ``prompts_kept`` (groups with unequal rewards in the trained batch).
        dynamic_sampling_max_draws: the cap: at most this many draws per step; when it is
            reached the batch is filled up with equal-reward groups (in draw order).

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
        loss_aggregation: how per-token losses become the loss, a name in
            :data:`bupo_core.losses.AGGREGATIONS`: ``"token-mean"`` (paper code, default),
            ``"sequence-mean"`` (paper eq.) or ``"sequence-sum"`` (Dr. GRPO: each response's
            summed token losses / ``max_new_tokens``, averaged over responses).
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
    internal_phase_only: bool = False
    ipa_norm: Literal["none", "final"] = "none"
    ipa_lr: float | None = None
    reset_optimizer_at_switch: bool = False
    freeze_through_layer: int | None = None
    upper_lr_scale: float = 1.0
    upper_lr_layer: int | None = None
    steps: int = 100
    prompts_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int = MAX_NEW_TOKENS_ROLLOUT
    generation_batch_size: int = 64
    dynamic_sampling: bool = False
    dynamic_sampling_max_draws: int = 4
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
    loss_aggregation: LossAggregation = "token-mean"
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
    # (not generation_batch_size: the batch shape changes the sampled tokens, so a resume must keep it)
    RESUMABLE_CHANGES = (
        "steps",
        "save_every",
        "keep_checkpoints",
        "out_dir",
        "device",
        "grader_timeout_s",
        "allow_test_set_training",
    )

    # settings of older versions that no longer change anything (dropped when a config.json is read)
    OBSOLETE_KEYS = ("full_entropy_in_internal_phase",)

    # what the run loop records next to the settings in config.json (not settings; dropped when it is read)
    RECORDED_KEYS = ("task_data_sha256",)

    def validate(self) -> None:
        """Raise :class:`InputFormatError` for settings that cannot work, naming the fix."""
        if self.method not in ("grpo", "bupo"):
            raise InputFormatError(f"method must be 'grpo' or 'bupo', got {self.method!r}")
        if self.group_size < 2:
            raise InputFormatError(
                f"group_size must be at least 2 (GRPO compares the G responses to one prompt with each other), got {self.group_size}"
            )
        if self.method == "bupo":
            if self.layer is None:
                raise InputFormatError(
                    "method='bupo' needs layer=l (paper numbering 1..L); "
                    "pick the boundary layer from the FFN entropy change (notebook 02, `bupo entropy`)"
                )
            if self.inter_steps < 0:
                raise InputFormatError(f"inter_steps must be >= 0, got {self.inter_steps}")
        for name in (
            "steps",
            "prompts_per_step",
            "max_new_tokens",
            "num_mini_batches",
            "ppo_epochs",
            "micro_batch_size",
            "logprob_chunk_size",
            "generation_batch_size",
            "dynamic_sampling_max_draws",
        ):
            if getattr(self, name) < 1:
                raise InputFormatError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.method == "bupo" and self.inter_steps >= self.steps and not self.internal_phase_only:
            raise InputFormatError(
                f"inter_steps={self.inter_steps} >= steps={self.steps}: the run would end inside the internal phase and never "
                f"reach BuPO's GRPO phase; use --inter-steps below --steps (the paper: 30 of 300), or --internal-phase-only "
                f"for an IPA-only experiment"
            )
        if self.num_mini_batches > self.prompts_per_step:
            raise InputFormatError(
                f"num_mini_batches={self.num_mini_batches} is more than prompts_per_step={self.prompts_per_step}; lower it"
            )
        for name in (
            "lr",
            "temperature",
            "top_p",
            "weight_decay",
            "adam_eps",
            "max_grad_norm",
            "eps_low",
            "eps_high",
            "kl_coef",
            "grader_timeout_s",
        ):
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
        self._validate_optimizer_and_seed()
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise InputFormatError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        check_device(self.device)
        if self.reward is not None:
            get_scorer(self.reward)
            self._validate_reward_fits_task()
        get_aggregation(self.loss_aggregation)
        check_norm(self.ipa_norm, what="ipa_norm")
        if self.ipa_lr is not None and not (self.ipa_lr > 0 and math.isfinite(self.ipa_lr)):
            raise InputFormatError(f"ipa_lr must be a positive number or None (= lr), got {self.ipa_lr}")
        if self.freeze_through_layer is not None and self.freeze_through_layer < 0:
            raise InputFormatError(
                f"freeze_through_layer must be a layer 0..L-1 (paper numbering) or None, got {self.freeze_through_layer}"
            )
        if not (self.upper_lr_scale > 0 and math.isfinite(self.upper_lr_scale)):
            raise InputFormatError(f"upper_lr_scale must be > 0, got {self.upper_lr_scale}")
        if self.upper_lr_scale != 1.0 and self.upper_lr_layer is None:
            raise InputFormatError("upper_lr_scale needs upper_lr_layer=l (the blocks above l get lr * upper_lr_scale)")
        check_precision(self.precision)
        check_training_task(self.task, self.allow_test_set_training)

    def _validate_optimizer_and_seed(self) -> None:
        """AdamW's betas each in [0, 1); the seed within 0..2**63-1 (what torch and numpy accept)."""
        betas = self.adam_betas
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise InputFormatError(f"adam_betas must be two numbers (beta1 beta2), e.g. 0.9 0.999, got {betas!r}")
        for name, b in zip(("beta1", "beta2"), betas):
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not (math.isfinite(b) and 0 <= b < 1):
                raise InputFormatError(
                    f"adam_betas: {name} must be in [0, 1), got {b!r}; use e.g. --adam-betas 0.9 0.999"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise InputFormatError(
                f"seed must be an integer in 0..{MAX_SEED} (2**63 - 1), got {self.seed!r}; use a smaller seed"
            )

    def _validate_reward_fits_task(self) -> None:
        """Refuse a reward that cannot grade this task's responses (it would score every response 0)."""
        task = str(self.task)
        file_or_hub = "a JSONL file" if task.endswith(".jsonl") else ("a hub dataset" if task in HUB_TASKS else None)
        if self.reward == "reasoning_gym" and file_or_hub is not None:
            raise InputFormatError(
                f"--reward reasoning_gym needs a reasoning-gym task (it calls that task's own scorer), but task {task!r} is "
                f"{file_or_hub}; use --reward last_number or --reward boxed_math"
            )
        template = self.template or ("boxed" if task in HUB_TASKS else "short")
        fmt = get_template(template).answer_format
        needs = SCORER_ANSWER_FORMATS.get(self.reward)  # type: ignore[arg-type]
        if needs is not None and fmt not in needs:
            raise InputFormatError(
                f"--reward {self.reward} reads the answer as {' or '.join(needs)}, but template {template!r} asks for "
                f"{fmt.replace('_', ' ')} answers, so every response would score 0; use --template boxed (or qwen3-boxed) "
                f"or --reward last_number"
            )

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
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k not in cls.OBSOLETE_KEYS and k not in cls.RECORDED_KEYS}
        if "bf16_autocast" in d:  # older versions: bf16_autocast on/off/auto is precision bf16/fp32/auto
            old = d.pop("bf16_autocast")
            d.setdefault("precision", {"on": "bf16", "off": "fp32"}.get(old, "auto"))
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigMismatchError(f"unknown config keys {unknown}; this config.json was written by another version")
        d = dict(d)
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        return cls(**d)

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields that differ (ignoring :attr:`RESUMABLE_CHANGES`): ``{name: (self, other)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in self.RESUMABLE_CHANGES and a[k] != b[k]}


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


# --------------------------------------------------------------------------- the run's state
class Trainer:
    """The state of one GRPO or BuPO run on one device, built from a :class:`TrainConfig`.

    It holds what a step reads and advances (model, tokenizer, adapter, task, grader, optimizer,
    trainable parameters, reference model, counters); the step itself is
    :func:`bupo_core.step.train_step` and the run loop :func:`bupo_core.loop.run_training`
    (:meth:`train_step` and :meth:`train` call them).

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

    Attributes:
        step: the last completed step; data_position: prompts served so far (the task order);
        nonfinite_streak: consecutive skipped non-finite updates.
        precision: the resolved :class:`~bupo_core.precision.PrecisionChoice` (mode, reason, autocast);
            scaler: its :class:`~bupo_core.precision.LossScaler` (dynamic loss scaling in fp16).
        params: trainable parameters; upper_ids: ids of the parameters the internal policy does not
            depend on (they never move in the internal phase).
        in_update, interrupt_requested: set by the step and the loop's signal handler.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: nn.Module | None = None,
        tokenizer: Any = None,
        task: Task | None = None,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        config.validate()
        self.config = config
        # the task (file errors, generator settings) and the folder are checked before the slow model load
        self.task = task or load_task(
            config.task,
            size=config.task_size,
            seed=config.seed,
            template=config.template,
            scorer=config.reward,
            **config.task_kwargs,
        )
        self.out_dir = runs.claim_run_dir(config.out_dir, resume=resume, overwrite=overwrite)
        self.ckpt_root = self.out_dir / runs.CHECKPOINTS
        self.metrics_path = self.out_dir / runs.METRICS
        self.step = 0
        self.data_position = 0
        self.nonfinite_streak = 0
        self.resumed_from = loop.check_resume(self.out_dir, config, self.task) if resume else None
        if self.resumed_from is not None:
            model, tokenizer = models.load_model(str(self.resumed_from), device=config.device, dtype=config.dtype)
        elif model is None:
            model, tokenizer = models.load_model(
                config.model, device=config.device, dtype=config.dtype, seed=config.seed
            )
        if tokenizer is None:
            raise InputFormatError("pass the tokenizer together with the model")
        # float32 master weights whatever the load dtype (bf16 on CUDA): AdamW on bf16 weights rounds
        # away updates below ~2^-8 of a weight (all of them at lr 1e-6); bf16 compute comes from autocast
        self.model, self.tokenizer = float32_master_weights(model), tokenizer
        self.adapter = ArchitectureAdapter(self.model)
        if config.method == "bupo":
            self.adapter.check_layer(config.layer, allow_embedding=False)  # type: ignore[arg-type]
        self.device = next(self.model.parameters()).device
        # the compute precision, chosen by the card (bupo_core.precision) and printed with its reason
        self.precision = resolve_precision(config.precision, self.device)
        self.scaler = LossScaler(self.precision.mode, self.device.type, device=str(self.device))
        print(self.precision.message())
        check_prompt_lengths(self.task, self.tokenizer, self.model, config.max_new_tokens)
        self.grader = Grader(
            scorer=config.reward or self.task.scorer, binary=config.binary_reward, timeout_s=config.grader_timeout_s
        )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.params, groups = parameter_groups(self.model, self.adapter, config)
        self.optimizer = new_optimizer(groups, config)
        self.reference: nn.Module | None = (
            copy.deepcopy(self.model).eval().requires_grad_(False) if config.kl_coef > 0 else None
        )
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.upper_ids = internal_phase_frozen_ids(self.adapter, config)
        if self.resumed_from is not None:
            loop.load_state(self, self.resumed_from)
        self.interrupt_requested = False
        self.in_update = False

    def train_step(self) -> dict:
        """Run one step (:func:`bupo_core.step.train_step`) and return its metrics (not yet written)."""
        return step.train_step(self)

    def train(self, *, progress: bool = False, callback: Callable[[dict], None] | None = None) -> TrainResult:
        """Run steps ``step + 1 .. config.steps`` (:func:`bupo_core.loop.run_training`)."""
        return loop.run_training(self, progress=progress, callback=callback)

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/checkpoint-<step>/`` (:func:`bupo_core.loop.save_checkpoint`); returns its path."""
        return loop.save_checkpoint(self)


# --------------------------------------------------------------------------- building the state
def params_above(model: nn.Module, adapter: ArchitectureAdapter, layer: int) -> list[nn.Parameter]:
    """Blocks layer+1..L, the final norm and an untied E_u: the "upper" part of the model."""
    params = list(adapter.upper_parameters(layer))
    if not adapter.tied_embeddings:
        params += list(model.get_output_embeddings().parameters())
    return params


def parameter_groups(
    model: nn.Module, adapter: ArchitectureAdapter, cfg: TrainConfig
) -> tuple[list[nn.Parameter], list[dict]]:
    """Trainable parameters and AdamW groups (``lr_scale`` multiplies the step's lr).

    ``freeze_through_layer`` removes the embedding and blocks 1..l from training
    (``requires_grad=False``); ``upper_lr_scale`` puts the blocks above ``upper_lr_layer``
    (with the final norm and an untied E_u) in a group with a scaled lr.
    """

    def split_layer(layer: int, name: str) -> set[int]:  # 0..L-1: "embedding and blocks 1..l" vs "blocks l+1..L"
        adapter.check_layer(
            layer,
            allow_embedding=True,
            below_top=True,
            what=f"{name} (the embedding and blocks 1..l below it, the blocks above it)",
        )
        return {id(p) for p in params_above(model, adapter, layer)}

    every = list(model.parameters())
    frozen: set[int] = set()
    if cfg.freeze_through_layer is not None:
        keep = split_layer(cfg.freeze_through_layer, "freeze_through_layer")
        frozen = {id(p) for p in every if id(p) not in keep}
    upper = split_layer(cfg.upper_lr_layer, "upper_lr_layer") if cfg.upper_lr_layer is not None else set()
    for p in every:
        p.requires_grad_(id(p) not in frozen)
    trainable = [p for p in every if id(p) not in frozen]
    groups = [
        {"params": [p for p in trainable if id(p) not in upper], "lr_scale": 1.0, "name": "lower"},
        {"params": [p for p in trainable if id(p) in upper], "lr_scale": float(cfg.upper_lr_scale), "name": "upper"},
    ]
    return trainable, [g for g in groups if g["params"]]


def new_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over ``groups`` (fused kernel with ``fused_optimizer``, else the per-tensor loop)."""
    impl = {"fused": True} if cfg.fused_optimizer else {"foreach": False}
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay, **impl
    )


def internal_phase_frozen_ids(adapter: ArchitectureAdapter, cfg: TrainConfig) -> set[int]:
    """Ids of the parameters the internal policy does not depend on (blocks above l, and the final
    norm unless ``ipa_norm="final"`` makes it part of that policy); they never move in the internal phase."""
    if cfg.method != "bupo":
        return set()
    ids = {id(p) for p in adapter.upper_parameters(cfg.layer)}  # type: ignore[arg-type]
    if cfg.ipa_norm == "final":
        ids -= {id(p) for p in adapter.final_norm.parameters()}
    return ids


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute block activations in backward (non-reentrant), across transformers versions."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def check_prompt_lengths(task: Task, tokenizer: Any, model: nn.Module, max_new_tokens: int) -> None:
    """Refuse, before step 1, an example whose prompt + max_new_tokens exceeds the context (naming file:line)."""
    limit = context_length(model)
    if limit is None or not task.examples:
        return
    kwargs = task.chat_template_kwargs
    overhead = len(encode_prompt(tokenizer, task.template.messages(""), chat_template_kwargs=kwargs)) + 2
    for i, e in enumerate(task.examples):
        if (
            len(e.question.encode("utf-8")) + overhead < limit - max_new_tokens
        ):  # a token covers >= 1 byte: cannot be too long
            continue
        ids = encode_prompt(tokenizer, task.prompt(e), chat_template_kwargs=kwargs)
        where = e.source.removeprefix("jsonl:") or f"example {i}"
        check_fits_context(len(ids), max_new_tokens, limit, where, "Shorten or remove this example")


def train(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Build a :class:`Trainer` and run it (``kwargs`` go to the constructor, e.g. ``resume=True``)."""
    progress = kwargs.pop("progress", False)
    callback = kwargs.pop("callback", None)
    return Trainer(config, **kwargs).train(progress=progress, callback=callback)
