"""The sweep figures show exactly the summary's numbers (per-seed points, mean ± SE, p-values, curves)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import write_fake_sweep  # noqa: E402

from bupo_core.reporting.sweep_plots import CONTROL_COLOR, plot_arms, plot_curves, plot_paired_differences  # noqa: E402
from bupo_core.reporting.sweep_results import SweepResults  # noqa: E402


@pytest.fixture()
def sweep(tmp_path):
    return SweepResults.load(write_fake_sweep(tmp_path / "results") / "main")


def test_plot_arms_shows_every_seed_and_the_mean(sweep):
    fig = plot_arms(sweep.summary, "avg_at_k")
    ax = fig.axes[0]
    scatters = [c for c in ax.collections if type(c).__name__ == "PathCollection"]
    assert [sorted(np.asarray(c.get_offsets())[:, 1].tolist()) for c in scatters] == [[0.4, 0.5, 0.6], [0.2, 0.25, 0.3]]
    # the error bars' centres are the means, the control's is red
    means = [line.get_ydata()[0] for line in ax.lines if line.get_marker() == "o"]
    assert means == pytest.approx([0.5, 0.25])
    assert matplotlib.colors.same_color(
        [line for line in ax.lines if line.get_marker() == "o"][0].get_color(), CONTROL_COLOR
    )
    assert [t.get_text() for t in ax.get_xticklabels()] == ["grpo", "bupo_l1"]
    plt.close(fig)


def test_plot_paired_differences_shows_pairs_and_p(sweep):
    fig = plot_paired_differences(sweep.summary, "avg_at_k")
    ax = fig.axes[0]
    (sc,) = [c for c in ax.collections if type(c).__name__ == "PathCollection"]
    assert sorted(np.asarray(sc.get_offsets())[:, 1].tolist()) == pytest.approx(sorted([-0.25, -0.1, -0.4]))
    assert [t.get_text() for t in ax.texts] == ["p=0.25"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bupo_l1"]  # the control is not compared with itself
    plt.close(fig)


def test_plot_curves_draws_means_and_the_switch(sweep):
    curves = sweep.reward_curves()
    fig = plot_curves(curves, {n: sweep.inter_steps(n) for n in curves})
    ax = fig.axes[0]
    data = {line.get_label(): line.get_ydata().tolist() for line in ax.lines if not line.get_label().startswith("_")}
    assert data["grpo"] == pytest.approx([0.1, 0.2, 0.3, 0.4]) and data["bupo_l1"] == pytest.approx(
        [0.2, 0.1, 0.2, 0.3]
    )
    vlines = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"]
    assert vlines == [2.5]
    plt.close(fig)


def test_plot_curves_symlog_only_for_curves_orders_of_magnitude_apart(sweep):
    fig = plot_curves(sweep.reward_curves())
    assert fig.axes[0].get_yscale() == "linear"  # rewards in [0, 1]
    plt.close(fig)
    far = {"a": {"mean": [-38.0, -35.0], "se": [1.0, 1.0]}, "b": {"mean": [-9900.0, -9600.0], "se": [50.0, 50.0]}}
    fig = plot_curves(far, ylabel="internal log-prob")
    assert fig.axes[0].get_yscale() == "symlog"
    plt.close(fig)
