"""Figures for internal-policy entropy, in the paper's two views and two more.

* :func:`plot_entropy_flow`: entropy along the stream, per layer: H(H^{l-1}) -> H(A^l) -> H(F^l) ->
  H(H^l) (Layer I/O as a line, ATTN and FFN as markers), the paper's Fig. "entropy flow".
* :func:`plot_entropy_change`: per-layer mean dH_ATTN and dH_FFN with a zero line and the boundary
  layer, the paper's second view.
* :func:`plot_token_layer_heatmap`: entropy per response token and layer for one sequence.
* :func:`plot_entropy_and_norms`: entropy beside the vector norms (without the final norm, entropy
  mostly tracks the norm).
* :func:`plot_entropy_comparison`: several models on a relative-depth axis.

Every function takes an :class:`~bupo_core.analysis.EntropyReport` (or its JSON dict), draws on a
given matplotlib ``ax`` or a new figure, and returns the figure. All layer axes use the paper's
numbering (0 = embedding output, l = output of block l).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LAYER_AXIS = "layer (paper numbering: 0 = embedding, l = output of block l)"
COLORS = {"layer": "#222222", "attn": "#1f77b4", "ffn": "#d62728", "attn_input": "#9ecae1", "ffn_input": "#fcae91"}


def _get(report: Any, key: str) -> Any:
    if isinstance(report, Mapping):
        return report.get(key)
    return getattr(report, key, None)


def _new_axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt  # noqa: PLC0415  (optional: matplotlib.pyplot is loaded only when drawing)

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def _title(report: Any) -> str:
    norm = _get(report, "norm")
    what = "raw H E_u^T (paper)" if norm == "none" else "final norm first (logit lens)"
    return f"{_get(report, 'model')}: {what}, {_get(report, 'num_tokens')} response tokens"


def plot_entropy_flow(report: Any, ax: Any = None, *, show_inputs: bool = False, label: str | None = None) -> Any:
    """The paper's entropy-flow view.

    For each layer l the x axis visits H^{l-1} (at l-1), A^l (at l-2/3), F^l (at l-1/3) and H^l (at
    l): the line is the layer (I/O) entropy, triangles the attention policy, squares the FFN policy.
    With ``show_inputs`` the module inputs (LN1, LN2 outputs) are drawn as faint markers.
    """
    fig, ax = _new_axes(ax, (10, 4))
    L = int(_get(report, "num_layers"))
    layers = np.arange(L + 1)
    blocks = np.arange(1, L + 1)
    ax.plot(
        layers, _get(report, "layer_entropy"), "-o", color=COLORS["layer"], ms=4, label=label or "Layer I/O: H(H^l)"
    )
    ax.plot(blocks - 2 / 3, _get(report, "attn_entropy"), "^", color=COLORS["attn"], ms=5, label="ATTN: H(A^l)")
    ax.plot(blocks - 1 / 3, _get(report, "ffn_entropy"), "s", color=COLORS["ffn"], ms=4, label="FFN: H(F^l)")
    if show_inputs:
        ax.plot(
            blocks - 5 / 6,
            _get(report, "attn_input_entropy"),
            "v",
            color=COLORS["attn_input"],
            ms=4,
            label="LN1(H^{l-1})",
        )
        ax.plot(
            blocks - 1 / 2,
            _get(report, "ffn_input_entropy"),
            "D",
            color=COLORS["ffn_input"],
            ms=3,
            label="LN2(H^{l-1}+A^l)",
        )
    vocab = _get(report, "vocab_size")
    if vocab:
        ax.axhline(math.log(vocab), color="grey", ls=":", lw=1, label=f"max ln N = {math.log(vocab):.2f}")
    b = _get(report, "boundary_layer")
    if b is not None:
        ax.axvline(b, color=COLORS["ffn"], ls="--", lw=1, alpha=0.6, label=f"boundary layer {b}")
    ax.set_xlabel(LAYER_AXIS)
    ax.set_ylabel("mean entropy (nats)")
    ax.set_title("Entropy flow\n" + _title(report), fontsize=10)
    ax.set_xlim(-0.5, L + 0.5)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return fig


def plot_entropy_change(report: Any, ax: Any = None) -> Any:
    """Per-layer mean attention and FFN entropy change with a zero line and the boundary layer."""
    fig, ax = _new_axes(ax, (10, 4))
    L = int(_get(report, "num_layers"))
    x = np.arange(1, L + 1)
    w = 0.4
    ax.bar(
        x - w / 2,
        _get(report, "attn_entropy_change"),
        w,
        color=COLORS["attn"],
        label="dH_ATTN = H(A^l) - H(LN1(H^{l-1}))",
    )
    ax.bar(
        x + w / 2,
        _get(report, "ffn_entropy_change"),
        w,
        color=COLORS["ffn"],
        label="dH_FFN = H(F^l) - H(LN2(H^{l-1}+A^l))",
    )
    ax.axhline(0, color="black", lw=1)
    run = _get(report, "boundary_run")
    b = _get(report, "boundary_layer")
    if run:
        ax.axvspan(
            run[0] - 0.5,
            run[1] + 0.5,
            color=COLORS["ffn"],
            alpha=0.08,
            label=f"first run with dH_FFN > 0: {run[0]}..{run[1]}",
        )
    if b is not None:
        ax.axvline(b + 0.5, color=COLORS["ffn"], ls="--", lw=1, label=f"boundary layer {b}")
    ax.set_xlabel("layer l (paper numbering, blocks 1..L)")
    ax.set_ylabel("mean entropy change (nats)")
    ax.set_title("Entropy change per module\n" + _title(report), fontsize=10)
    ax.set_xticks(x if L <= 36 else x[::2])
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_token_layer_heatmap(
    stats: Any,
    *,
    sequence: int = 0,
    kind: str = "layer",
    tokens: Sequence[str] | None = None,
    max_tokens: int = 80,
    ax: Any = None,
) -> Any:
    """Entropy of one kind of policy, per response token (x) and layer (y), for one sequence.

    Args:
        stats: :class:`~bupo_core.lens.InternalPolicyStatistics`.
        sequence: which sequence (0-based, across batches).
        kind: ``"layer"``, ``"attn"``, ``"ffn"``, ``"attn_input"`` or ``"ffn_input"``.
        tokens: the response tokens as text, for the x tick labels.
        max_tokens: show at most this many tokens (the first ones).
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415  (optional: matplotlib.pyplot is loaded only when drawing)

    if kind not in stats.entropy:
        raise ValueError(f"kind {kind!r} was not computed; available: {sorted(stats.entropy)}")
    sel = (stats.sequence_index == sequence).nonzero().squeeze(-1)
    if len(sel) == 0:
        raise ValueError(
            f"sequence {sequence} has no analysed tokens (there are {int(stats.sequence_index.max()) + 1})"
        )
    sel = sel[:max_tokens]
    data = stats.entropy[kind][:, sel].numpy()
    first = 0 if kind == "layer" else 1
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(16, 3 + 0.18 * data.shape[1]), 5))
    else:
        fig = ax.figure
    im = ax.imshow(
        data,
        aspect="auto",
        origin="lower",
        cmap="viridis",
        extent=(-0.5, data.shape[1] - 0.5, first - 0.5, first + data.shape[0] - 0.5),
    )
    fig.colorbar(im, ax=ax, label="entropy (nats)")
    ax.set_ylabel(LAYER_AXIS if kind == "layer" else "layer l (paper numbering)")
    ax.set_xlabel("response token")
    if tokens is not None:
        labels = [repr(t)[1:-1][:8] for t in list(tokens)[: len(sel)]]
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
    ax.set_title(f"Per-token entropy of the {kind} policy, sequence {sequence} (norm={stats.norm!r})", fontsize=10)
    return fig


def plot_entropy_and_norms(report: Any, axes: Any = None) -> Any:
    """Two panels: layer/ATTN/FFN entropy and the mean L2 norms of the same vectors (log scale)."""
    import matplotlib.pyplot as plt  # noqa: PLC0415  (optional: matplotlib.pyplot is loaded only when drawing)

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    else:
        fig = axes[0].figure
    L = int(_get(report, "num_layers"))
    layers, blocks = np.arange(L + 1), np.arange(1, L + 1)
    for ax, (key_l, key_a, key_f, ylabel) in zip(
        axes,
        [
            ("layer_entropy", "attn_entropy", "ffn_entropy", "mean entropy (nats)"),
            ("layer_norm", "attn_norm", "ffn_norm", "mean L2 norm of the raw vector"),
        ],
    ):
        ax.plot(layers, _get(report, key_l), "-o", ms=3, color=COLORS["layer"], label="H^l")
        ax.plot(blocks, _get(report, key_a), "-^", ms=3, color=COLORS["attn"], label="A^l")
        ax.plot(blocks, _get(report, key_f), "-s", ms=3, color=COLORS["ffn"], label="F^l")
        ax.set_xlabel(LAYER_AXIS)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    axes[0].set_title("Entropy", fontsize=10)
    axes[1].set_title("Vector norms (entropy of raw H E_u^T falls as the norm grows)", fontsize=10)
    fig.suptitle(_title(report), fontsize=10)
    fig.tight_layout()
    return fig


def plot_entropy_comparison(
    reports: Sequence[Any], labels: Sequence[str] | None = None, *, normalise: bool = True
) -> Any:
    """Several models side by side: layer entropy and FFN entropy change on a relative-depth axis.

    Args:
        reports: entropy reports (or dicts).
        labels: legend labels (default: each report's model).
        normalise: divide entropies by ln N so that models with different vocabularies compare.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415  (optional: matplotlib.pyplot is loaded only when drawing)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    for i, rep in enumerate(reports):
        L = int(_get(rep, "num_layers"))
        name = labels[i] if labels else str(_get(rep, "model"))
        scale = math.log(_get(rep, "vocab_size")) if normalise else 1.0
        a1.plot(
            np.arange(L + 1) / L,
            np.asarray(_get(rep, "layer_entropy"), dtype=float) / scale,
            "-o",
            ms=3,
            label=f"{name} (L={L})",
        )
        a2.plot(np.arange(1, L + 1) / L, _get(rep, "ffn_entropy_change"), "-s", ms=3, label=name)
        b = _get(rep, "boundary_layer")
        if b is not None:
            a2.axvline(b / L, ls="--", lw=1, color=a2.lines[-1].get_color(), alpha=0.7)
    a1.set_xlabel("relative depth l / L (paper numbering)")
    a1.set_ylabel("layer entropy / ln N" if normalise else "layer entropy (nats)")
    a2.axhline(0, color="black", lw=1)
    a2.set_xlabel("relative depth l / L (dashed: boundary layer)")
    a2.set_ylabel("mean dH_FFN (nats)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_statistic(
    report: Any, statistic: str, ax: Any = None, *, kinds: Sequence[str] | None = None, ylabel: str | None = None
) -> Any:
    """Per-layer mean of any lens statistic in ``report.statistics`` (one line per kind), paper numbering.

    This is the plot of a newly registered statistic: name it in ``LensConfig.statistics`` (or
    ``AnalysisConfig.statistics``) and pass its name here.
    """
    table = (_get(report, "statistics") or {}).get(statistic)
    if not table:
        raise ValueError(
            f"the report has no statistic {statistic!r}; it has {sorted(_get(report, 'statistics') or {})}"
        )
    fig, ax = _new_axes(ax, (7, 3.2))
    for kind in kinds or list(table):
        values = table[kind]
        xs = list(range(len(values))) if kind == "layer" else list(range(1, len(values) + 1))
        ax.plot(xs, values, marker="o", ms=3, color=COLORS.get(kind), label=kind)
    ax.set_xlabel(LAYER_AXIS)
    ax.set_ylabel(ylabel or statistic)
    ax.legend(fontsize=8)
    ax.set_title(_title(report), fontsize=9)
    return fig


def report_figures(report: Any) -> dict[str, Any]:
    """An :class:`~bupo_core.analysis.EntropyReport`'s figures by file stem: entropy flow, entropy change, norms, token heatmap."""
    figs = {
        "entropy_flow": plot_entropy_flow(report),
        "entropy_change": plot_entropy_change(report),
        "norms": plot_entropy_and_norms(report),
    }
    if getattr(report, "token_statistics", None) is not None:
        figs["token_heatmap"] = plot_token_layer_heatmap(
            report.token_statistics, sequence=0, tokens=(report.response_tokens or [None])[0]
        )
    return figs


def save_entropy_report(report: Any, out_dir: str | Path, *, figures: bool = True) -> dict[str, Path]:
    """Write ``entropy.json`` (``report.save``) and, by default, the figures as PNG; return the paths."""
    paths = report.save(out_dir)
    if figures:
        for name, fig in report_figures(report).items():
            paths[name] = Path(out_dir) / f"{name}.png"
            fig.savefig(paths[name], dpi=120, bbox_inches="tight")
            import matplotlib.pyplot as plt  # noqa: PLC0415  (optional: matplotlib.pyplot is loaded only when drawing)

            plt.close(fig)
    return paths
