"""BuPO on TRL's ``GRPOTrainer``: the same algorithm as :class:`bupo_core.trainer.Trainer`, data-parallel through accelerate.

Install with ``pip install bupo-notebooks[trl]``. ``trl`` is imported only when
:func:`bupo_grpo_trainer_class` (or anything that needs the class) is called, so the core package
never needs it.

What TRL keeps doing: sampling with the FULL policy (``model.generate``, or nothing else: vLLM is
refused), the dataloader and its per-process sharding, gradient accumulation, the accelerate
backends (DDP, DeepSpeed ZeRO-2, multi-node), gradient clipping, logging and checkpoints
(``trainer_state.json``).

What this module replaces, so that one update equals ours:

* **log-probs** (:meth:`BupoGRPOTrainer._get_per_token_logps_and_entropies` and the loss): the
  rows are re-packed into our left-padded layout (:class:`~bupo_core.sequences.PackedBatch`) and
  scored by :func:`bupo_core.trainer.policy_logprobs`: for a rollout in the internal phase the
  internal policy of layer ``l`` (paper numbering: a truncated forward through the embedding and
  blocks 1..l, raw ``H^l`` or final-normed with ``ipa_norm="final"``), otherwise the full policy;
  both through our chunked float32 head (never a [batch x length x vocabulary] tensor). The
  gradient-carrying forward goes through the accelerate/DDP wrapper, so gradients are all-reduced.
* **loss**: ours (``bupo_core.losses.POLICY_LOSSES``, default the clipped surrogate with the paper
  code's dual clip and log-ratio clamp), normalised by the token (or sequence) count of the whole
  optimizer step across all processes and accumulation micro-batches, exactly like our mini-batch
  normaliser. Zero-advantage rows are not run (same gradient); an optimizer step whose rows all
  have advantage 0, on every process, is skipped (no weight-decay drift), as in ours.
* **optimizer / schedule**: AdamW on every trainable parameter (weight decay on all, as ours;
  Hugging Face's default exempts biases and norms), constant learning rate, ``ipa_lr`` in the
  internal phase, optional moment reset at the switch.
* **the internal phase**: for the first ``inter_steps`` optimizer steps the blocks above ``l`` (and
  the final norm unless ``ipa_norm="final"``) have their gradients dropped before every optimizer
  step, so AdamW (weight decay included) leaves them bit-identical.

Phases are decided per rollout (the generation batch): ``inter_steps`` must be a multiple of the
optimizer steps per rollout (``steps_per_generation * num_iterations / gradient_accumulation_steps``)
so that the old log-probs of a rollout come from the same policy its updates optimise.

Logged (TRL's logs, ``trainer_state.json``): ``bupo/layer`` (0 in the full phase),
``bupo/internal_logprob`` and ``bupo/internal_entropy`` (internal phase, token means over the rows
the update ran on), ``entropy`` (full policy, full phase), ``bupo/clip_frac``,
``bupo/dual_clip_frac``, ``bupo/approx_kl``, ``bupo/loss``, ``bupo/skipped_updates``.

Differences from our :class:`~bupo_core.trainer.Trainer` that remain, by design of TRL:
advantages use ``std + 1e-4`` (ours ``1e-6``; with binary rewards the std of a mixed group is
>= 0.33, so the advantages differ by < 3e-4 relative); TRL shuffles rows before cutting the
rollout into mini-batches (ours cuts contiguous groups); a non-finite update is not skipped; the
rollout batch is ``generation_batch_size`` sequences across all processes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .adapter import ArchitectureAdapter
from .errors import InputFormatError
from .losses import get_aggregation, get_policy_loss
from .policy_head import policy_logprobs
from .sequences import PackedBatch, pack_sequences

__all__ = [
    "BupoTRLConfig",
    "bupo_grpo_trainer_class",
    "completion_to_packed",
    "estimate_memory_gib",
    "pack_prompt_completion",
    "packed_to_completion",
    "task_dataset",
    "task_reward_function",
]


@dataclass
class BupoTRLConfig:
    """BuPO's settings on top of a ``trl.GRPOConfig`` (which keeps the batch, lr, clip range, steps).

    Attributes:
        method: ``"bupo"`` (internal phase, then GRPO) or ``"grpo"`` (full policy throughout).
        layer: l, paper numbering 1..L (the output of block l). Required for ``"bupo"``.
        inter_steps: the number of internal-phase OPTIMIZER steps (TRL's ``global_step`` unit);
            a multiple of the optimizer steps per rollout. The paper's s_inter = 30 rollout steps
            with 4 updates each is ``inter_steps=120``.
        ipa_norm: ``"none"`` (softmax(H^l E_u^T), the paper's) or ``"final"`` (the final norm first).
        ipa_lr: learning rate in the internal phase (``None`` = ``GRPOConfig.learning_rate``).
        reset_optimizer_at_switch: clear AdamW's moments at the first full-phase step.
        loss: a name in :data:`bupo_core.losses.POLICY_LOSSES` (``"grpo"``: clipped surrogate with
            dual clip; the clip range comes from ``GRPOConfig.epsilon`` / ``epsilon_high``).
        dual_clip: c of the dual clip (paper code: 10); ``None`` = off.
        loss_aggregation: a name in :data:`bupo_core.losses.AGGREGATIONS` (``"token-mean"``: the
            paper's code; ``"sequence-mean"``; ``"sequence-sum"``), normalised over the whole
            optimizer step on every process.
        skip_zero_advantage_rows: do not run forward/backward on zero-advantage rows (same
            gradient) and skip optimizer steps in which every row, on every process, has advantage 0.
        logprob_chunk_size: tokens per chunk of the float32 head (memory: one [chunk x vocab] block).
        generation_batch_size: rows per ``generate`` call on each process (bounds the KV cache:
            rows x (prompt + response tokens) x per-token KV bytes); ``None`` = all of the process's
            rollout rows in one call (TRL's behaviour, which at the paper's 128 x 8 x 8,192 tokens
            on 8 GPUs needs ~150 GiB of KV cache per GPU for Qwen3-4B).
    """

    method: Literal["bupo", "grpo"] = "bupo"
    layer: int | None = None
    inter_steps: int = 30
    ipa_norm: Literal["none", "final"] = "none"
    ipa_lr: float | None = None
    reset_optimizer_at_switch: bool = False
    loss: str = "grpo"
    dual_clip: float | None = 10.0
    loss_aggregation: str = "token-mean"
    skip_zero_advantage_rows: bool = True
    logprob_chunk_size: int = 1024
    generation_batch_size: int | None = None

    def validate(self) -> None:
        """Raise :class:`InputFormatError` naming the fix for settings that cannot work."""
        if self.method not in ("bupo", "grpo"):
            raise InputFormatError(f"method must be 'bupo' or 'grpo', got {self.method!r}")
        if self.method == "bupo" and self.layer is None:
            raise InputFormatError("method='bupo' needs layer=l (paper numbering 1..L; --layer)")
        if self.inter_steps < 0:
            raise InputFormatError(f"inter_steps must be >= 0, got {self.inter_steps}")
        if self.ipa_norm not in ("none", "final"):
            raise InputFormatError(f"ipa_norm must be 'none' or 'final', got {self.ipa_norm!r}")
        if self.ipa_lr is not None and not (self.ipa_lr > 0 and math.isfinite(self.ipa_lr)):
            raise InputFormatError(f"ipa_lr must be a positive number or None, got {self.ipa_lr}")
        get_aggregation(self.loss_aggregation)
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise InputFormatError(f"dual_clip must be > 1 or None, got {self.dual_clip}")
        if self.logprob_chunk_size < 1:
            raise InputFormatError(f"logprob_chunk_size must be >= 1, got {self.logprob_chunk_size}")
        if self.generation_batch_size is not None and self.generation_batch_size < 1:
            raise InputFormatError(f"generation_batch_size must be >= 1 or None, got {self.generation_batch_size}")
        get_policy_loss(self.loss)

    def internal(self, optimizer_step: int) -> bool:
        """True when optimizer step ``optimizer_step`` (0-based, TRL's ``global_step`` before it) is in the internal phase."""
        return self.method == "bupo" and optimizer_step < self.inter_steps


class _LossSettings:
    """The fields a registered loss reads (``eps_low``, ``eps_high``, ``dual_clip``), by name."""

    def __init__(self, eps_low: float, eps_high: float, dual_clip: float | None) -> None:
        self.eps_low, self.eps_high, self.dual_clip = eps_low, eps_high, dual_clip


# --------------------------------------------------------------------------- layouts
def pack_prompt_completion(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    pad_id: int,
) -> tuple[PackedBatch, list[int]]:
    """TRL's layout (left-padded prompts [B, P] + right-padded completions [B, C]) as our packed rows.

    Rows whose completion mask is empty are left out (they carry no token to train on).

    Returns:
        ``(batch, rows)``: a :class:`PackedBatch` of the kept rows (left-padded, [len(rows), T])
        and the indices of those rows in the input.

    >>> b, rows = pack_prompt_completion(torch.tensor([[0, 5], [6, 7]]), torch.tensor([[0, 1], [1, 1]]),
    ...                                  torch.tensor([[8, 9], [3, 0]]), torch.tensor([[1, 1], [1, 0]]), 0)
    >>> b.input_ids.tolist(), b.prediction_mask.tolist(), rows
    ([[5, 8, 9], [6, 7, 3]], [[1, 1, 0], [0, 1, 0]], [0, 1])
    """
    pm, cm = prompt_mask.bool().cpu(), completion_mask.bool().cpu()
    p_ids, c_ids = prompt_ids.cpu(), completion_ids.cpu()
    rows = [i for i in range(p_ids.shape[0]) if bool(cm[i].any())]
    if not rows:
        raise InputFormatError("every completion in this batch is empty; nothing to train on")
    prompts = [p_ids[i][pm[i]].tolist() for i in rows]
    completions = [c_ids[i][cm[i]].tolist() for i in rows]
    return pack_sequences(prompts, completions, pad_id).to(prompt_ids.device), rows


def packed_to_completion(x: torch.Tensor, batch: PackedBatch, width: int) -> torch.Tensor:
    """Move per-prediction values [n, T] of packed rows onto TRL's completion grid [n, width] (0 elsewhere).

    The prediction of completion token j of a row with R response tokens sits at packed position
    ``T - R - 1 + j``.
    """
    n, T = x.shape
    out = x.new_zeros(n, width)
    for i in range(n):
        r = int(batch.response_lengths[i])
        out[i, :r] = x[i, T - r - 1 : T - 1]
    return out


def completion_to_packed(x: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """The inverse of :func:`packed_to_completion`: [n, C] completion-grid values to the packed [n, T] grid."""
    n, T = batch.input_ids.shape
    out = x.new_zeros(n, T)
    for i in range(n):
        r = int(batch.response_lengths[i])
        out[i, T - r - 1 : T - 1] = x[i, :r]
    return out


@contextmanager
def _forward_through(module: nn.Module, fn: Callable[..., Any]) -> Iterator[None]:
    """Make ``module``'s forward ``fn`` for the duration (so a DDP/DeepSpeed wrapper around it runs ``fn``).

    The wrapper's own forward (gradient all-reduce bookkeeping, unused-parameter search) runs as
    usual; only the inner module's computation is ours. An instance-level forward already set
    (accelerate's mixed-precision wrapper) is restored afterwards.
    """
    had = "forward" in module.__dict__
    old = module.__dict__.get("forward")
    module.forward = fn  # type: ignore[method-assign]
    try:
        yield
    finally:
        if had:
            module.forward = old  # type: ignore[method-assign]
        else:
            del module.forward


# --------------------------------------------------------------------------- data and rewards
def task_dataset(task: Any, size: int | None = None) -> Any:
    """A ``datasets.Dataset`` of the task's prompts in its seeded order: columns ``prompt`` and ``example_index``.

    ``example_index`` points into ``task.examples``; :func:`task_reward_function` grades with it.
    """
    import datasets  # noqa: PLC0415  (optional: datasets, the trl extra)

    n = len(task) if size is None else size
    rows = []
    for pos in range(n):
        i = task.index_at(pos)
        rows.append({"prompt": task.prompt(task.examples[i]), "example_index": i})
    return datasets.Dataset.from_list(rows)


def task_reward_function(task: Any, grader: Any) -> Callable[..., list[float]]:
    """A TRL reward function that scores completions with our :class:`~bupo_core.rewards.Grader`.

    TRL calls it with the completions (text, or chat messages) and the dataset's ``example_index``
    column; it returns one reward per completion (binary by default, timeouts and crashes score 0).
    """

    def reward(completions: Sequence[Any], example_index: Sequence[int], **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        return grader(texts, [task.examples[int(i)] for i in example_index]).rewards

    reward.__name__ = f"bupo_{grader.scorer}"
    return reward


# --------------------------------------------------------------------------- memory model
def estimate_memory_gib(
    *,
    params: int,
    hidden: int,
    layers: int,
    vocab: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
    micro_batch: int,
    seq_tokens: int,
    gen_rows: int,
    processes: int = 1,
    zero_stage: int = 0,
    chunk: int = 1024,
    checkpointing: bool = True,
) -> dict[str, float]:
    """Peak GPU memory per device of one training process, component by component (GiB).

    The components and formulas are those of ``bench/gpu_memory.py`` (float32 master weights,
    grads and AdamW states: 4P + 4P + 8P bytes; bf16 autocast copies 2P; bf16 KV cache of the
    generation rows; checkpointed block inputs; one block's recompute; three float32
    [chunk x vocab] head blocks; 1.5 GiB context), with ZeRO sharding: stage 1 divides the AdamW
    states by ``processes``, stage 2 also the gradients.

    >>> round(estimate_memory_gib(params=10**9, hidden=1024, layers=8, vocab=1000, kv_heads=8, head_dim=128,
    ...     intermediate=4096, micro_batch=1, seq_tokens=128, gen_rows=8)["weights_fp32"], 2)
    3.73
    """
    gib = 2**30
    shard_opt = processes if zero_stage >= 1 else 1
    shard_grad = processes if zero_stage >= 2 else 1
    comp = {
        "weights_fp32": 4 * params,
        "grads_fp32": 4 * params / shard_grad,
        "adamw_states_fp32": 8 * params / shard_opt,
        "autocast_bf16_weight_copies": 2 * params,
        "generation_kv_cache_bf16": gen_rows * seq_tokens * layers * 2 * kv_heads * head_dim * 2,
        "checkpointed_block_inputs": micro_batch * seq_tokens * hidden * 4 * layers if checkpointing else 0,
        "block_activations_bf16": micro_batch
        * seq_tokens
        * (12 * hidden + 4 * intermediate)
        * 2
        * (1 if checkpointing else layers),
        "logprob_chunk_fp32_blocks": 3 * chunk * vocab * 4,
        "cuda_context_and_allocator_slack": 1.5 * gib,
    }
    out = {k: v / gib for k, v in comp.items()}
    out["peak_update"] = sum(v for k, v in out.items() if k != "generation_kv_cache_bf16")
    out["peak_generation"] = (
        comp["weights_fp32"]
        + comp["adamw_states_fp32"]
        + comp["autocast_bf16_weight_copies"]
        + comp["generation_kv_cache_bf16"]
        + comp["cuda_context_and_allocator_slack"]
    ) / gib
    out["peak"] = max(out["peak_update"], out["peak_generation"])
    return out


# --------------------------------------------------------------------------- the trainer
_CLASS: list[type] = []


def bupo_grpo_trainer_class() -> type:
    """The :class:`BupoGRPOTrainer` class (imports ``trl`` on first use)."""
    if _CLASS:
        return _CLASS[0]
    try:
        from trl import GRPOTrainer  # noqa: PLC0415  (optional: the trl extra)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputFormatError("the TRL-based trainer needs TRL: pip install 'bupo-notebooks[trl]'") from exc

    class BupoGRPOTrainer(GRPOTrainer):
        """TRL's ``GRPOTrainer`` running BuPO (see the module docstring).

        Args:
            bupo: :class:`BupoTRLConfig`.
            *args, **kwargs: as for ``trl.GRPOTrainer`` (``model`` must be a model object or name,
                ``args`` a ``GRPOConfig`` with ``beta=0`` and no vLLM).
        """

        def __init__(self, *args: Any, bupo: BupoTRLConfig, **kwargs: Any) -> None:
            bupo.validate()
            self.bupo = bupo
            targs = kwargs.get("args")
            if targs is None:
                raise InputFormatError("pass args=GRPOConfig(...) to BupoGRPOTrainer")
            if targs.beta != 0.0:
                raise InputFormatError(
                    f"GRPOConfig.beta={targs.beta}: the TRL-based BuPO trainer has no KL term (the paper uses none); set beta=0.0"
                )
            if targs.use_vllm:
                raise InputFormatError(
                    "use_vllm=True is not supported by the TRL-based BuPO trainer "
                    "(vLLM's sampling log-probs are full-policy ones); set use_vllm=False"
                )
            if (
                targs.lr_scheduler_type not in ("constant", "SchedulerType.CONSTANT")
                and str(targs.lr_scheduler_type) != "SchedulerType.CONSTANT"
            ):
                raise InputFormatError(
                    f"lr_scheduler_type={targs.lr_scheduler_type!r}: BuPO uses a constant learning rate "
                    "(ipa_lr in the internal phase); set lr_scheduler_type='constant'"
                )
            if bupo.method == "bupo" and targs.ddp_find_unused_parameters is None:
                targs.ddp_find_unused_parameters = True  # blocks above l get no gradient in the internal phase
            super().__init__(*args, **kwargs)
            ga = self.args.gradient_accumulation_steps
            per_rollout = self.args.steps_per_generation * self.num_iterations
            if per_rollout % ga:
                raise InputFormatError(
                    f"steps_per_generation * num_iterations ({per_rollout}) must be a multiple of gradient_accumulation_steps ({ga})"
                )
            self.updates_per_rollout = per_rollout // ga
            if bupo.method == "bupo" and bupo.inter_steps % self.updates_per_rollout:
                raise InputFormatError(
                    f"inter_steps={bupo.inter_steps} is not a multiple of the {self.updates_per_rollout} optimizer steps per rollout "
                    "(steps_per_generation * num_iterations / gradient_accumulation_steps); a rollout's old log-probs must come from "
                    "the policy its updates optimise. Use a multiple."
                )
            unwrapped = self.model
            self.adapter = ArchitectureAdapter(unwrapped)
            upper: set[int] = set()
            if bupo.method == "bupo":
                self.adapter.check_layer(bupo.layer, allow_embedding=False)  # type: ignore[arg-type]
                upper = {id(p) for p in self.adapter.upper_parameters(bupo.layer)}  # type: ignore[arg-type]
                if bupo.ipa_norm == "final":
                    upper -= {id(p) for p in self.adapter.final_norm.parameters()}
            self._upper_params = [p for p in unwrapped.parameters() if id(p) in upper]
            self._loss_settings = _LossSettings(self.epsilon_low, self.epsilon_high, bupo.dual_clip)
            self._pad_id = (
                self.processing_class.pad_token_id
                if self.processing_class.pad_token_id is not None
                else self.processing_class.eos_token_id
            )
            self._rollout_layer: int | None = None
            self._window_stats: dict[int, tuple[float, float, float]] = {}
            self._reset_done = False
            self.bupo_history: list[dict] = []  # one entry per compute_loss call (tests and benchmarks read it)

        # ------------------------------------------------------------ phase
        def bupo_layer_at(self, optimizer_step: int) -> int | None:
            """The policy's layer for optimizer step ``optimizer_step`` (0-based): ``l`` or ``None`` (full)."""
            return self.bupo.layer if self.bupo.internal(optimizer_step) else None

        # ------------------------------------------------------------ optimizer and schedule
        def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
            """AdamW on every trainable parameter, weight decay on all (as ours); a pre-step hook freezes the upper blocks."""
            if self.optimizer is None:
                params = [p for p in self.model.parameters() if p.requires_grad]
                impl = {"fused": True} if "fused" in str(self.args.optim) else {"foreach": False}
                self.optimizer = torch.optim.AdamW(
                    params,
                    lr=self.args.learning_rate,
                    betas=(self.args.adam_beta1, self.args.adam_beta2),
                    eps=self.args.adam_epsilon,
                    weight_decay=self.args.weight_decay,
                    **impl,
                )
                self.optimizer.register_step_pre_hook(self._before_optimizer_step)
            return self.optimizer

        def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
            """Constant learning rate; ``ipa_lr`` for the internal-phase steps."""
            if self.lr_scheduler is None:
                opt = optimizer if optimizer is not None else self.optimizer
                base = self.args.learning_rate
                ipa = self.bupo.ipa_lr / base if self.bupo.ipa_lr is not None else 1.0
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    opt, lambda s: ipa if self.bupo.internal(s) else 1.0
                )
                self._created_lr_scheduler = True
            return self.lr_scheduler

        def _before_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            step = self.state.global_step
            if self.bupo.skip_zero_advantage_rows and self._window_stats.get(step, (1, 1, 1))[2] == 0:
                for group in optimizer.param_groups:  # every row of this step, on every process, had advantage 0
                    for p in group["params"]:
                        p.grad = None
                self._metrics["train"]["bupo/skipped_updates"].append(1.0)
                return
            self._metrics["train"]["bupo/skipped_updates"].append(0.0)
            if self.bupo.internal(step):
                for p in self._upper_params:
                    p.grad = None  # AdamW skips parameters without a gradient: bit-identical
            elif (
                self.bupo.reset_optimizer_at_switch
                and self.bupo.method == "bupo"
                and step == self.bupo.inter_steps
                and not self._reset_done
            ):
                optimizer.state.clear()
                self._reset_done = True

        # ------------------------------------------------------------ rollouts
        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            self._rollout_layer = self.bupo_layer_at(self.state.global_step)
            out = self._sample_and_score(inputs)
            out["bupo_layer"] = torch.tensor(-1 if self._rollout_layer is None else self._rollout_layer)
            return out

        def _sample_and_score(self, inputs: Any) -> dict[str, Any]:
            """TRL's rollout (full-policy sampling, rewards, advantages; old log-probs through our head)."""
            return super()._generate_and_score_completions(inputs)

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            """TRL's sampling, ``generation_batch_size`` rows per call (text-only; otherwise one call, as TRL)."""
            size = self.bupo.generation_batch_size
            if size is None or len(prompt_ids) <= size or images is not None or multimodal_fields or has_tool_images:
                return super()._generate_single_turn(
                    prompt_ids, images, multimodal_fields, num_generations, has_tool_images
                )
            completions, logprobs = [], []
            for s in range(0, len(prompt_ids), size):
                c, lp = super()._generate_single_turn(
                    prompt_ids[s : s + size], images, multimodal_fields, num_generations, has_tool_images
                )
                completions += list(c)
                logprobs.append(lp)
            if all(lp is None for lp in logprobs):
                return completions, None
            return completions, [x for lp in logprobs for x in lp]

        def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
            before = self._buffered_inputs
            inputs = super()._prepare_inputs(generation_batch)
            if self.model.training and self._buffered_inputs is not before:
                self._annotate_windows(self._buffered_inputs)
            return inputs

        def _annotate_windows(self, chunks: list[dict]) -> None:
            """Give every chunk its optimizer step's loss normaliser (the aggregation's, over all processes) and active-row count."""
            ga = self.args.gradient_accumulation_steps
            n_windows = len(chunks) // ga
            agg = get_aggregation(self.bupo.loss_aggregation)
            local = torch.zeros(n_windows, 3, dtype=torch.float64, device=self.accelerator.device)
            for c, chunk in enumerate(chunks):
                m = chunk["completion_mask"].float()  # same row sums as the packed prediction mask
                adv = chunk["advantages"]
                active = (adv != 0) & (m.sum(1) > 0) if self.bupo.skip_zero_advantage_rows else (m.sum(1) > 0)
                norm = agg.normalizer(m, self.max_completion_length)  # additive over rows (tokens, responses)
                local[c // ga] += torch.tensor(
                    [norm, 0.0, float(active.sum())], dtype=torch.float64, device=local.device
                )
            total = self.accelerator.reduce(local, reduction="sum") if self.accelerator.num_processes > 1 else local
            start = self.state.global_step
            self._window_stats = {}
            for rep in range(self.num_iterations):
                for w in range(n_windows):
                    norm, _, act = (float(v) for v in total[w].tolist())
                    self._window_stats[start + rep * n_windows + w] = (norm, 0.0, act)
            world = self.accelerator.num_processes
            for c, chunk in enumerate(chunks):
                norm = float(total[c // ga][0])
                chunk["bupo_normalizer"] = torch.tensor(max(norm, 1.0) / world, dtype=torch.float64)

        # ------------------------------------------------------------ log-probs
        def _policy(
            self, model: nn.Module, batch: PackedBatch, layer: int | None, grad: bool
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """(logp, entropy) [n, T] of packed rows under the layer-l or full policy; ``grad`` routes through the wrapper."""
            inner = self.accelerator.unwrap_model(model)
            adapter = self.adapter if inner is self.model else ArchitectureAdapter(inner)

            def run(input_batch: PackedBatch = batch) -> tuple[torch.Tensor, torch.Tensor]:
                return policy_logprobs(
                    inner,
                    input_batch,
                    layer=layer,
                    adapter=adapter,
                    chunk_size=self.bupo.logprob_chunk_size,
                    norm=self.bupo.ipa_norm,
                )

            with self.accelerator.autocast():
                if not grad or model is inner:
                    return run()
                with _forward_through(inner, lambda: run()):
                    return model()

        def _get_per_token_logps_and_entropies(
            self,
            model,
            input_ids,
            attention_mask,
            logits_to_keep,
            batch_size=None,
            compute_entropy=False,
            compute_aux_loss=False,
            **kwargs,
        ):
            """TRL's old / reference log-probs, on its completion grid [B, logits_to_keep], from the rollout's policy."""
            if any(v is not None for v in kwargs.values()):
                raise InputFormatError(
                    "the TRL-based BuPO trainer supports text-only models (no images, no token types)"
                )
            P = input_ids.shape[1] - logits_to_keep
            B = input_ids.shape[0]
            batch, rows = pack_prompt_completion(
                input_ids[:, :P], attention_mask[:, :P], input_ids[:, P:], attention_mask[:, P:], self._pad_id
            )
            bs = batch_size or B
            logps = torch.zeros(B, logits_to_keep, device=input_ids.device)
            ents = torch.zeros(B, logits_to_keep, device=input_ids.device)
            for s in range(0, len(rows), bs):
                sub = batch.select(list(range(s, min(s + bs, len(rows)))))
                lp, en = self._policy(model, sub, self._rollout_layer, grad=torch.is_grad_enabled())
                idx = torch.tensor(rows[s : s + bs], device=input_ids.device)
                logps[idx] = packed_to_completion(lp, sub, logits_to_keep).to(logps.dtype)
                ents[idx] = packed_to_completion(en, sub, logits_to_keep).to(ents.dtype)
            return logps, (ents if compute_entropy else None), None

        # ------------------------------------------------------------ loss
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """Our policy loss on the chunk, normalised by its optimizer step's global token count."""
            if return_outputs:
                raise ValueError("BupoGRPOTrainer does not return outputs")
            mode = "train" if self.model.training else "eval"
            layer_t = int(inputs.get("bupo_layer", torch.tensor(-1)))
            layer = None if layer_t < 0 else layer_t
            batch, rows = pack_prompt_completion(
                inputs["prompt_ids"],
                inputs["prompt_mask"],
                inputs["completion_ids"],
                inputs["completion_mask"],
                self._pad_id,
            )
            adv_all = inputs["advantages"][rows].float()
            if adv_all.ndim != 1:
                raise InputFormatError("per-token advantages are not supported by the TRL-based BuPO trainer")
            active = [
                k for k in range(len(rows)) if not (self.bupo.skip_zero_advantage_rows and float(adv_all[k]) == 0.0)
            ]
            scale = 1.0
            if not active:  # still run one row (x 0) so every process takes part in the gradient all-reduce
                active, scale = [0], 0.0
            sub = batch.select(active)
            adv = adv_all[active]
            logp, ent = self._policy(model, sub, layer, grad=True)
            old = inputs.get("old_per_token_logps")
            if old is not None:
                old_p = completion_to_packed(old[rows][active].float(), sub)
            else:  # on-policy (steps_per_generation == gradient_accumulation_steps, one iteration)
                old_p = logp.detach()
            if "bupo_normalizer" in inputs:
                normalizer = float(inputs["bupo_normalizer"])
            else:  # outside training (evaluation): this chunk alone
                normalizer = get_aggregation(self.bupo.loss_aggregation).normalizer(
                    batch.prediction_mask.float(), self.max_completion_length
                )
            loss_fn = get_policy_loss(self.bupo.loss)
            out = loss_fn(
                self._loss_settings,
                logp,
                old_p,
                adv,
                sub.prediction_mask,
                aggregation=self.bupo.loss_aggregation,
                normalizer=normalizer,
                ref_logp=None,
                kl_coef=0.0,
            )
            loss = out.loss * scale
            # statistics: token-weighted over the rows run, reduced over processes
            m = sub.prediction_mask.float() * scale
            with torch.no_grad():
                stats = torch.stack(
                    [
                        (logp.detach() * m).sum(),
                        (ent.detach() * m).sum(),
                        m.sum(),
                        torch.tensor(out.clip_frac * float(m.sum()), device=m.device),
                        torch.tensor(out.dual_clip_frac * float(m.sum()), device=m.device),
                        torch.tensor(out.approx_kl * float(m.sum()), device=m.device),
                        loss.detach().float(),
                    ]
                ).double()
                if self.accelerator.num_processes > 1:
                    stats = self.accelerator.reduce(stats, reduction="sum")
            n = max(float(stats[2]), 1.0)
            metrics = self._metrics[mode]
            metrics["bupo/layer"].append(float(layer or 0))
            if layer is not None:
                metrics["bupo/internal_logprob"].append(float(stats[0]) / n)
                metrics["bupo/internal_entropy"].append(float(stats[1]) / n)
            else:
                metrics["entropy"].append(float(stats[1]) / n)
            metrics["bupo/clip_frac"].append(float(stats[3]) / n)
            metrics["bupo/dual_clip_frac"].append(float(stats[4]) / n)
            metrics["bupo/approx_kl"].append(float(stats[5]) / n)
            metrics["bupo/loss"].append(float(stats[6]))
            self.bupo_history.append(
                {
                    "step": self.state.global_step,
                    "layer": layer,
                    "loss": float(loss.detach()),
                    "global_loss": float(stats[6]),
                    "rows": len(rows),
                    "active_rows": len(active) if scale else 0,
                    "normalizer": normalizer,
                    "clip_frac": out.clip_frac,
                    "tokens": float(sub.prediction_mask.sum()),
                }
            )
            return loss

    BupoGRPOTrainer.__module__ = __name__
    BupoGRPOTrainer.__qualname__ = "BupoGRPOTrainer"
    _CLASS.append(BupoGRPOTrainer)
    return BupoGRPOTrainer


def __getattr__(name: str) -> Any:
    """``from bupo_core.trl_bupo import BupoGRPOTrainer`` imports trl only then."""
    if name == "BupoGRPOTrainer":
        return bupo_grpo_trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def silence_trl_warnings() -> None:
    """TRL/transformers print advice meant for GPU setups on every CPU run; keep the output readable."""
    warnings.filterwarnings("ignore", message=".*use_cpu.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="trl")
