"""Tests for bupo_core.reporting.entropy_plots (figures from reports) and bupo_core.teaching.widgets (the explorer and its fallback)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from bupo_core.entropy import entropy_from_logits  # noqa: E402
from bupo_core.errors import InputFormatError, LayerOutOfRangeError  # noqa: E402
from bupo_core.lens import internal_policy_statistics  # noqa: E402
from bupo_core.models import tiny_model  # noqa: E402
from bupo_core.reporting import entropy_plots as plots  # noqa: E402
from bupo_core.teaching.widgets import LensView, explore, lens_view, widgets_available  # noqa: E402


def _report(L=4, boundary=2):
    return {
        "model": "toy",
        "num_layers": L,
        "vocab_size": 100,
        "norm": "none",
        "num_tokens": 10,
        "layer_entropy": [4.0 - 0.5 * i for i in range(L + 1)],
        "attn_entropy": [3.0] * L,
        "ffn_entropy": [2.0] * L,
        "attn_input_entropy": [3.5] * L,
        "ffn_input_entropy": [1.5] * L,
        "layer_entropy_change": [-0.5] * L,
        "attn_entropy_change": [-0.5] * L,
        "ffn_entropy_change": [0.5, 0.5, -0.1, -0.2][:L],
        "boundary_layer": boundary,
        "boundary_run": [1, boundary] if boundary else None,
        "layer_norm": [1.0 + i for i in range(L + 1)],
        "attn_norm": [1.0] * L,
        "ffn_norm": [2.0] * L,
    }


def teardown_function():
    plt.close("all")


def test_entropy_flow_places_modules_between_layers():
    fig = plots.plot_entropy_flow(_report(), show_inputs=True)
    ax = fig.axes[0]
    assert "paper numbering" in ax.get_xlabel()
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    layer = lines["Layer I/O: H(H^l)"]
    assert list(layer.get_xdata()) == [0, 1, 2, 3, 4]
    attn = lines["ATTN: H(A^l)"].get_xdata()
    ffn = lines["FFN: H(F^l)"].get_xdata()
    assert all(l - 1 < a < f < l for a, f, l in zip(attn, ffn, range(1, 5)))  # H^{l-1} -> A^l -> F^l -> H^l
    assert any("max ln N" in k for k in lines) and any("boundary layer 2" in k for k in lines)


def test_entropy_change_has_zero_line_and_boundary():
    fig = plots.plot_entropy_change(_report())
    ax = fig.axes[0]
    assert len(ax.patches) >= 8  # 4 attention + 4 FFN bars
    assert any(list(ln.get_ydata()) == [0, 0] for ln in ax.get_lines())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("boundary layer 2" in s for s in labels) and any("1..2" in s for s in labels)
    plots.plot_entropy_change(_report(boundary=None))  # no boundary: still draws


def test_norms_and_comparison_figures():
    fig = plots.plot_entropy_and_norms(_report())
    assert len(fig.axes) == 2 and fig.axes[1].get_yscale() == "log"
    fig = plots.plot_entropy_comparison([_report(), _report(L=4, boundary=None)], labels=["a", "b"])
    xs = fig.axes[0].get_lines()[0].get_xdata()
    assert xs[0] == 0 and xs[-1] == 1  # relative depth
    assert fig.axes[0].get_lines()[0].get_ydata()[0] == pytest.approx(4.0 / math.log(100))


def test_token_layer_heatmap():
    stats = internal_policy_statistics(tiny_model("llama"), torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]))
    fig = plots.plot_token_layer_heatmap(stats, sequence=1, tokens=list("abcd"))
    img = fig.axes[0].images[0].get_array()
    assert img.shape == (3, 4)
    assert torch.allclose(torch.tensor(img.data), stats.entropy["layer"][:, 4:])
    fig = plots.plot_token_layer_heatmap(stats, kind="ffn")
    assert fig.axes[0].images[0].get_array().shape == (2, 4)
    with pytest.raises(ValueError, match="no analysed tokens"):
        plots.plot_token_layer_heatmap(stats, sequence=5)


# ------------------------------------------------------------------ widgets
def test_lens_view_matches_the_model(tiny_llm):
    model, tok = tiny_llm
    view = lens_view(model, tok, "The capital of France is", norm="final", k=5)
    assert isinstance(view, LensView) and view.layer == 2 and len(view.top) == 5
    probs = [p for _, p in view.top]
    assert probs == sorted(probs, reverse=True)
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        own = model(input_ids=ids).logits[0, -1]
    assert view.entropy == pytest.approx(float(entropy_from_logits(own)), abs=1e-3)
    assert view.top[0][0] == tok.decode([int(own.argmax())])
    assert len(view.entropy_by_layer) == 3 and view.entropy_by_layer[2] == pytest.approx(view.entropy)
    ffn = lens_view(model, tok, "The capital of France is", kind="ffn", layer=1, position=0)
    assert len(ffn.entropy_by_layer) == 2 and ffn.position == 0
    assert "layer 1" in ffn.text()


def test_lens_view_bad_input(tiny_llm):
    model, tok = tiny_llm
    with pytest.raises(InputFormatError, match="out of range"):
        lens_view(model, tok, "Hi there", position=50)
    with pytest.raises(InputFormatError, match="unknown kind"):
        lens_view(model, tok, "Hi there", kind="mlp")
    with pytest.raises(LayerOutOfRangeError):
        lens_view(model, tok, "Hi there", kind="attn", layer=0)


def test_explore_static_fallback_and_widget(tiny_llm, capsys):
    model, tok = tiny_llm
    assert widgets_available() is False  # no kernel under pytest
    view = explore(model, tok, "One two three", widgets=False, k=3)
    assert isinstance(view, LensView)
    assert "top tokens" in capsys.readouterr().out
    pytest.importorskip("ipywidgets")
    panel = explore(model, tok, "One two three", widgets=True, k=3)
    text, positions = panel.children[0], panel.children[1].children[0]
    assert text.value == "One two three" and positions.max == len(tok("One two three")["input_ids"]) - 1
    text.value = "A longer prompt with more tokens"  # the position slider follows the new prompt
    assert positions.max == len(tok("A longer prompt with more tokens")["input_ids"]) - 1


# ------------------------------------------------------------------ evaluation figures
def test_pass_at_k_figure_draws_the_given_values():
    from bupo_core.reporting.evaluation_plots import plot_pass_at_k

    res = {
        "num_samples": 4,
        "avg_at_k": 0.25,
        "pass_at_k": {"1": 0.25, "2": 0.4, "4": 0.6},
        "pass_at_k_ci": {"1": [0.1, 0.4], "2": [0.2, 0.6], "4": [0.4, 0.8]},
    }
    ax = plot_pass_at_k({"base": res}).axes[0]
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [1, 2, 4] and list(line.get_ydata()) == [0.25, 0.4, 0.6]
    assert line.get_label() == "base (Avg@4 0.250)" and ax.get_xscale() == "log"
    assert len(ax.collections) == 1  # the bootstrap band


def test_refinement_figure_draws_each_measure():
    from bupo_core.reporting.evaluation_plots import plot_refinement

    rows = [
        {
            "step": s,
            "layer": 2,
            "cosine_to_higher": {"3": 0.1 * s, "4": 0.2 * s},
            "kl_to_higher": {"3": 1.0 + s, "4": 2.0 + s},
            "layer_entropy_change": -0.1 * s,
            "perplexity": 10.0 - s,
        }
        for s in (0, 5)
    ]
    axes = plot_refinement(rows).axes
    assert [list(l.get_ydata()) for l in axes[0].get_lines()] == [[0.0, 0.5], [0.0, 1.0]]
    assert list(axes[1].get_lines()[0].get_ydata()) == [0.0, -0.5]
    assert list(axes[2].get_lines()[0].get_ydata()) == [10.0, 5.0]
    assert [list(l.get_ydata()) for l in axes[3].get_lines()] == [[1.0, 6.0], [2.0, 7.0]]
    assert "KL(π^2 ‖ π^j)" in axes[3].get_title()


def test_report_figures_take_the_report_object(tiny_llm, tmp_path):
    from bupo_core.analysis import PromptResponse, analyse_entropy

    model, tok = tiny_llm
    report = analyse_entropy(model, tok, [PromptResponse("Hi", "Hello there.")], progress=False, model_name="tiny")
    figs = plots.report_figures(report)
    assert set(figs) == {"entropy_flow", "entropy_change", "norms", "token_heatmap"}
    layer = {ln.get_label(): ln for ln in figs["entropy_flow"].axes[0].get_lines()}["Layer I/O: H(H^l)"]
    assert [round(y, 5) for y in layer.get_ydata()] == [round(y, 5) for y in report.layer_entropy]
