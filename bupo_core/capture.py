"""The hook engine: visit the residual stream's named points; capture them; truncated forwards.

:func:`residual_hooks` is the one place that knows where H^{l-1}, the module inputs
LN1(H^{l-1}) / LN2(H^{l-1} + A^l), the written vectors A^l / F^l and H^l are in a model.
:func:`capture_residuals` stores what it visits; :func:`bupo_core.lens.internal_policy_statistics`
reduces it on the fly. Hooks are placed through :class:`~bupo_core.adapter.ArchitectureAdapter`, so the same code works
for every supported family. All hooks return ``None`` (a hook that returns a value replaces the
module's output) and are removed even when the forward raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .adapter import ArchitectureAdapter, check_layer, first_tensor


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding, as generation uses them.

    Args:
        attention_mask: [batch, seq] of 0/1.

    Returns:
        [batch, seq] long tensor: 0 at the first real token; padding positions get 0 as well.

    >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])).tolist()
    [[0, 0, 0, 1], [0, 1, 2, 3]]
    """
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp(min=0)


@contextmanager
def hooks(registrations: list[tuple[nn.Module, str, Callable]]) -> Iterator[None]:
    """Register ``(module, kind, fn)`` hooks (``kind`` = ``"forward"`` or ``"pre"``) for a block of code."""
    handles = []
    try:
        for module, kind, fn in registrations:
            if kind == "forward":
                handles.append(module.register_forward_hook(fn))
            elif kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                raise ValueError(kind)
        yield
    finally:
        for h in handles:
            h.remove()


def _block_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return first_tensor(args[0])
    return kwargs["hidden_states"]


# --------------------------------------------------------------------------- the hook engine
Kind = Literal["layer", "attn_input", "attn", "ffn_input", "ffn"]
#: The residual stream's named points, in the order a block computes them.
KINDS: tuple[Kind, ...] = ("layer", "attn_input", "attn", "ffn_input", "ffn")
#: What each point is, in the paper's notation (used in plots and docs).
KIND_LABELS: dict[str, str] = {
    "layer": "H^l (residual stream)",
    "attn_input": "LN1(H^{l-1}) (attention input)",
    "attn": "A^l (attention write)",
    "ffn_input": "LN2(H^{l-1}+A^l) (FFN input)",
    "ffn": "F^l (FFN write)",
}
#: The adapter role whose module *output* is each module point.
KIND_ROLES: dict[str, str] = {"attn_input": "ln1", "attn": "attn_write", "ffn_input": "ln2", "ffn": "ffn_write"}


def check_kinds(kinds: Iterable[str]) -> list[str]:
    """Validate a choice of points (subset of :data:`KINDS`) and list it."""
    out = list(kinds)
    bad = [k for k in out if k not in KINDS]
    if bad:
        raise ValueError(f"unknown kinds {bad}; use a subset of {KINDS}")
    return out


def kind_rows(kind: str, num_layers: int) -> int:
    """Rows of a point: L+1 for ``"layer"`` (H^0..H^L, row = paper layer), L for module points (row i = layer i+1)."""
    return num_layers + 1 if kind == "layer" else num_layers


def residual_hooks(
    adapter: ArchitectureAdapter, visit: Callable[[str, int, torch.Tensor], None], kinds: Iterable[str] = KINDS
) -> list[tuple[nn.Module, str, Callable]]:
    """Hook registrations that call ``visit(kind, row, tensor [B, T, d])`` at each named point.

    ``row`` is the paper layer for ``"layer"`` (0..L) and ``layer - 1`` for the module points. Works
    for every registered family (the adapter names the modules). Pass the result to :func:`hooks`;
    :func:`capture_residuals` stores what it visits, the lens reduces it.
    """
    kinds = check_kinds(kinds)
    regs: list[tuple[nn.Module, str, Callable]] = []
    if "layer" in kinds:

        def pre_first(module: nn.Module, args: tuple, kwargs: dict) -> None:
            visit("layer", 0, _block_input(args, kwargs))

        regs.append((adapter.blocks[0], "pre", pre_first))
    for i, block in enumerate(adapter.blocks):
        if "layer" in kinds:

            def out_hook(module: nn.Module, args: tuple, output: object, i: int = i) -> None:
                visit("layer", i + 1, first_tensor(output))

            regs.append((block, "forward", out_hook))
        for kind, role in KIND_ROLES.items():
            if kind not in kinds:
                continue

            def role_hook(module: nn.Module, args: tuple, output: object, i: int = i, kind: str = kind) -> None:
                visit(kind, i, first_tensor(output))

            regs.append((getattr(block, getattr(adapter.family, role)), "forward", role_hook))
    return regs


def forward_kwargs(attention_mask: torch.Tensor | None) -> dict:
    """``attention_mask`` and matching ``position_ids`` (skipping left padding) for a forward call."""
    if attention_mask is None:
        return {}
    return dict(attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask))


def base_model(model: nn.Module) -> nn.Module:
    """The model without its LM head (the head is the policy head's job)."""
    return model.base_model if hasattr(model, "base_model") else model


@dataclass
class ResidualCapture:
    """The vectors of one forward pass, each of shape [batch, positions, d].

    Lists are indexed so that the accessors take the paper's numbering:
    ``resid(l)`` for l in 0..L, the module accessors for l in 1..L.
    ``logits`` is the model's own output ([batch, positions, N]) when requested.

    >>> from bupo_core.models import tiny_model
    >>> model = tiny_model("llama")
    >>> cap = capture_residuals(model, torch.tensor([[1, 2, 3]]))
    >>> cap.num_layers, tuple(cap.resid(0).shape)
    (2, (1, 3, 64))
    >>> cap.decomposition_error() < 1e-5
    True
    """

    resid_states: list[torch.Tensor]
    attn_inputs: list[torch.Tensor]
    attn_outputs: list[torch.Tensor]
    ffn_inputs: list[torch.Tensor]
    ffn_outputs: list[torch.Tensor]
    logits: torch.Tensor | None = None

    @property
    def num_layers(self) -> int:
        return len(self.attn_outputs)

    def _check(self, layer: int, low: int) -> None:
        check_layer(layer, self.num_layers, allow_embedding=low == 0)

    def resid(self, layer: int) -> torch.Tensor:
        """H^layer: 0 is the embedding output, L the last block's output (before the final norm)."""
        self._check(layer, 0)
        return self.resid_states[layer]

    def attn_in(self, layer: int) -> torch.Tensor:
        """LN1(H^{l-1}), the normed tensor the attention module of block ``layer`` reads."""
        self._check(layer, 1)
        return self.attn_inputs[layer - 1]

    def attn_out(self, layer: int) -> torch.Tensor:
        """A^l, the vector the attention sub-block adds to the stream."""
        self._check(layer, 1)
        return self.attn_outputs[layer - 1]

    def ffn_in(self, layer: int) -> torch.Tensor:
        """LN2(H^{l-1} + A^l), the normed tensor the FFN of block ``layer`` reads."""
        self._check(layer, 1)
        return self.ffn_inputs[layer - 1]

    def ffn_out(self, layer: int) -> torch.Tensor:
        """F^l, the vector the FFN sub-block adds to the stream."""
        self._check(layer, 1)
        return self.ffn_outputs[layer - 1]

    def reconstructed_final(self) -> torch.Tensor:
        """H^0 + sum_l (A^l + F^l), accumulated in float64."""
        total = self.resid_states[0].double()
        for a, f in zip(self.attn_outputs, self.ffn_outputs):
            total = total + a.double() + f.double()
        return total

    def decomposition_error(self) -> float:
        """max |H^L - (H^0 + sum(A + F))| / max |H^L|: relative error of the additive decomposition."""
        final = self.resid_states[-1].double()
        diff = (final - self.reconstructed_final()).abs().max()
        return float(diff / final.abs().max().clamp_min(1e-30))


def capture_residuals(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    positions: torch.Tensor | None = None,
    with_logits: bool = False,
    adapter: ArchitectureAdapter | None = None,
    detach: bool = True,
) -> ResidualCapture:
    """Run one forward pass and capture H^{l-1}, LN1 output, A^l, LN2 output, F^l and H^l for all l.

    Args:
        model: a supported ``*ForCausalLM``.
        input_ids: [batch, seq] token ids.
        attention_mask: [batch, seq] 0/1 (left padding is handled with matching position ids).
        positions: optional [seq] bool mask or long index of the sequence positions to keep;
            keeping only response positions saves memory (the other positions are dropped as the
            forward runs).
        with_logits: also keep the model's own logits at the kept positions.
        adapter: reuse an adapter (built from ``model`` otherwise).
        detach: detach captured tensors (set False to keep the autograd graph).

    Returns:
        A :class:`ResidualCapture`; every tensor is [batch, kept positions, d] in the model's dtype.
    """
    adapter = adapter or ArchitectureAdapter(model)
    if positions is not None and positions.dtype == torch.bool:
        positions = positions.nonzero().squeeze(-1)

    def keep(t: torch.Tensor) -> torch.Tensor:
        t = t.detach() if detach else t
        return t if positions is None else t[:, positions.to(t.device)]

    L = adapter.num_layers
    slots: dict[str, list[torch.Tensor | None]] = {k: [None] * kind_rows(k, L) for k in KINDS}

    def store(kind: str, row: int, tensor: torch.Tensor) -> None:
        slots[kind][row] = keep(tensor)

    with hooks(residual_hooks(adapter, store)), torch.set_grad_enabled(not detach and torch.is_grad_enabled()):
        out = model(input_ids=input_ids, use_cache=False, **forward_kwargs(attention_mask))
    missing = [k for k, lst in slots.items() if any(t is None for t in lst)]
    if missing:
        raise RuntimeError(f"hooks did not fire for {missing}: the adapter entry for {adapter.family.name} is wrong")
    return ResidualCapture(
        resid_states=slots["layer"],  # type: ignore[arg-type]
        attn_inputs=slots["attn_input"],  # type: ignore[arg-type]
        attn_outputs=slots["attn"],  # type: ignore[arg-type]
        ffn_inputs=slots["ffn_input"],  # type: ignore[arg-type]
        ffn_outputs=slots["ffn"],  # type: ignore[arg-type]
        logits=keep(out.logits) if with_logits else None,
    )


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass once the wanted layer has run."""


def forward_to_layer(
    model: nn.Module,
    input_ids: torch.Tensor,
    layer: int,
    attention_mask: torch.Tensor | None = None,
    *,
    adapter: ArchitectureAdapter | None = None,
) -> torch.Tensor:
    """H^layer computed by running only the embedding and blocks 1..layer (paper numbering).

    The blocks above ``layer`` and the final norm are never run, so this costs about
    ``layer / L`` of a full forward (plus the embedding). Gradients flow as usual.

    Args:
        input_ids: [batch, seq].
        layer: 0..L.
        attention_mask: [batch, seq] 0/1; position ids skip left padding.

    Returns:
        [batch, seq, d] hidden states H^layer (raw: no final norm).

    >>> from bupo_core.models import tiny_model
    >>> model = tiny_model("qwen3")
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> h1 = forward_to_layer(model, ids, 1)
    >>> torch.allclose(h1, capture_residuals(model, ids).resid(1))
    True
    """
    adapter = adapter or ArchitectureAdapter(model)
    adapter.check_layer(layer, allow_embedding=True)
    box: dict[str, torch.Tensor] = {}
    if layer == 0:
        target, kind = adapter.blocks[0], "pre"

        def grab(module: nn.Module, args: tuple, kwargs: dict) -> None:
            box["h"] = _block_input(args, kwargs)
            raise _StopForward

    else:
        target, kind = adapter.blocks[layer - 1], "forward"

        def grab(module: nn.Module, args: tuple, output: object) -> None:  # type: ignore[misc]
            box["h"] = first_tensor(output)
            raise _StopForward

    try:
        with hooks([(target, kind, grab)]):
            base_model(model)(input_ids=input_ids, use_cache=False, **forward_kwargs(attention_mask))
    except _StopForward:
        pass
    if "h" not in box:
        raise RuntimeError(f"block {layer} never ran; the adapter entry for {adapter.family.name} is wrong")
    return box["h"]
