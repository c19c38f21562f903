"""Policy losses: the per-token objective, its aggregation and its normaliser, each a registry entry.

A policy-loss *variant* is two names, each one entry of a small registry:

* :data:`POLICY_LOSSES` (``TrainConfig.loss`` / ``bupo train --loss``): the per-token objective
  and the config fields it reads, e.g. ``"grpo"``: the clipped surrogate with dual clip of the
  paper's code (:func:`clipped_policy_loss`). Its signature::

      fn(logp, old_logp, advantages, mask, *, aggregation, normalizer, ref_logp, kl_coef, **fields)
          -> PolicyLossOutput

  where ``fields`` are the loss's own settings, read by name from
  :class:`~bupo_core.trainer.TrainConfig` (so each is also a ``bupo train`` flag).
* :data:`AGGREGATIONS` (``TrainConfig.loss_aggregation`` / ``--loss-aggregation``): how the
  [B, T] per-token losses become one number, *together with* the normaliser that makes
  micro-batches add up to the mini-batch's value (gradient accumulation):

  ===================  ===========================================  =================================
  name                 sum of                                       divided by (over the mini-batch)
  ===================  ===========================================  =================================
  ``token-mean``       every response token's loss                  number of response tokens
                                                                    (verl's default, the paper's code)
  ``sequence-mean``    each response's mean token loss              number of responses (paper eq.)
  ``sequence-sum``     every response token's loss                  ``max_new_tokens`` x number of
                                                                    responses (Dr. GRPO: no length
                                                                    bias)
  ===================  ===========================================  =================================

Adding a variant (see ``docs/adding-a-statistic.md``) is one registration::

    register_policy_loss(PolicyLoss("my-loss", my_loss_fn, fields=("my_coef",), description="..."))
    register_aggregation(Aggregation("my-agg", rows_fn, normalizer_fn, description="..."))

plus, for a loss, the field ``my_coef`` in :class:`~bupo_core.trainer.TrainConfig` (with one
docstring line); for an aggregation, its name in :data:`LossAggregation`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from .errors import InputFormatError

LossAggregation = Literal["token-mean", "sequence-mean", "sequence-sum"]
LOG_RATIO_CLAMP = 20.0


# --------------------------------------------------------------------------- aggregations
@dataclass(frozen=True)
class Aggregation:
    """One way to reduce a [B, T] per-token loss to a scalar.

    Attributes:
        name: the value of ``TrainConfig.loss_aggregation`` / ``--loss-aggregation``.
        rows: ``rows(per_token [B, T], mask [B, T] float) -> [B]``: each response's contribution
            to the numerator (0 for a row without tokens).
        normalizer: ``normalizer(mask [B, T] float, max_new_tokens) -> float``: the denominator
            for the rows of ``mask``. The trainer evaluates it on the whole mini-batch and passes
            it to every micro-batch, so the micro-batches add up to the mini-batch's value.
        description: one line for docs.
    """

    name: str
    rows: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    normalizer: Callable[[torch.Tensor, int | None], float]
    description: str = ""


AGGREGATIONS: dict[str, Aggregation] = {}


def register_aggregation(agg: Aggregation) -> None:
    """Add (or replace) an aggregation under ``agg.name``."""
    AGGREGATIONS[agg.name] = agg


def get_aggregation(name: str) -> Aggregation:
    """The registered aggregation ``name``; :class:`InputFormatError` lists the choices otherwise."""
    if name not in AGGREGATIONS:
        raise InputFormatError(
            f"loss aggregation must be one of {', '.join(repr(a) for a in AGGREGATIONS)}, got {name!r}"
        )
    return AGGREGATIONS[name]


def _n_responses(m: torch.Tensor) -> int:
    return max(int((m.sum(1) > 0).sum()), 1)


def _sequence_sum_normalizer(m: torch.Tensor, max_new_tokens: int | None) -> float:
    if max_new_tokens is None:
        raise ValueError(
            "loss aggregation 'sequence-sum' divides by the constant max_new_tokens; pass max_new_tokens (or normalizer)"
        )
    return float(max_new_tokens * _n_responses(m))


register_aggregation(
    Aggregation(
        "token-mean",
        lambda pt, m: (pt * m).sum(1),
        lambda m, _n: float(m.sum().clamp_min(1)),
        "sum over all response tokens / number of response tokens (verl's default, the paper's code)",
    )
)
register_aggregation(
    Aggregation(
        "sequence-mean",
        lambda pt, m: (pt * m).sum(1) / m.sum(1).clamp_min(1),
        lambda m, _n: float(_n_responses(m)),
        "mean over each response's tokens, then mean over responses (the paper's equation)",
    )
)
register_aggregation(
    Aggregation(
        "sequence-sum",
        lambda pt, m: (pt * m).sum(1),
        _sequence_sum_normalizer,
        "sum over each response's tokens / max_new_tokens, then mean over responses (Dr. GRPO: no length bias)",
    )
)
assert set(get_args(LossAggregation)) == set(AGGREGATIONS), (
    "LossAggregation and AGGREGATIONS must name the same aggregations"
)


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: LossAggregation = "token-mean",
    normalizer: float | None = None,
    *,
    max_new_tokens: int | None = None,
) -> torch.Tensor:
    """Reduce a [B, T] per-token loss to a scalar with the registered aggregation ``mode``.

    Args:
        per_token: [B, T].
        mask: [B, T] 0/1.
        mode: a name in :data:`AGGREGATIONS` (``"token-mean"``, ``"sequence-mean"``, ``"sequence-sum"``).
        normalizer: when set, divide the summed row contributions by this number instead of the
            aggregation's own normaliser of ``mask``. Used for gradient accumulation, so that
            micro-batches add up to the value over the whole mini-batch.
        max_new_tokens: the constant of ``"sequence-sum"`` (Dr. GRPO) when ``normalizer`` is not given.

    >>> aggregate(torch.tensor([[1., 3.], [2., 0.]]), torch.tensor([[1, 1], [1, 0]]))
    tensor(2.)
    >>> aggregate(torch.tensor([[1., 3.], [2., 0.]]), torch.tensor([[1, 1], [1, 0]]), "sequence-mean")
    tensor(2.)
    >>> aggregate(torch.tensor([[1., 3.], [2., 0.]]), torch.tensor([[1, 1], [1, 0]]), "sequence-sum", max_new_tokens=4)
    tensor(0.7500)
    """
    agg = get_aggregation(mode)
    m = mask.to(per_token.dtype)
    total = agg.rows(per_token, m).sum()
    return total / (normalizer if normalizer is not None else agg.normalizer(m, max_new_tokens))


# --------------------------------------------------------------------------- objectives
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
        aggregation: a name in :data:`AGGREGATIONS` (default ``"token-mean"``); see :func:`aggregate`.
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


# --------------------------------------------------------------------------- the registry of objectives
@dataclass(frozen=True)
class PolicyLoss:
    """One registered policy loss (the per-token objective).

    Attributes:
        name: the value of ``TrainConfig.loss`` / ``bupo train --loss``.
        fn: the loss function (see the module docstring for its signature).
        fields: names of the TrainConfig fields passed to ``fn`` as keyword arguments.
        description: one line for ``--help`` and docs.
        validate: optional ``validate(config)`` raising :class:`InputFormatError` for bad settings;
            called by ``TrainConfig.validate``.
    """

    name: str
    fn: Callable[..., PolicyLossOutput]
    fields: tuple[str, ...] = ()
    description: str = ""
    validate: Callable[[Any], None] | None = None

    def __call__(self, config: Any, logp, old_logp, advantages, mask, **common: Any) -> PolicyLossOutput:
        """Evaluate the loss with its settings read from ``config``."""
        return self.fn(logp, old_logp, advantages, mask, **common, **{f: getattr(config, f) for f in self.fields})


POLICY_LOSSES: dict[str, PolicyLoss] = {}


def register_policy_loss(loss: PolicyLoss) -> None:
    """Add (or replace) a loss under ``loss.name``."""
    POLICY_LOSSES[loss.name] = loss


def get_policy_loss(name: str) -> PolicyLoss:
    """The registered loss ``name``; :class:`InputFormatError` lists the choices otherwise."""
    if name not in POLICY_LOSSES:
        raise InputFormatError(f"unknown loss {name!r}; use one of {', '.join(sorted(POLICY_LOSSES))}")
    return POLICY_LOSSES[name]


def _validate_clip(cfg: Any) -> None:
    if not (0 <= cfg.eps_low < 1 and cfg.eps_high >= 0):
        raise InputFormatError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {cfg.eps_low}, {cfg.eps_high}")
    if cfg.dual_clip is not None and cfg.dual_clip <= 1:
        raise InputFormatError(f"dual_clip must be > 1 or None, got {cfg.dual_clip}")


register_policy_loss(
    PolicyLoss(
        "grpo",
        clipped_policy_loss,
        fields=("eps_low", "eps_high", "dual_clip"),
        description="GRPO/PPO clipped surrogate with dual clip (the paper's code)",
        validate=_validate_clip,
    )
)
