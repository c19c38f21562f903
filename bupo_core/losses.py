"""Policy losses as a small registry: a loss is one function plus the config fields it reads.

Every loss has the signature of :func:`bupo_core.grpo.clipped_policy_loss`'s common part::

    fn(logp, old_logp, advantages, mask, *, aggregation, normalizer, ref_logp, kl_coef, **fields)
        -> PolicyLossOutput

where ``fields`` are the loss's own settings, read by name from
:class:`~bupo_core.trainer.TrainConfig` (so each is also a ``bupo train`` flag, written once as a
config field). The trainer picks the loss named by ``TrainConfig.loss``.

Adding a variant (see ``docs/adding-a-statistic.md``)::

    register_policy_loss(PolicyLoss("my-loss", my_loss_fn, fields=("my_coef",), description="..."))

plus the field ``my_coef`` in :class:`~bupo_core.trainer.TrainConfig` (with one docstring line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import InputFormatError
from .grpo import PolicyLossOutput, clipped_policy_loss


@dataclass(frozen=True)
class PolicyLoss:
    """One registered policy loss.

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
