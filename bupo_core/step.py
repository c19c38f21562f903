"""One GRPO / BuPO training step, read top to bottom: :func:`train_step`.

::

    prompts  = task.batch(data_position, prompts_per_step)                  # (dynamic sampling: more, see below)
    rollout  = generate(full policy, prompts, G samples each)              # always the FULL policy
    rewards  = grader(rollout.texts)                                      # time-limited, crash-proof
    A        = group_advantages(rewards, G)
    old_logp = logp of the sampled tokens under the step's policy, weights before any update
    for each mini-batch (num_mini_batches per step, ppo_epochs times):    # update_policy
        minibatch_gradients: logp with grad; loss = POLICY_LOSSES[loss](logp, old_logp, A), aggregated
                             by AGGREGATIONS[loss_aggregation]; backward (micro-batches, accumulation)
        optimizer_step: drop gradients above the layer; clip grad norm; AdamW step

The step's policy is given by a *layer*: ``None`` is the full model (GRPO, and BuPO after
``inter_steps``); ``l`` is the internal layer policy pi^l = softmax(H^l E_u^T) (BuPO's internal
phase, Internal Policy Alignment). Nothing else differs between the two phases.

Speed options are helpers the step calls, never branches of the algorithm:

* :func:`rows_to_score_first` (``score_needed_rows_only``): which rows need old log-probs before
  the first update (the first mini-batch's own first forward gives its own);
* :func:`active_rows` (``skip_zero_advantage_rows``): rows whose advantage is 0 are not run;
* :func:`full_policy_entropy`: the logged entropy, read from the sampler when possible;
* ``share_prefill`` and ``fused_optimizer`` live in the sampler and the optimizer.

Dynamic sampling (``TrainConfig.dynamic_sampling``, as in DAPO) is :func:`sample_groups`: it
draws batches of prompts until ``prompts_per_step`` groups with unequal rewards are found or
``dynamic_sampling_max_draws`` batches were drawn.

The step reads and advances the run's state (:class:`bupo_core.trainer.Trainer`: model,
optimizer, counters); the run loop around it (folder, resume, checkpoints, signals, metrics
rows) is :mod:`bupo_core.loop`.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import BupoError
from .grpo import group_advantages, masked_mean
from .losses import get_aggregation, get_policy_loss
from .policy_head import policy_logprobs
from .rollout import Rollout, SamplingConfig, concat_groups, generate
from .sequences import PackedBatch, context_length
from .tasks import Example

if TYPE_CHECKING:  # the step reads the run's state; trainer imports this module (a cycle at run time)
    from .trainer import TrainConfig, Trainer


class TrainingError(BupoError, RuntimeError):
    """Training cannot continue (repeated non-finite updates); the message says what to change."""


# --------------------------------------------------------------------------- the step
def train_step(run: Trainer) -> dict:
    """Run one step (rollout, rewards, advantages, old log-probs, updates) and return its metrics row.

    Advances ``run.step`` and ``run.data_position``; the row is not written (the loop does that).
    """
    cfg = run.config
    step = run.step + 1
    phase = cfg.phase(step)
    layer = cfg.layer if phase == "internal" else None  # the policy this step trains (None = full model)
    if cfg.method == "bupo" and cfg.reset_optimizer_at_switch and cfg.inter_steps > 0 and step == cfg.inter_steps + 1:
        run.optimizer.state.clear()  # fresh AdamW moments for the full policy (resume-safe: saved state is post-reset)
    lr = set_learning_rate(run.optimizer, cfg.lr_at(step))

    # 1. rollout with the full policy, graded
    t0 = time.perf_counter()
    sample = sample_groups(run, step)
    rollout, rewards = sample.rollout, sample.rewards
    t1 = time.perf_counter()

    # 2. group advantages
    adv, zero_groups = group_advantages(rewards, cfg.group_size)
    t2 = time.perf_counter()
    all_zero = bool(zero_groups.all())
    if all_zero:
        warnings.warn(
            f"step {step}: every group has equal rewards (mean reward {float(rewards.mean()):.2f}), so every advantage is 0 "
            "and this step cannot learn; updates skipped. If this persists, use an easier task, a larger group_size, "
            "more prompts_per_step or --dynamic-sampling.",
            stacklevel=2,
        )
    batch = rollout.pack(run.pad_id, max_length=context_length(run.model))

    # 3. old log-probs (and entropies) under the step's policy, weights before any update
    score_rows, have_old = rows_to_score_first(cfg, phase, adv)
    old_logp, old_ent = score_batch(run, batch, layer, rows=score_rows)
    ref_logp = score_batch(run, batch, layer, model=run.reference)[0] if run.reference is not None else None
    internal = phase == "internal"
    internal_entropy = masked_mean(old_ent, batch.prediction_mask) if internal else None
    internal_logprob = masked_mean(old_logp, batch.prediction_mask) if internal else None
    entropy = full_policy_entropy(run, rollout, batch, phase, old_ent)

    # 4. mini-batch updates (none when no group has signal)
    if all_zero:
        upd = no_update_stats(skipped=num_minibatches(cfg, len(batch) // cfg.group_size) * cfg.ppo_epochs)
    else:
        # an interrupt now finishes the step first: in_update stays set until the loop has written the
        # step's row, so the update is never kept without its counter and row (see bupo_core.loop)
        run.in_update = True
        try:
            upd = update_policy(run, batch, adv, layer, old_logp=old_logp, ref_logp=ref_logp, have_old=have_old)
        except BaseException:
            run.in_update = False
            raise
    t3 = time.perf_counter()

    run.in_update = True  # (a step without an update too: its counter and row go together)
    run.step = step
    run.data_position = sample.data_position
    lengths = rollout.response_lengths
    n_rows, n_tokens = max(len(lengths), 1), sum(lengths)
    return {
        "step": step,
        "phase": phase,
        "layer": layer,
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "reward_mean_drawn": sample.reward_mean_drawn,
        "prompts_drawn": sample.prompts_drawn,
        "prompts_kept": int((~zero_groups).sum()),
        "loss": upd["loss"],
        "zero_adv_group_frac": float(zero_groups.float().mean()),
        "clip_frac": upd["clip_frac"],
        "approx_kl": upd["approx_kl"],
        "kl_ref": upd["kl_ref"],
        "entropy": entropy,
        "internal_entropy": internal_entropy,
        "internal_logprob": internal_logprob,
        "response_length_mean": n_tokens / n_rows,
        "finished_frac": sum(rollout.finished) / n_rows,
        "grad_norm": upd["grad_norm"],
        "updates": upd["updates"],
        "ipa_updates": upd["updates"] if internal else 0,
        "skipped_updates": upd["skipped_updates"],
        "nonfinite_updates": upd["nonfinite_updates"],
        "grader_failures": sample.grader_failures,
        "grader_timeouts": sample.grader_timeouts,
        "time_generate": t1 - t0,
        "time_score": t2 - t1,
        "time_update": t3 - t2,
        "tokens_per_s": n_tokens / max(t3 - t0, 1e-9),
        "data_position": run.data_position,
        "lr": lr,
        "sample_text": rollout.texts[0][:200],
    }


# --------------------------------------------------------------------------- the update phase
def update_policy(
    run: Trainer,
    batch: PackedBatch,
    advantages: torch.Tensor,
    layer: int | None,
    *,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    have_old: torch.Tensor | None = None,
) -> dict:
    """The update phase of one step: every mini-batch update for a packed rollout batch (public API).

    The ``B * G`` rows of ``batch`` are B groups of G consecutive responses (prompt-major). They
    are split into ``num_mini_batches`` contiguous mini-batches of groups, ``ppo_epochs`` times;
    each mini-batch is one :func:`minibatch_gradients` and one :func:`optimizer_step` of
    ``run.optimizer`` on ``run.model``. This is exactly what :func:`train_step` applies after its
    rollout, so an alternative trainer can be checked against it on the same batch.

    Args:
        run: the run's state (:class:`~bupo_core.trainer.Trainer`: model, optimizer, config).
        batch: the packed rows, [n, T] with n = B * G.
        advantages: [n] per-response advantages.
        layer: ``None`` for the full policy; ``l`` (paper numbering, 1..L) for the internal layer
            policy of BuPO's internal phase (the parameters above ``l`` then never move).
        old_logp: [n, T] log-probs of the sampled tokens under the weights before this update
            phase; ``None`` = computed here, for every row.
        ref_logp: [n, T] log-probs under the frozen reference (``kl_coef > 0``); ``None`` = computed
            here when the run has a reference.
        have_old: [n] bool, the rows whose ``old_logp`` is given; the others (the first mini-batch,
            see :func:`rows_to_score_first`) take it from their own first forward.

    Returns:
        ``{"loss", "clip_frac", "approx_kl", "kl_ref", "grad_norm"}`` (means over the updates) and
        the counts ``"updates"``, ``"skipped_updates"``, ``"nonfinite_updates"``.
    """
    cfg = run.config
    if old_logp is None:
        old_logp, have_old = score_batch(run, batch, layer)[0], None
    if ref_logp is None and run.reference is not None:
        ref_logp = score_batch(run, batch, layer, model=run.reference)[0]
    have_old = torch.ones(len(batch), dtype=torch.bool) if have_old is None else have_old.clone()
    old_logp = old_logp.clone()
    G = cfg.group_size
    stats: dict[str, list[float]] = {"loss": [], "clip_frac": [], "approx_kl": [], "grad_norm": [], "kl_ref": []}
    updates = skipped = nonfinite = 0
    run.model.train()
    for _epoch in range(cfg.ppo_epochs):
        for mb_groups in split_groups(len(batch) // G, cfg.num_mini_batches):
            rows = [g * G + i for g in mb_groups for i in range(G)]
            if (updates or nonfinite) and not bool(have_old[active_rows(cfg, rows, advantages)].all()):
                raise RuntimeError("old log-probs missing after an optimizer step; score these rows first")
            grads = minibatch_gradients(run, batch, rows, old_logp, ref_logp, advantages, layer, have_old)
            if grads is None:
                skipped += 1
                continue
            gnorm = optimizer_step(run, grads["loss"], layer)
            if gnorm is None:
                nonfinite += 1
                continue
            updates += 1
            stats["grad_norm"].append(gnorm)
            for key in ("loss", "clip_frac", "approx_kl", "kl_ref"):
                stats[key].append(grads[key])
    run.model.eval()
    return {
        **{k: (sum(v) / len(v) if v else 0.0) for k, v in stats.items()},
        "updates": updates,
        "skipped_updates": skipped,
        "nonfinite_updates": nonfinite,
    }


def minibatch_gradients(
    run: Trainer,
    batch: PackedBatch,
    rows: list[int],
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    adv: torch.Tensor,
    layer: int | None,
    have_old: torch.Tensor,
) -> dict[str, float] | None:
    """Zero the gradients and accumulate those of one mini-batch (``rows`` of ``batch``).

    The loss is ``POLICY_LOSSES[config.loss]``, aggregated by ``AGGREGATIONS[config.loss_aggregation]``
    with that aggregation's normaliser of the whole mini-batch, so micro-batches add up to its
    value. Rows that :func:`active_rows` leaves out are not run (their loss and gradient are 0;
    the normaliser still counts them). Rows whose ``have_old`` is False get their old log-probs
    from this forward (valid only before any optimizer step on this batch); ``old_logp`` [n, T]
    and ``have_old`` [n] are updated in place.

    Returns:
        ``{"loss", "clip_frac", "approx_kl", "kl_ref"}`` (token-weighted over the mini-batch), or
        ``None`` when every row was left out (no update).
    """
    cfg = run.config
    loss_fn = get_policy_loss(cfg.loss)
    normalizer = get_aggregation(cfg.loss_aggregation).normalizer(
        batch.prediction_mask[rows].float(), cfg.max_new_tokens
    )
    active = active_rows(cfg, rows, adv)
    if not active:
        return None
    run.optimizer.zero_grad(set_to_none=True)
    out = {"loss": 0.0, "clip_frac": 0.0, "approx_kl": 0.0, "kl_ref": 0.0}
    weight = 0.0
    T = batch.input_ids.shape[1]
    for s in range(0, len(active), cfg.micro_batch_size):
        r_idx = active[s : s + cfg.micro_batch_size]
        sub = batch.select(r_idx).to(run.device)
        w = sub.input_ids.shape[1]
        logp, _ = logprobs(run, sub, layer)
        if not bool(have_old[r_idx].all()):  # weights unchanged since the rollout: this forward *is* the old policy
            old_logp[r_idx, T - w :] = logp.detach().float().cpu()
            have_old[r_idx] = True
        res = loss_fn(
            cfg,
            logp,
            old_logp[r_idx][:, T - w :].to(run.device),
            adv[r_idx].to(run.device),
            sub.prediction_mask,
            aggregation=cfg.loss_aggregation,
            normalizer=normalizer,
            kl_coef=cfg.kl_coef,
            ref_logp=ref_logp[r_idx][:, T - w :].to(run.device) if ref_logp is not None else None,
        )
        run.scaler.backward(res.loss)  # fp16: scaled by the dynamic loss scale (bupo_core.precision)
        out["loss"] += float(res.loss.detach())
        k = float(sub.prediction_mask.sum())
        weight += k
        for key in ("clip_frac", "approx_kl", "kl_ref"):
            out[key] += getattr(res, key) * k
    for key in ("clip_frac", "approx_kl", "kl_ref"):
        out[key] /= max(weight, 1.0)
    return out


def optimizer_step(run: Trainer, loss: float, layer: int | None) -> float | None:
    """Clip the accumulated gradients and take one optimizer step.

    With ``layer`` set (internal phase) the gradients of everything above ``layer`` are dropped
    first, so those parameters stay bit-identical. A non-finite loss or gradient norm skips the
    step (``None`` is returned); ``max_nonfinite_updates`` in a row raise :class:`TrainingError`.
    In fp16 the gradients are unscaled before clipping, and an overflow at a loss scale >= 1 with a
    finite loss halves the scale and skips the step without counting as non-finite (the usual fp16
    start-up, not a divergence).

    Returns:
        The gradient norm before clipping, or ``None`` when the step was skipped.
    """
    cfg = run.config
    if layer is not None:  # defensive: nothing above the target layer may move
        for p in run.params:
            if id(p) in run.upper_ids:
                p.grad = None
    run.scaler.unscale_(run.optimizer)  # fp16: the true gradients before clipping
    grads = [p for p in run.params if p.grad is not None]
    gnorm = torch.nn.utils.clip_grad_norm_(grads, cfg.max_grad_norm) if grads else torch.tensor(0.0)
    if math.isfinite(loss) and not torch.isfinite(gnorm) and run.scaler.enabled and run.scaler.scale >= 1.0:
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.skip()  # fp16 overflow at this loss scale: halve it, skip the step
        return None
    if not (math.isfinite(loss) and torch.isfinite(gnorm)):
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.skip()
        run.nonfinite_streak += 1
        warnings.warn(
            f"step {run.step + 1}: non-finite loss ({loss}) or gradient norm ({float(gnorm)}); update skipped",
            stacklevel=3,
        )
        if run.nonfinite_streak >= cfg.max_nonfinite_updates:
            raise TrainingError(
                f"{run.nonfinite_streak} consecutive updates had a non-finite loss or gradient (last at step {run.step + 1}); "
                f"training stopped. Lower lr (now {cfg.lr}), keep max_grad_norm, use float32 weights (dtype='float32'), "
                f"or resume from the last checkpoint with a smaller lr."
            )
        return None
    run.nonfinite_streak = 0
    run.scaler.step(run.optimizer)
    run.optimizer.zero_grad(set_to_none=True)
    return float(gnorm)


# --------------------------------------------------------------------------- rollout (dynamic sampling)
@dataclass
class Sample:
    """The graded rollout a step trains on.

    Attributes:
        examples: the ``prompts_per_step`` examples of the batch.
        rollout: their ``prompts_per_step * G`` responses (prompt-major).
        rewards: [prompts_per_step * G] float32.
        prompts_drawn: prompts sampled and graded this step (> prompts_per_step with dynamic sampling).
        data_position: the task position after this step's draws.
        reward_mean_drawn: mean reward over every drawn response (the kept batch's mean is biased
            towards 0.5 by dynamic sampling).
        grader_failures, grader_timeouts: over every drawn response.
    """

    examples: list[Example]
    rollout: Rollout
    rewards: torch.Tensor
    prompts_drawn: int
    data_position: int
    reward_mean_drawn: float
    grader_failures: int
    grader_timeouts: int


def sample_groups(run: Trainer, step: int) -> Sample:
    """Sample and grade ``prompts_per_step`` groups of G responses with the full policy.

    Without dynamic sampling: one draw of the next ``prompts_per_step`` prompts. With it (DAPO's
    dynamic sampling): draws of ``prompts_per_step`` prompts each until ``prompts_per_step``
    groups with unequal rewards are found or ``dynamic_sampling_max_draws`` draws were made; the
    batch is the first ``prompts_per_step`` groups with unequal rewards in draw order, filled up
    (only when the cap stopped the draws) with equal-reward groups in draw order. Draw ``k`` of
    step ``s`` samples with seed ``seed * 1_000_003 + s + k * 1_000_000_007`` (draw 0 is the seed
    without dynamic sampling), and the task position advances by every drawn prompt, so the run
    stays deterministic and resumes exactly.
    """
    cfg = run.config
    P, G = cfg.prompts_per_step, cfg.group_size
    sampling = SamplingConfig(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        batch_size=cfg.generation_batch_size,
        share_prefill=cfg.share_prefill,
    )
    max_draws = cfg.dynamic_sampling_max_draws if cfg.dynamic_sampling else 1
    position, draws = run.data_position, []
    run.model.eval()
    for k in range(max_draws):
        examples = run.task.batch(position, P)
        position += P
        with autocast(run):
            rollout = generate(
                run.model,
                run.tokenizer,
                [run.task.prompt(e) for e in examples],
                group_size=G,
                config=sampling,
                seed=cfg.seed * 1_000_003 + step + k * 1_000_000_007,
                chat_template_kwargs=run.task.chat_template_kwargs,
                record_entropy=cfg.score_needed_rows_only,
            )
        scored = run.grader(rollout.texts, [examples[i] for i in rollout.prompt_index])
        rewards = torch.tensor(scored.rewards, dtype=torch.float32)
        draws.append((examples, rollout, rewards, scored))
        if sum(int((~group_advantages(r, G)[1]).sum()) for _, _, r, _ in draws) >= P:
            break
    all_rewards = torch.cat([r for _, _, r, _ in draws])
    picks = pick_groups([group_advantages(r, G)[1] for _, _, r, _ in draws], P)
    return Sample(
        examples=[draws[d][0][g] for d, g in picks],
        rollout=concat_groups([ro for _, ro, _, _ in draws], picks),
        rewards=torch.cat([draws[d][2][g * G : (g + 1) * G] for d, g in picks]),
        prompts_drawn=P * len(draws),
        data_position=position,
        reward_mean_drawn=float(all_rewards.mean()),
        grader_failures=sum(s.failed for *_, s in draws),
        grader_timeouts=sum(s.timeouts for *_, s in draws),
    )


def pick_groups(zero_groups: list[torch.Tensor], n: int) -> list[tuple[int, int]]:
    """``n`` groups ``(draw, group)`` in draw order: those with signal first, then equal-reward ones to fill up.

    >>> pick_groups([torch.tensor([True, False]), torch.tensor([False, True])], 2)
    [(0, 1), (1, 0)]
    >>> pick_groups([torch.tensor([True, True])], 2)
    [(0, 0), (0, 1)]
    """
    order = [(d, g) for d, zero in enumerate(zero_groups) for g in range(len(zero))]
    signal = [dg for dg in order if not bool(zero_groups[dg[0]][dg[1]])]
    chosen = set(signal[:n])
    chosen |= set([dg for dg in order if dg not in chosen][: n - len(chosen)])
    return sorted(chosen)


# --------------------------------------------------------------------------- helpers (speed options, scoring)
def rows_to_score_first(cfg: TrainConfig, phase: str, adv: torch.Tensor) -> tuple[list[int] | None, torch.Tensor]:
    """Which rows need old log-probs before the first update (``score_needed_rows_only``).

    The internal phase scores every row (a truncated forward, cheap) because its log-probs and
    entropies are logged; so does everything with the option off. Otherwise only the rows that an
    update of a mini-batch *after the first* will run: the first mini-batch's own first forward
    (weights not yet changed) gives its old log-probs.

    Returns:
        ``(rows or None for all, have_old [n] bool)``: ``have_old`` is False for the rows whose old
        log-probs the first mini-batch's forward will provide.
    """
    n = len(adv)
    have_old = torch.ones(n, dtype=torch.bool)
    if not cfg.score_needed_rows_only or phase == "internal":
        return None, have_old
    if bool((adv == 0).all()):
        return [], have_old
    G = cfg.group_size
    first = {g * G + i for g in split_groups(n // G, cfg.num_mini_batches)[0] for i in range(G)}
    have_old[sorted(first)] = False
    return [r for r in active_rows(cfg, list(range(n)), adv) if r not in first], have_old


def active_rows(cfg: TrainConfig, rows: list[int], adv: torch.Tensor) -> list[int]:
    """Rows an update must run: all, or those with a non-zero advantage (``skip_zero_advantage_rows``, no KL)."""
    if not (cfg.skip_zero_advantage_rows and cfg.kl_coef == 0):
        return rows
    return [r for r in rows if float(adv[r]) != 0.0]


def full_policy_entropy(run: Trainer, rollout: Rollout, batch: PackedBatch, phase: str, old_ent: torch.Tensor) -> float:
    """Mean entropy (nats) of the full policy over the response tokens, from the cheapest source.

    With ``score_needed_rows_only`` the sampler recorded it during generation; in the full phase
    the old-log-prob pass computed it; only in the internal phase without the option does it
    cost a full forward.
    """
    if run.config.score_needed_rows_only:
        tokens = [e for row in rollout.extras["entropy"] for e in row]
        return sum(tokens) / max(len(tokens), 1)
    if phase == "internal":
        return masked_mean(score_batch(run, batch, None)[1], batch.prediction_mask)
    return masked_mean(old_ent, batch.prediction_mask)


def autocast(run: Trainer):
    """The autocast of the run's precision (``TrainConfig.precision``: bf16, fp16 or none); the policy heads stay float32 inside it."""
    return run.precision.autocast()


def logprobs(
    run: Trainer, batch: PackedBatch, layer: int | None, model: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``policy_logprobs`` of ``model`` (default the run's) for ``layer``, under the run's autocast and ``ipa_norm``."""
    model = model if model is not None else run.model
    adapter = run.adapter if model is run.model else None
    with autocast(run):
        return policy_logprobs(
            model,
            batch,
            layer=layer,
            adapter=adapter,
            chunk_size=run.config.logprob_chunk_size,
            norm=run.config.ipa_norm,
        )


@torch.no_grad()
def score_batch(
    run: Trainer,
    batch: PackedBatch,
    layer: int | None,
    *,
    model: nn.Module | None = None,
    rows: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """No-grad ``(logp, entropy)`` [n, T] of ``rows`` (default all), micro-batched; rows not scored stay 0."""
    n, T = batch.input_ids.shape
    logp, ent = torch.zeros(n, T), torch.zeros(n, T)
    rows = list(range(n)) if rows is None else rows
    mbs = run.config.micro_batch_size
    for s in range(0, len(rows), mbs):
        r_idx = rows[s : s + mbs]
        sub = batch.select(r_idx).to(run.device)
        lp, en = logprobs(run, sub, layer, model)
        w = sub.input_ids.shape[1]
        logp[r_idx, T - w :] = lp.float().cpu()
        ent[r_idx, T - w :] = en.float().cpu()
    return logp, ent


def set_learning_rate(optimizer: torch.optim.Optimizer, base: float) -> float:
    """Set every group's lr to ``base * lr_scale``; returns ``base``."""
    for group in optimizer.param_groups:
        group["lr"] = base * group.get("lr_scale", 1.0)
    return base


def split_groups(num_groups: int, parts: int) -> list[list[int]]:
    """Split group indices 0..num_groups-1 into ``parts`` contiguous, near-equal lists (empty ones dropped).

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


def num_minibatches(cfg: TrainConfig, num_groups: int) -> int:
    """Mini-batches per epoch for ``num_groups`` groups."""
    return len(split_groups(num_groups, cfg.num_mini_batches))


def no_update_stats(skipped: int) -> dict:
    """The update statistics of a step that applied no update."""
    return {
        "loss": 0.0,
        "clip_frac": 0.0,
        "approx_kl": 0.0,
        "kl_ref": 0.0,
        "grad_norm": 0.0,
        "updates": 0,
        "skipped_updates": skipped,
        "nonfinite_updates": 0,
    }
