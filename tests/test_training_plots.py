"""Tests of the training-curve plots (built from metrics rows)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from bupo_core.reporting.training_plots import plot_phase_timing, plot_training_curves, smooth, switch_step


def _rows(method):
    rows = []
    for s in range(1, 7):
        internal = method == "bupo" and s <= 2
        rows.append(
            {
                "step": s,
                "phase": "internal" if internal else "full",
                "reward_mean": 0.1 * s,
                "entropy": 1.0 - 0.05 * s,
                "internal_entropy": 5.0 if internal else None,
                "response_length_mean": 10 + s,
                "time_generate": 1.0,
                "time_score": 0.1,
                "time_update": 0.5,
            }
        )
    return rows


def test_curves_mark_the_switch_and_overlay_runs():
    fig = plot_training_curves({"GRPO": _rows("grpo"), "BuPO": _rows("bupo")}, window=2)
    axes = fig.axes
    assert len(axes) == 3
    assert any(abs(line.get_xdata()[0] - 2.5) < 1e-9 for line in axes[0].lines if len(line.get_xdata()) == 2)
    labels = [t.get_text() for t in axes[1].get_legend().get_texts()]
    assert "BuPO: pi^l (internal phase)" in labels
    assert switch_step(_rows("bupo")) == 2 and switch_step(_rows("grpo")) is None
    # the timing figure stacks the mean seconds per step of each phase (1.0 + 0.1 + 0.5 here)
    ax = plot_phase_timing({"a": _rows("grpo"), "b": [dict(r, time_update=1.5) for r in _rows("grpo")]}).axes[0]
    heights = {(p.get_x(), round(p.get_y(), 6)): p.get_height() for p in ax.patches}
    assert sorted(round(h, 6) for h in heights.values()) == [0.1, 0.1, 0.5, 1.0, 1.0, 1.5]
    tops = sorted(round(p.get_y() + p.get_height(), 6) for p in ax.patches)
    assert tops[-2:] == [1.6, 2.6]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["generate", "score", "update"]


def test_smooth():
    assert smooth([1.0, None, 3.0], 3) == [1.0, 1.0, 2.0]


def test_training_curves_plot_the_smoothed_rewards():
    fig = plot_training_curves({"GRPO": _rows("grpo")}, window=1)
    reward = [line for line in fig.axes[0].lines if len(line.get_xdata()) == 6]
    assert reward and [round(y, 6) for y in reward[0].get_ydata()] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert list(reward[0].get_xdata()) == [1, 2, 3, 4, 5, 6]
