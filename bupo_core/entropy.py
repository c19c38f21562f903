"""Entropy of internal policies, entropy change, and the boundary-layer rule: pure tensor maths.

Definitions (paper App. A.3), with 𝓗(X) the entropy of softmax(X E_u^T):

* layer:      dH^l      = 𝓗(H^l) - 𝓗(H^{l-1})
* attention:  dH^l_ATTN = 𝓗(A^l) - 𝓗(LN1(H^{l-1}))
* FFN:        dH^l_FFN  = 𝓗(F^l) - 𝓗(LN2(H^{l-1} + A^l))

Entropies are in nats (natural log) and always computed in float32, whatever the model's dtype.
A positive change widens the exploration space, about zero integrates, negative converges.

Layers use the paper's numbering: per-layer *state* arrays (``layer_entropy``) have L+1 entries
(index = layer 0..L, 0 = embedding); per-block arrays (module entropies and all entropy changes)
have L entries, entry ``i`` being layer ``i + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .policy_head import entropy_of_probs_


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dimension, computed in float32.

    Args:
        logits: [..., N] in any float dtype.

    Returns:
        [...] float32 entropies in [0, ln N].

    >>> round(float(entropy_from_logits(torch.zeros(4))), 4) == round(math.log(4), 4)
    True
    >>> float(entropy_from_logits(torch.tensor([0.0, -1e4])))
    0.0
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return entropy_of_probs_(torch.softmax(logits.float(), dim=-1))


def max_entropy(vocab_size: int) -> float:
    """ln N: the entropy of the uniform policy over ``vocab_size`` tokens (10.80 nats for 49,152)."""
    return math.log(vocab_size)


def entropy_change(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """``after - before``: the entropy change of one step (any matching shapes)."""
    return after - before


def layer_entropy_change(layer_entropy: torch.Tensor) -> torch.Tensor:
    """dH^l = 𝓗(H^l) - 𝓗(H^{l-1}) for l = 1..L.

    Args:
        layer_entropy: [L+1, ...] entropies of H^0..H^L (index = paper layer).

    Returns:
        [L, ...]; entry ``i`` is layer ``i + 1``.

    >>> layer_entropy_change(torch.tensor([5.0, 4.0, 4.5])).tolist()
    [-1.0, 0.5]
    """
    return layer_entropy[1:] - layer_entropy[:-1]


def attn_entropy_change(attn_entropy: torch.Tensor, attn_input_entropy: torch.Tensor) -> torch.Tensor:
    """dH^l_ATTN = 𝓗(A^l) - 𝓗(LN1(H^{l-1})); both [L, ...] (entry ``i`` = layer ``i + 1``)."""
    return entropy_change(attn_entropy, attn_input_entropy)


def ffn_entropy_change(ffn_entropy: torch.Tensor, ffn_input_entropy: torch.Tensor) -> torch.Tensor:
    """dH^l_FFN = 𝓗(F^l) - 𝓗(LN2(H^{l-1} + A^l)); both [L, ...] (entry ``i`` = layer ``i + 1``)."""
    return entropy_change(ffn_entropy, ffn_input_entropy)


def token_weighted_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the last dimension (tokens), counting every token once.

    Pooling the tokens of all samples first and then averaging is the paper's token-weighted mean:
    a long response weighs more than a short one.

    Args:
        values: [..., P] per-token values.
        mask: optional [P] or [..., P] 0/1 weights (1 = the token counts).

    Returns:
        [...] means (float32). Raises ``ValueError`` when no token counts.

    >>> token_weighted_mean(torch.tensor([[1.0, 2.0, 3.0]])).tolist()
    [2.0]
    """
    v = values.float()
    if mask is None:
        if v.shape[-1] == 0:
            raise ValueError("token_weighted_mean of zero tokens")
        return v.mean(-1)
    m = mask.to(v.dtype).expand_as(v)
    total = m.sum(-1)
    if bool((total == 0).any()):
        raise ValueError("token_weighted_mean: the mask selects no token")
    return (v * m).sum(-1) / total


@dataclass(frozen=True)
class BoundaryLayer:
    """The outcome of the boundary-layer rule.

    Attributes:
        layer: the boundary layer (paper numbering, 1..L), or ``None`` when no FFN expands entropy.
        run: ``(first, last)`` layers of the first run of layers with dH_FFN > ``threshold``
            (paper numbering), or ``None``.
        reason: one sentence explaining the choice (or why there is none).
        threshold: the threshold the changes were compared with (0 = the paper's rule).
    """

    layer: int | None
    run: tuple[int, int] | None
    reason: str
    threshold: float = 0.0

    def __int__(self) -> int:
        if self.layer is None:
            raise ValueError(f"no boundary layer: {self.reason}")
        return self.layer


def boundary_layer(ffn_change: Sequence[float] | torch.Tensor, *, threshold: float = 0.0) -> BoundaryLayer:
    """The paper's rule: the last layer of the first run of layers with positive FFN entropy change.

    Args:
        ffn_change: L mean dH_FFN values; entry ``i`` is layer ``i + 1`` (paper numbering).
        threshold: a layer counts as expanding when dH_FFN > ``threshold`` (0 in the paper; a small
            positive value ignores near-zero noise).

    Returns:
        A :class:`BoundaryLayer`; ``.layer`` is ``None`` (with a reason) when no layer expands.

    >>> boundary_layer([0.2, 0.1, 0.3, -0.1, 0.0, 0.4]).layer
    3
    >>> boundary_layer([-0.2, -0.1]).layer is None
    True
    """
    values = [float(v) for v in (ffn_change.tolist() if isinstance(ffn_change, torch.Tensor) else ffn_change)]
    if not values:
        return BoundaryLayer(None, None, "no layers given", threshold)
    if any(math.isnan(v) for v in values):
        bad = [i + 1 for i, v in enumerate(values) if math.isnan(v)]
        return BoundaryLayer(None, None, f"FFN entropy change is NaN at layers {bad}", threshold)
    start = next((i for i, v in enumerate(values) if v > threshold), None)
    if start is None:
        return BoundaryLayer(
            None,
            None,
            f"no layer has FFN entropy change > {threshold:g} (max {max(values):+.4f} nats at layer "
            f"{values.index(max(values)) + 1}): the FFNs never expand the exploration space",
            threshold,
        )
    end = start
    while end + 1 < len(values) and values[end + 1] > threshold:
        end += 1
    first, last = start + 1, end + 1
    after = (
        f"; layer {last + 1} has dH_FFN = {values[end + 1]:+.4f}"
        if end + 1 < len(values)
        else "; the run reaches the last layer"
    )
    lead = "" if first == 1 else f" (layers 1..{first - 1} do not expand)"
    return BoundaryLayer(
        last,
        (first, last),
        f"dH_FFN > {threshold:g} in layers {first}..{last}{lead}{after}",
        threshold,
    )
