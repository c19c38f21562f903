"""GRPO maths on tensors: group advantages, sampled-token log-probs, the clipped objective.

Pure tensor code (no models, no files), so every function can be checked on tiny tensors.
The conventions follow the paper (Tan et al., arXiv 2512.19673) and its code (a fork of verl):

* advantage per response ``A_i = (R_i - mean(R_group)) / (std(R_group) + 1e-6)`` (``std`` with
  Bessel's correction, as ``torch.std`` in verl and TRL), the same for every token of the response;
* ratio ``r = exp(clamp(logp - logp_old, -20, 20))``;
* per-token loss ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))``, and for ``A < 0`` at most
  ``-c A`` (dual clip, ``c = 10``);
* ``token-mean`` aggregation (all response tokens of the batch; verl's default) or
  ``sequence-mean`` (mean per response, then over responses; the paper's equation).

Log-probabilities and entropies of the sampled tokens are computed by :func:`token_logprobs`
with the policy head's differentiable path
(:func:`bupo_core.policy_head.chunked_logprob_entropy`): chunks of tokens, a custom backward that
recomputes each chunk's logits, so neither direction ever holds a float32 [batch x length x
vocabulary] tensor: peak extra memory is one [chunk x vocabulary] block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .policy_head import chunked_logprob_entropy

LossAggregation = Literal["token-mean", "sequence-mean"]
LOG_RATIO_CLAMP = 20.0


# --------------------------------------------------------------------------- advantages
def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO advantages, normalised within each group of ``group_size`` consecutive responses.

    Args:
        rewards: [n] rewards, prompt-major (rows ``g*G .. g*G + G - 1`` answer prompt ``g``).
        group_size: G >= 2.
        eps: added to the group's standard deviation.

    Returns:
        ``(advantages [n], zero_groups [n / G] bool)``: ``zero_groups[g]`` is True when every
        reward of group ``g`` is equal (its advantages are exactly 0: no learning signal).

    >>> adv, zero = group_advantages(torch.tensor([1., 0., 0., 0., 1., 1., 1., 1.]), 4)
    >>> [round(a, 3) for a in adv.tolist()], zero.tolist()
    ([1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0], [False, True])
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for group-normalised advantages, got {group_size}")
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, got {tuple(rewards.shape)}")
    r = rewards.double().view(-1, group_size)
    mean = r.mean(1, keepdim=True)
    std = r.std(1, keepdim=True)
    zero = (r == r[:, :1]).all(1)
    adv = (r - mean) / (std + eps)
    adv[zero] = 0.0
    return adv.view(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32), zero


# --------------------------------------------------------------------------- log-probs
def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability and entropy of the policy softmax(hidden E_u^T) at the masked positions.

    Only positions with ``mask`` set are projected, ``chunk_size`` tokens at a time, in float32,
    also inside a bf16 autocast region (autocast is disabled around the projection: in bf16 the
    logits of raw deep-layer states, whose norm reaches ~10^3, would be off by whole nats).
    The backward recomputes each chunk's logits, so memory beyond the inputs is one
    [chunk_size x N] float32 block in both directions. Gradients reach ``hidden`` and ``weight``.

    Args:
        hidden: [B, T, d] vectors fed to the unembedding (the normed final state for the full
            policy; the raw H^l for the internal layer policy).
        weight: E_u, [N, d].
        targets: [B, T] the token whose probability is wanted at each position (the next token).
        mask: [B, T] 0/1: positions to compute (the prediction mask of the response).
        bias: optional [N] unembedding bias.
        softcap: Gemma 2's final logit soft-capping value (full policy only), or ``None``.
        chunk_size: tokens per chunk.

    Returns:
        ``(logp, entropy)``, each [B, T] float32, 0 where ``mask`` is 0. Entropy in nats.

    >>> h, w = torch.randn(2, 3, 4), torch.randn(7, 4)
    >>> t, m = torch.randint(0, 7, (2, 3)), torch.ones(2, 3)
    >>> lp, ent = token_logprobs(h, w, t, m, chunk_size=2)
    >>> ref = torch.log_softmax(h @ w.T, -1).gather(-1, t[..., None]).squeeze(-1)
    >>> torch.allclose(lp, ref, atol=1e-5)
    True
    """
    sel = mask.bool()
    flat_h = hidden[sel]
    flat_t = targets[sel].long()
    lp, ent = chunked_logprob_entropy(flat_h, weight, flat_t, bias=bias, softcap=softcap, chunk_size=chunk_size)
    out_lp = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    out_ent = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    out_lp = out_lp.masked_scatter(sel, lp)
    out_ent = out_ent.masked_scatter(sel, ent)
    return out_lp, out_ent


# --------------------------------------------------------------------------- objective
@dataclass
class PolicyLossOutput:
    """Result of :func:`clipped_policy_loss`.

    Attributes:
        loss: scalar to minimise (already aggregated and divided by ``normalizer`` if given).
        per_token: [B, T] per-token loss (0 outside the mask).
        clip_frac: fraction of masked tokens where the clipped branch is active.
        dual_clip_frac: fraction of masked tokens capped by the dual clip.
        approx_kl: mean over masked tokens of k3 = exp(d) - 1 - d with d = logp_old - logp,
            an estimate of KL(pi_old || pi) (>= 0).
        ratio_mean: mean importance ratio over masked tokens.
        kl_ref: mean k3 KL to the reference policy (0 when no reference is used).
    """

    loss: torch.Tensor
    per_token: torch.Tensor
    clip_frac: float
    dual_clip_frac: float
    approx_kl: float
    ratio_mean: float
    kl_ref: float = 0.0


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: LossAggregation = "token-mean", normalizer: float | None = None) -> torch.Tensor:
    """Reduce a [B, T] per-token loss to a scalar.

    Args:
        per_token: [B, T].
        mask: [B, T] 0/1.
        mode: ``"token-mean"``: sum over all masked tokens / number of masked tokens;
            ``"sequence-mean"``: per-row mean over its tokens, then mean over rows.
        normalizer: when set, divide the *sum* (token-mean: of tokens; sequence-mean: of per-row
            means) by this number instead of the local count. Used for gradient accumulation, so
            that micro-batches add up to the mean over the whole mini-batch.

    >>> aggregate(torch.tensor([[1., 3.], [2., 0.]]), torch.tensor([[1, 1], [1, 0]]))
    tensor(2.)
    >>> aggregate(torch.tensor([[1., 3.], [2., 0.]]), torch.tensor([[1, 1], [1, 0]]), "sequence-mean")
    tensor(2.)
    """
    m = mask.to(per_token.dtype)
    if mode == "token-mean":
        total = (per_token * m).sum()
        return total / (normalizer if normalizer is not None else m.sum().clamp_min(1))
    if mode == "sequence-mean":
        rows = (per_token * m).sum(1) / m.sum(1).clamp_min(1)
        rows = rows[m.sum(1) > 0]
        return rows.sum() / (normalizer if normalizer is not None else max(rows.numel(), 1))
    raise ValueError(f"loss aggregation must be 'token-mean' or 'sequence-mean', got {mode!r}")


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = 10.0,
    aggregation: LossAggregation = "token-mean",
    normalizer: float | None = None,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> PolicyLossOutput:
    """The GRPO/PPO clipped surrogate with dual clip, as in the paper's code.

    Args:
        logp: [B, T] log-probs of the sampled tokens under the current policy (with grad).
        old_logp: [B, T] the same under the weights before this step's updates (no grad).
        advantages: [B] per-response advantages (broadcast over tokens) or [B, T].
        mask: [B, T] 0/1 response prediction positions.
        eps_low, eps_high: the ratio is clipped to [1 - eps_low, 1 + eps_high].
        dual_clip: c > 1; for A < 0 the loss is capped at -c A. ``None`` disables it.
        aggregation: ``"token-mean"`` (default) or ``"sequence-mean"``; see :func:`aggregate`.
        normalizer: see :func:`aggregate` (gradient accumulation).
        ref_logp: [B, T] log-probs under a frozen reference policy; with ``kl_coef > 0`` adds
            ``kl_coef * k3(pi || pi_ref)`` per token (k3 = exp(ref - logp) - (ref - logp) - 1).
        kl_coef: weight of the KL term (0 = off, the paper's setting).

    Returns:
        :class:`PolicyLossOutput`.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (the paper's code uses 10), got {dual_clip}")
    adv = advantages[:, None] if advantages.ndim == 1 else advantages
    adv = adv.to(logp.dtype)
    m = mask.to(logp.dtype)
    log_ratio = torch.clamp(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    loss_unclipped = -adv * ratio
    loss_clipped = -adv * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss_max = torch.maximum(loss_unclipped, loss_clipped)
    clipped = (loss_clipped > loss_unclipped).to(logp.dtype)
    if dual_clip is not None:
        capped = torch.minimum(loss_max, -adv * dual_clip)
        per_token = torch.where(adv < 0, capped, loss_max)
        dual = ((adv < 0) & (loss_max > -adv * dual_clip)).to(logp.dtype)
    else:
        per_token = loss_max
        dual = torch.zeros_like(loss_max)
    kl_ref_mean = 0.0
    if ref_logp is not None and kl_coef > 0:
        d = torch.clamp(ref_logp - logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        k3 = torch.exp(d) - d - 1
        per_token = per_token + kl_coef * k3
        kl_ref_mean = float((k3.detach() * m).sum() / m.sum().clamp_min(1))
    per_token = per_token * m
    loss = aggregate(per_token, m, aggregation, normalizer)
    with torch.no_grad():
        n = m.sum().clamp_min(1)
        d_old = (old_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        k3_old = torch.exp(d_old) - 1 - d_old
        out = PolicyLossOutput(
            loss=loss,
            per_token=per_token,
            clip_frac=float((clipped * m).sum() / n),
            dual_clip_frac=float((dual * m).sum() / n),
            approx_kl=float((k3_old * m).sum() / n),
            ratio_mean=float((ratio * m).sum() / n),
            kl_ref=kl_ref_mean,
        )
    return out


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``x`` over positions where ``mask`` is 1 (0.0 when the mask is empty)."""
    m = mask.to(torch.float32)
    return float((x.float() * m).sum() / m.sum().clamp_min(1))
