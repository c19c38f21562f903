"""An interactive internal-policy explorer, with a static fallback.

Pick a prompt, a token position, a layer (paper numbering), a kind of vector (residual stream H^l,
attention write A^l, FFN write F^l, or the normed inputs the modules read) and the norm mode; see
the top-k tokens of that internal policy, its entropy, and the entropy of the same kind of vector
across all layers for that token.

:func:`lens_view` does the computing (no widgets; testable). :func:`explore` builds the ipywidgets
explorer when ipywidgets and a live front end are available, and otherwise (plain Python, a
terminal, a static notebook render, ``widgets=False``) prints the same view as text and draws it
with matplotlib.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapter import ArchitectureAdapter, Norm
from ..capture import ResidualCapture, capture_residuals
from ..errors import InputFormatError
from ..lens import KIND_LABELS, KINDS, captured_vectors, policy_statistics
from ..sequences import Prompt, encode_prompt


@dataclass
class LensView:
    """The internal policy of one token position, at one layer and kind.

    Attributes:
        tokens: the sequence's tokens as text.
        position: the analysed position (its policy predicts token ``position + 1``).
        layer: paper numbering (0..L for ``"layer"``, 1..L for the module kinds).
        kind: one of :data:`bupo_core.lens.KINDS`.
        norm: ``"none"`` (paper) or ``"final"`` (logit lens).
        top: ``(token text, probability)`` pairs, most likely first.
        entropy: entropy (nats) of this policy.
        entropy_by_layer: entropies of the same kind of vector at every layer for this position
            (index 0 = layer 0 for ``"layer"``, layer 1 otherwise).
        norm_by_layer: the raw vectors' L2 norms, same indexing.
        max_entropy: ln N.
    """

    tokens: list[str]
    position: int
    layer: int
    kind: str
    norm: str
    top: list[tuple[str, float]]
    entropy: float
    entropy_by_layer: list[float]
    norm_by_layer: list[float]
    max_entropy: float

    @property
    def first_layer(self) -> int:
        return 0 if self.kind == "layer" else 1

    def text(self) -> str:
        """A plain-text rendering (the static fallback)."""
        nxt = self.tokens[self.position + 1] if self.position + 1 < len(self.tokens) else "(end)"
        lines = [
            f"position {self.position} {self.tokens[self.position]!r} -> next token {nxt!r}",
            f"{KIND_LABELS[self.kind]} at layer {self.layer} (paper numbering), norm={self.norm!r}",
            f"entropy {self.entropy:.3f} nats (max ln N = {self.max_entropy:.2f})",
            "top tokens:",
        ]
        lines += [f"  {p:7.2%}  {t!r}" for t, p in self.top]
        return "\n".join(lines)

    def figure(self, ax: Any = None) -> Any:
        """Entropy (and norm, right axis) of this kind of vector across layers, the chosen layer marked."""
        import matplotlib.pyplot as plt  # noqa: PLC0415  (optional: matplotlib.pyplot is loaded only when drawing)

        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 3))
        else:
            fig = ax.figure
        xs = list(range(self.first_layer, self.first_layer + len(self.entropy_by_layer)))
        ax.plot(xs, self.entropy_by_layer, "-o", ms=3, label="entropy")
        ax.axvline(self.layer, color="red", ls="--", lw=1)
        ax.set_xlabel("layer (paper numbering)")
        ax.set_ylabel("entropy (nats)")
        ax2 = ax.twinx()
        ax2.plot(xs, self.norm_by_layer, ":", color="grey", label="norm")
        ax2.set_yscale("log")
        ax2.set_ylabel("L2 norm (dotted)")
        ax.set_title(
            f"{self.kind} policy of position {self.position} ({self.tokens[self.position]!r}), norm={self.norm!r}",
            fontsize=9,
        )
        fig.tight_layout()
        return fig


class _Cache:
    """One captured forward pass per prompt (short texts: all positions are kept)."""

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.adapter = ArchitectureAdapter(model)
        self.key: Any = None
        self.capture: ResidualCapture | None = None
        self.tokens: list[str] = []

    def get(self, prompt: Prompt) -> tuple[ResidualCapture, list[str]]:
        key = repr(prompt)
        if key != self.key:
            ids = encode_prompt(self.tokenizer, prompt)
            if not ids:
                raise InputFormatError("the prompt has no tokens; type some text")
            device = next(self.model.parameters()).device
            self.capture = capture_residuals(self.model, torch.tensor([ids], device=device), adapter=self.adapter)
            self.tokens = [self.tokenizer.decode([t]) for t in ids]
            self.key = key
        return self.capture, self.tokens  # type: ignore[return-value]


def lens_view(
    model: nn.Module,
    tokenizer: Any,
    prompt: Prompt,
    *,
    position: int = -1,
    layer: int | None = None,
    kind: str = "layer",
    norm: Norm = "none",
    k: int = 10,
    _cache: _Cache | None = None,
) -> LensView:
    """Compute the explorer's view for one prompt, position, layer, kind and norm.

    Args:
        prompt: raw text (tokenized with special tokens) or chat messages (chat template).
        position: token position (negative counts from the end).
        layer: paper numbering; default L.
        kind: ``"layer"`` (H^l), ``"attn"`` (A^l), ``"ffn"`` (F^l), ``"attn_input"``, ``"ffn_input"``.
        norm: ``"none"`` or ``"final"``.
        k: number of top tokens.
    """
    cache = _cache or _Cache(model, tokenizer)
    adapter = cache.adapter
    if kind not in KINDS:
        raise InputFormatError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    cap, tokens = cache.get(prompt)
    T = len(tokens)
    if not -T <= position < T:
        raise InputFormatError(
            f"position {position} is out of range for a {T}-token prompt: use 0..{T - 1} (or -1 for the last)"
        )
    position %= T
    L = adapter.num_layers
    layer = L if layer is None else layer
    adapter.check_layer(layer, allow_embedding=(kind == "layer"))
    first = 0 if kind == "layer" else 1
    vectors = torch.stack([captured_vectors(cap, kind, l)[0, position] for l in range(first, L + 1)])
    st = policy_statistics(adapter, vectors, norm=norm, top_k=k)
    row = layer - first
    top = [
        (tokenizer.decode([int(i)]), float(p)) for i, p in zip(st.topk_ids[row].tolist(), st.topk_probs[row].tolist())
    ]

    return LensView(
        tokens=tokens,
        position=position,
        layer=layer,
        kind=kind,
        norm=norm,
        top=top,
        entropy=float(st.entropy[row]),
        entropy_by_layer=st.entropy.tolist(),
        norm_by_layer=st.vector_norm.tolist(),
        max_entropy=math.log(adapter.vocab_size),
    )


def widgets_available() -> bool:
    """True when ipywidgets imports and an IPython kernel (a front end) is running.

    ``BUPO_STATIC_WIDGETS=1`` forces the static view: ``tools/nbbuild.py --execute`` sets it so that
    committed notebooks show a figure on pages without a kernel (GitHub) instead of a dead widget.
    """
    if os.environ.get("BUPO_STATIC_WIDGETS", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    try:
        import ipywidgets  # noqa: F401, PLC0415  (optional: ipywidgets, only in a notebook)
        from IPython import get_ipython  # noqa: PLC0415  (optional: IPython, only in a notebook)
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def explore(
    model: nn.Module,
    tokenizer: Any,
    prompt: str = "The capital of France is",
    *,
    k: int = 10,
    widgets: bool | None = None,
    position: int = -1,
    layer: int | None = None,
    kind: str = "layer",
    norm: Norm = "none",
) -> Any:
    """The explorer: an ipywidgets panel when possible, else a static text + matplotlib view.

    Args:
        prompt: initial prompt text.
        k: top tokens shown.
        widgets: force (True) or refuse (False) widgets; ``None`` decides automatically.
        position, layer, kind, norm: the initial (or, statically, the only) selection.

    Returns:
        The ipywidgets ``VBox`` (displayed by Jupyter), or the static :class:`LensView` after printing
        and plotting it.
    """
    use = widgets_available() if widgets is None else widgets
    cache = _Cache(model, tokenizer)
    if not use:
        view = lens_view(
            model, tokenizer, prompt, position=position, layer=layer, kind=kind, norm=norm, k=k, _cache=cache
        )
        print(view.text())
        view.figure()
        return view

    import ipywidgets as w  # noqa: PLC0415  (optional: ipywidgets, only in a notebook)
    import matplotlib.pyplot as plt  # noqa: PLC0415  (optional: matplotlib.pyplot is loaded only when drawing)
    from IPython.display import display  # noqa: PLC0415  (optional: IPython, only in a notebook)

    L = cache.adapter.num_layers
    text = w.Text(value=prompt, description="prompt", layout=w.Layout(width="95%"), continuous_update=False)
    pos = w.IntSlider(description="position", min=0, max=0, value=0)
    lay = w.IntSlider(description="layer", min=0, max=L, value=L if layer is None else layer)
    knd = w.Dropdown(description="vector", options=[(KIND_LABELS[k_], k_) for k_ in KINDS], value=kind)
    nrm = w.ToggleButtons(
        description="norm", options=[("none (paper)", "none"), ("final (logit lens)", "final")], value=norm
    )
    out = w.Output()

    def sync_positions() -> None:
        _, tokens = cache.get(text.value)
        pos.max = len(tokens) - 1
        if pos.value > pos.max or position == -1:
            pos.value = pos.max

    def render(*_: Any) -> None:
        lay.min = 0 if knd.value == "layer" else 1
        with out:
            out.clear_output(wait=True)
            try:
                view = lens_view(
                    model,
                    tokenizer,
                    text.value,
                    position=pos.value,
                    layer=max(lay.value, lay.min),
                    kind=knd.value,
                    norm=nrm.value,
                    k=k,
                    _cache=cache,
                )
            except Exception as exc:  # show bad input in the panel instead of a traceback
                print(f"error: {exc}")
                return
            print(view.text())
            fig = view.figure()
            display(fig)
            plt.close(fig)

    def on_prompt(change: Any) -> None:
        try:
            sync_positions()
        except Exception as exc:
            with out:
                out.clear_output()
                print(f"error: {exc}")
            return
        render()

    sync_positions()
    if position != -1:
        pos.value = position % (pos.max + 1)
    text.observe(on_prompt, names="value")
    for control in (pos, lay, knd, nrm):
        control.observe(render, names="value")
    render()
    return w.VBox([text, w.HBox([pos, lay]), w.HBox([knd, nrm]), out])
