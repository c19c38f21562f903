"""Which layer BuPO optimises: the boundary layer, or a documented fallback (one rule for demo and notebooks).

The paper targets the *boundary layer* (the last layer of the first run of layers whose FFN
entropy change is positive, :func:`bupo_core.entropy.boundary_layer`). BuPO needs a layer strictly
below the top one (internal policy alignment on layer L would be GRPO without the final norm), so:

* the boundary layer when the rule finds one in 1..L-1;
* otherwise the paper's relative depth for Qwen3 (layer 6 of 36) scaled to L layers, with the
  reason recorded.
"""

from __future__ import annotations

from typing import Any

from .adapter import check_layer

#: The paper's target layer for the 36-layer Qwen3-4B/8B, used as a relative depth.
PAPER_DEPTH = (6, 36)


def paper_depth_layer(num_layers: int) -> int:
    """The paper's layer 6 of 36 scaled to ``num_layers`` (at least 1).

    >>> paper_depth_layer(30), paper_depth_layer(36), paper_depth_layer(2)
    (5, 6, 1)
    """
    return max(1, round(num_layers * PAPER_DEPTH[0] / PAPER_DEPTH[1]))


def choose_layer(report: Any, forced: int | None = None) -> tuple[int, str]:
    """The BuPO target layer and why it was chosen.

    Args:
        report: an :class:`bupo_core.analysis.EntropyReport` (anything with ``num_layers``,
            ``boundary_layer`` and ``boundary_reason``).
        forced: a layer the user asked for (validated: 1..L-1).

    Returns:
        ``(layer, reason)``.
    """
    L = report.num_layers
    if forced is not None:
        check_layer(forced, L, allow_embedding=False, below_top=True, what="--layer")
        return forced, f"layer {forced} was given explicitly"
    b = report.boundary_layer
    if b is not None and 1 <= b < L:
        return b, f"boundary layer from the FFN entropy change ({report.boundary_reason})"
    fallback = paper_depth_layer(L)
    why = (
        report.boundary_reason
        if b is None
        else f"the rule gave layer {b}, the top layer, where IPA equals GRPO without the final norm"
    )
    return fallback, f"fallback: {why}; using the paper's depth ratio (layer 6 of 36) scaled to {L} layers = {fallback}"
