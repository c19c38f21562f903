"""Figures of a sweep (matplotlib, no display needed): arms across seeds, paired differences, curves.

Every function takes the report objects (a ``summary.json`` dict, or the curves that
:class:`bupo_core.reporting.sweep_results.SweepResults` computes) and returns the figure; none computes
statistics of its own, so what a plot shows is what the summary says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt

from ..sweep import metric_label

CONTROL_COLOR = "C3"
ARM_COLOR = "C0"
SEED_COLOR = "0.55"


def _offsets(n: int, width: float = 0.25) -> list[float]:
    """Fixed horizontal offsets for ``n`` per-seed points (no random jitter: the figure is reproducible)."""
    if n <= 1:
        return [0.0] * n
    return [-width / 2 + width * i / (n - 1) for i in range(n)]


def plot_arms(
    summary: Mapping[str, Any],
    metric: str = "avg_at_k",
    arms: Sequence[str] | None = None,
    ax=None,
    title: str | None = None,
):
    """Per arm: every seed's value (grey) and the mean ± SE across seeds; the control in red.

    Args:
        summary: a sweep's ``summary.json``.
        metric: one of its metrics (``avg_at_k``, ``pass_at_k``, ``no_answer_rate``,
            ``accuracy_among_answered``).
        arms: which arms, in order (default: every arm with a finished seed).
    """
    names = [n for n in (arms if arms is not None else summary["arms"]) if summary["arms"][n]["seeds"]]
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(max(5.0, 0.62 * len(names) + 2.2), 3.8))
    control = summary["control"]
    for i, n in enumerate(names):
        m = summary["arms"][n]["metrics"][metric]
        pts = [p for p in m["per_seed"] if p is not None]
        ax.scatter(
            [i + d for d in _offsets(len(pts))],
            pts,
            s=16,
            color=SEED_COLOR,
            zorder=2,
            label="one training seed" if i == 0 else None,
        )
        if m["mean"] is not None:
            ax.errorbar(
                [i],
                [m["mean"]],
                yerr=[m["se"] or 0.0],
                fmt="o",
                ms=7,
                capsize=5,
                lw=1.6,
                zorder=3,
                color=CONTROL_COLOR if n == control else ARM_COLOR,
            )
    if control in names and summary["arms"][control]["metrics"][metric]["mean"] is not None:
        ax.axhline(
            summary["arms"][control]["metrics"][metric]["mean"],
            color=CONTROL_COLOR,
            lw=0.8,
            ls="--",
            label=f"{control} mean (control)",
        )
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel(f"{metric_label(metric, summary['k'])} (held-out)")
    ax.set_title(title or f"{summary.get('name', '')}: mean ± SE across training seeds", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_paired_differences(
    summary: Mapping[str, Any],
    metric: str = "avg_at_k",
    arms: Sequence[str] | None = None,
    ax=None,
    title: str | None = None,
):
    """Per arm: ``arm[seed] - control[seed]`` for every paired seed, the mean ± SE, and the p-value.

    A difference is resolved when the whole error bar is off zero *and* the sign-flip p-value is
    small; with 3 seeds the p-value cannot go below 0.25, whatever the size.
    """
    control = summary["control"]
    names = [
        n
        for n in (arms if arms is not None else summary["arms"])
        if n != control and summary["arms"][n]["vs_control"][metric].get("n_pairs", 0) > 0
    ]
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(max(5.0, 0.62 * len(names) + 2.2), 3.8))
    for i, n in enumerate(names):
        v = summary["arms"][n]["vs_control"][metric]
        pts = [d for _, d in v["per_seed"]]
        ax.scatter(
            [i + d for d in _offsets(len(pts))],
            pts,
            s=16,
            color=SEED_COLOR,
            zorder=2,
            label="one seed's difference" if i == 0 else None,
        )
        ax.errorbar(
            [i], [v["diff_mean"]], yerr=[v["se"] or 0.0], fmt="o", ms=7, capsize=5, lw=1.6, color=ARM_COLOR, zorder=3
        )
        if v["p_value"] is not None:
            top = max(pts + [v["diff_mean"] + (v["se"] or 0.0)])
            ax.annotate(
                f"p={v['p_value']:.2g}", (i, top), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7
            )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
    ax.set_xlim(-0.6, max(len(names), 1) - 0.4)
    ax.set_ylabel(f"{metric_label(metric, summary['k'])} − {control}")
    ax.set_title(title or f"paired difference vs {control} (same seed = same prompts and evaluation draw)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if names:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    inter_steps: Mapping[str, int] | None = None,
    ylabel: str = "mean training reward",
    ax=None,
    title: str | None = None,
):
    """Per-step curves with ±SE bands (``{arm: {"mean": [...], "se": [...]}}``), a dotted line at each BuPO switch.

    Used for the training reward (:meth:`SweepResults.reward_curves`) and for the per-step
    statistics of the kept run folders (:meth:`SweepResults.phase_means`). ``nan`` steps are gaps.
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.0, 3.8))
    for n, c in curves.items():
        xs = list(range(1, len(c["mean"]) + 1))
        line = ax.plot(xs, c["mean"], marker=".", label=n)[0]
        lo = [m - s if not math.isnan(m) else math.nan for m, s in zip(c["mean"], c["se"])]
        hi = [m + s if not math.isnan(m) else math.nan for m, s in zip(c["mean"], c["se"])]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
    switches = sorted({s for s in (inter_steps or {}).values() if s})
    for s in switches:
        ax.axvline(s + 0.5, color="0.6", ls=":", lw=1)
    if switches:
        ax.text(
            switches[0] + 0.5,
            1.0,
            " switch to GRPO",
            transform=ax.get_xaxis_transform(),
            fontsize=7,
            va="top",
            color="0.4",
        )
    mags = [abs(v) for c in curves.values() for v in c["mean"] if not math.isnan(v) and v != 0]
    if mags and max(mags) > 100 and max(mags) / min(mags) > 100:
        # arms orders of magnitude apart (Gemma's raw internal log-probs, ~ -1e4 nats, beside ~ -40): symlog keeps both readable
        ax.set_yscale("symlog", linthresh=min(mags))
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "mean across training seeds ± SE", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
