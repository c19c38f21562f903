"""GRPO maths on tensors: group advantages (the objective and its aggregations live in :mod:`bupo_core.losses`).

Pure tensor code (no models, no files), so every function can be checked on tiny tensors.
The conventions follow the paper (Tan et al., arXiv 2512.19673) and its code (a fork of verl):

* advantage per response ``A_i = (R_i - mean(R_group)) / (std(R_group) + 1e-6)`` (``std`` with
  Bessel's correction, as ``torch.std`` in verl and TRL), the same for every token of the response;
* ratio ``r = exp(clamp(logp - logp_old, -20, 20))``;
* per-token loss ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))``, and for ``A < 0`` at most
  ``-c A`` (dual clip, ``c = 10``);
* ``token-mean`` aggregation (all response tokens of the batch; verl's default),
  ``sequence-mean`` (mean per response, then over responses; the paper's equation) or
  ``sequence-sum`` (Dr. GRPO); see :data:`bupo_core.losses.AGGREGATIONS`.

The clipped objective (:func:`~bupo_core.losses.clipped_policy_loss`) and its aggregations live in
:mod:`bupo_core.losses`; log-probabilities and entropies of the sampled tokens
(:func:`~bupo_core.policy_head.token_logprobs`) next to the policy head. Both are re-exported here.
"""

from __future__ import annotations

import torch

# re-exported: the objective moved to losses, the log-probs next to the policy head
from .losses import LOG_RATIO_CLAMP, LossAggregation, PolicyLossOutput, aggregate, clipped_policy_loss  # noqa: F401
from .policy_head import token_logprobs  # noqa: F401


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
        raise ValueError(
            f"rewards must be 1-D with a multiple of group_size={group_size} entries, got {tuple(rewards.shape)}"
        )
    r = rewards.double().view(-1, group_size)
    mean = r.mean(1, keepdim=True)
    std = r.std(1, keepdim=True)
    zero = (r == r[:, :1]).all(1)
    adv = (r - mean) / (std + eps)
    adv[zero] = 0.0
    return adv.view(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32), zero


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``x`` over positions where ``mask`` is 1 (0.0 when the mask is empty)."""
    m = mask.to(torch.float32)
    return float((x.float() * m).sum() / m.sum().clamp_min(1))
