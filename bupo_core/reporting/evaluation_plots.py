"""Figures for evaluation and feature refinement (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt


def plot_pass_at_k(results: Mapping[str, Mapping[str, Any]], ax=None, title: str | None = None):
    """Pass@k against k (log-2 axis) for several runs, with bootstrap bands.

    Args:
        results: label -> ``eval.json`` content (fields ``pass_at_k`` and ``pass_at_k_ci``).
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 3.6))
    for label, res in results.items():
        ks = sorted(int(k) for k in res["pass_at_k"])
        ys = [res["pass_at_k"][str(k)] for k in ks]
        line = ax.plot(ks, ys, marker="o", label=f"{label} (Avg@{res['num_samples']} {res['avg_at_k']:.3f})")[0]
        ci = res.get("pass_at_k_ci")
        if ci:
            lo = [ci[str(k)][0] for k in ks]
            hi = [ci[str(k)][1] for k in ks]
            ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("Pass@k")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Pass@k (unbiased estimator, 95% bootstrap over problems)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_refinement(rows: Sequence[Mapping[str, Any]], title: str | None = None):
    """The paper's figure-5 view over checkpoints: cosine similarity, entropy change, perplexity, KL.

    Args:
        rows: one dict per checkpoint as :meth:`bupo_core.refinement.RefinementPoint.to_json` gives,
            sorted by step.
    """
    steps = [r["step"] for r in rows]
    layer = rows[0]["layer"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    uppers = sorted({int(j) for r in rows for j in r["cosine_to_higher"]})
    cmap = plt.get_cmap("viridis")
    for i, j in enumerate(uppers):
        color = cmap(i / max(1, len(uppers) - 1))
        axes[0].plot(
            steps,
            [r["cosine_to_higher"][str(j)] for r in rows],
            color=color,
            lw=1,
            label=f"H^{j}" if i in (0, len(uppers) - 1) else None,
        )
        axes[3].plot(
            steps,
            [r["kl_to_higher"][str(j)] for r in rows],
            color=color,
            lw=1,
            label=f"π^{j}" if i in (0, len(uppers) - 1) else None,
        )
    axes[0].set_title(f"cos(H^{layer}, H^j), j > {layer}", fontsize=9)
    axes[1].plot(steps, [r["layer_entropy_change"] for r in rows], marker="o")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_title(f"layer entropy change ΔH^{layer} (nats)", fontsize=9)
    axes[2].plot(steps, [r["perplexity"] for r in rows], marker="o", color="C3")
    axes[2].set_title("full-policy perplexity (reference set)", fontsize=9)
    axes[3].set_title(f"KL(π^{layer} ‖ π^j), j > {layer} (nats)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[3].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
