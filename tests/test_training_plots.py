"""Tests of the training-curve plots (built from metrics rows)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from bupo_core.training_plots import plot_phase_timing, plot_training_curves, smooth, switch_step


def _rows(method):
    rows = []
    for s in range(1, 7):
        internal = method == "bupo" and s <= 2
        rows.append({"step": s, "phase": "internal" if internal else "full", "reward_mean": 0.1 * s, "entropy": 1.0 - 0.05 * s,
                     "internal_entropy": 5.0 if internal else None, "response_length_mean": 10 + s,
                     "time_generate": 1.0, "time_score": 0.1, "time_update": 0.5})
    return rows


def test_curves_mark_the_switch_and_overlay_runs():
    fig = plot_training_curves({"GRPO": _rows("grpo"), "BuPO": _rows("bupo")}, window=2)
    axes = fig.axes
    assert len(axes) == 3
    assert any(abs(line.get_xdata()[0] - 2.5) < 1e-9 for line in axes[0].lines if len(line.get_xdata()) == 2)
    labels = [t.get_text() for t in axes[1].get_legend().get_texts()]
    assert "BuPO: pi^l (internal phase)" in labels
    assert switch_step(_rows("bupo")) == 2 and switch_step(_rows("grpo")) is None
    assert plot_phase_timing({"a": _rows("grpo")}).axes


def test_smooth():
    assert smooth([1.0, None, 3.0], 3) == [1.0, 1.0, 2.0]
