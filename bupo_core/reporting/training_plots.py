"""Training curves: reward, entropy and response length per step, GRPO vs BuPO overlays.

Each function takes metrics rows (dicts as written to ``metrics.jsonl``, or a run folder) and
returns a matplotlib ``Figure``. The step where BuPO switches from the internal phase to the full
policy is marked with a dashed vertical line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..runs import read_metrics

Rows = Sequence[Mapping]
RunLike = Rows | str | Path


def _rows(run: RunLike) -> list[Mapping]:
    if isinstance(run, (str, Path)):
        return read_metrics(run)
    return list(run)


def smooth(values: Sequence[float | None], window: int = 5) -> list[float | None]:
    """Trailing moving average over ``window`` steps, ignoring ``None`` values.

    >>> smooth([1.0, 3.0, None, 5.0], window=2)
    [1.0, 2.0, 3.0, 5.0]
    """
    out: list[float | None] = []
    for i in range(len(values)):
        win = [v for v in values[max(0, i - window + 1) : i + 1] if v is not None]
        out.append(sum(win) / len(win) if win else None)
    return out


def switch_step(rows: Rows) -> int | None:
    """The last internal-phase step (BuPO's switch happens right after it), or ``None``."""
    internal = [r["step"] for r in rows if r.get("phase") == "internal"]
    return max(internal) if internal else None


def plot_training_curves(
    runs: Mapping[str, RunLike] | RunLike,
    *,
    keys: Sequence[str] = ("reward_mean", "entropy", "response_length_mean"),
    window: int = 5,
    title: str | None = None,
):
    """One panel per metric, one line per run (raw as thin line, moving average as thick line).

    Args:
        runs: ``{"GRPO": rows_or_folder, "BuPO (l=6)": ...}`` or a single run.
        keys: metrics to plot; ``"entropy"`` panels also draw the internal policy's entropy of
            BuPO runs during the internal phase (dotted).
        window: moving-average window in steps.
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415  (optional: matplotlib.pyplot is loaded only when drawing)

    if not isinstance(runs, Mapping):
        runs = {"run": runs}
    labels = {
        "reward_mean": "mean reward",
        "entropy": "entropy of the full policy (nats)",
        "response_length_mean": "response length (tokens)",
        "loss": "loss",
        "clip_frac": "clip fraction",
        "approx_kl": "approx. KL(old || new)",
        "zero_adv_group_frac": "groups with zero advantage",
        "internal_entropy": "entropy of pi^l (nats)",
    }
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, run), colour in zip(runs.items(), colours * 4):
        rows = _rows(run)
        steps = [r["step"] for r in rows]
        sw = switch_step(rows)
        for ax, key in zip(axes[0], keys):
            vals = [r.get(key) for r in rows]
            pts = [(s, v) for s, v in zip(steps, vals) if v is not None]
            if pts:
                ax.plot(*zip(*pts), color=colour, alpha=0.25, lw=1)
                sm = [(s, v) for s, v in zip(steps, smooth(vals, window)) if v is not None]
                ax.plot(*zip(*sm), color=colour, lw=2, label=name)
            if key == "entropy":
                ie = [(r["step"], r["internal_entropy"]) for r in rows if r.get("internal_entropy") is not None]
                if ie:
                    ax.plot(*zip(*ie), color=colour, ls=":", lw=1.5, label=f"{name}: pi^l (internal phase)")
            if sw is not None:
                ax.axvline(sw + 0.5, color=colour, ls="--", lw=1)
                ax.text(
                    sw + 0.5, 1.0, " switch", color=colour, transform=ax.get_xaxis_transform(), va="top", fontsize=8
                )
    for ax, key in zip(axes[0], keys):
        ax.set_xlabel("step")
        ax.set_ylabel(labels.get(key, key))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if any(k == "entropy" for k in keys):
        axes[0][list(keys).index("entropy")].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_phase_timing(runs: Mapping[str, RunLike]):
    """Stacked seconds per step (generate / score / update) for each run: where the time goes."""
    import matplotlib.pyplot as plt  # noqa: PLC0415  (optional: matplotlib.pyplot is loaded only when drawing)

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    names = list(runs)
    parts = ("time_generate", "time_score", "time_update")
    bottoms = [0.0] * len(names)
    for part in parts:
        vals = []
        for name in names:
            rows = _rows(runs[name])
            vals.append(sum(r.get(part, 0.0) for r in rows) / max(len(rows), 1))
        ax.bar(names, vals, bottom=bottoms, label=part.removeprefix("time_"))
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_ylabel("seconds per step (mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
