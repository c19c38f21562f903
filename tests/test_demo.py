"""The end-to-end demo on a tiny model with tiny sizes: every stage runs and the report is written."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bupo_core.errors import LayerOutOfRangeError
from bupo_core.teaching.demo import DemoConfig, choose_layer, run_demo


def _report(boundary, reason="r", L=30):
    return SimpleNamespace(num_layers=L, boundary_layer=boundary, boundary_reason=reason)


def test_choose_layer_uses_boundary_below_top():
    layer, why = choose_layer(_report(6, "layers 1-6 positive"))
    assert layer == 6 and "boundary" in why


@pytest.mark.parametrize("boundary", [None, 30])
def test_choose_layer_falls_back_with_reason(boundary):
    layer, why = choose_layer(_report(boundary, "no run of positive FFN entropy change"))
    assert layer == 5 and "fallback" in why  # round(30 * 6 / 36)


def test_choose_layer_validates_forced():
    assert choose_layer(_report(None), forced=3)[0] == 3
    with pytest.raises(LayerOutOfRangeError, match="1..29"):
        choose_layer(_report(None), forced=30)


def test_demo_end_to_end_on_tiny_model(tmp_path):
    from bupo_core.cli import build_parser
    from bupo_core.commands.demo import config_from_namespace

    # the demo's flags build the composed config (train / analysis / eval)
    cfg = config_from_namespace(
        build_parser().parse_args(
            [
                "demo",
                "--model",
                "tiny-random-llama",
                "--analysis-prompts",
                "2",
                "--analysis-max-new-tokens",
                "6",
                "--steps",
                "2",
                "--inter-steps",
                "1",
                "--prompts-per-step",
                "2",
                "--group-size",
                "2",
                "--max-new-tokens",
                "4",
                "--eval-problems",
                "2",
                "--eval-k",
                "2",
                "--eval-max-new-tokens",
                "4",
                "--out",
                str(tmp_path / "demo"),
                "--device",
                "cpu",
            ]
        )
    )
    assert (cfg.train.steps, cfg.train.group_size, cfg.eval.k, cfg.analysis.max_new_tokens, cfg.train.lr) == (
        2,
        2,
        2,
        6,
        DemoConfig().train.lr,
    )
    summary = run_demo(cfg, log=lambda m: None)
    text = summary.read_text()
    assert "BuPO target layer: 1" in text and "Held-out evaluation" in text
    out = summary.parent
    for f in (
        "entropy/entropy.json",
        "entropy/entropy_flow.png",
        "training_curves.png",
        "pass_at_k.png",
        "runs/grpo/metrics.jsonl",
        "runs/bupo/metrics.jsonl",
        "eval/base/eval.json",
        "eval/bupo/per_problem.jsonl",
        "demo.json",
    ):
        assert (out / f).exists(), f
    info = json.loads((out / "demo.json").read_text())
    assert set(info["eval"]) == {"base", "grpo", "bupo"}
    phases = [json.loads(l)["phase"] for l in (out / "runs/bupo/metrics.jsonl").read_text().splitlines()]
    assert phases == ["internal", "full"]
    assert not (out / "runs/grpo/checkpoints").exists()  # removed unless keep_checkpoints
