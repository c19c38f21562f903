"""Tests for `bupo entropy`: outputs, required fields and clean errors."""

from __future__ import annotations

import json

import pytest

from bupo_core.cli import main

FIELDS = (
    "model",
    "num_layers",
    "norm",
    "num_tokens",
    "layer_entropy",
    "attn_entropy",
    "ffn_entropy",
    "attn_input_entropy",
    "ffn_input_entropy",
    "layer_entropy_change",
    "attn_entropy_change",
    "ffn_entropy_change",
    "boundary_layer",
)


def _pairs(tmp_path, lines):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_entropy_from_pairs_writes_json_and_figures(tmp_path, capsys):
    pairs = _pairs(
        tmp_path,
        [
            json.dumps({"prompt": "What is 2 + 3?", "response": "5"}),
            json.dumps({"messages": [{"role": "user", "content": "Name a colour."}], "response": "Blue is a colour."}),
        ],
    )
    out = tmp_path / "run"
    rc = main(
        [
            "entropy",
            "--model",
            "tiny-random-llama",
            "--pairs",
            str(pairs),
            "--norm",
            "final",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads((out / "entropy.json").read_text())
    for key in FIELDS:
        assert key in data, key
    assert data["model"] == "tiny-random-llama" and data["norm"] == "final" and data["num_layers"] == 2
    assert len(data["layer_entropy"]) == 3 and len(data["ffn_entropy_change"]) == 2
    assert data["settings"]["pairs"] == str(pairs)
    assert [s["line"] for s in data["samples"]] == [1, 2]
    for fig in ("entropy_flow.png", "entropy_change.png", "norms.png", "token_heatmap.png"):
        assert (out / fig).stat().st_size > 1000
    assert "boundary layer" in capsys.readouterr().out


def test_entropy_from_task_samples(tmp_path):
    out = tmp_path / "task"
    rc = main(
        [
            "entropy",
            "--model",
            "tiny-random-llama",
            "--task",
            "chain_sum",
            "--n",
            "2",
            "--max-new-tokens",
            "4",
            "--seed",
            "1",
            "--task-arg",
            "max_terms=2",
            "--no-figures",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads((out / "entropy.json").read_text())
    assert data["num_sequences"] == 2 and 2 <= data["num_tokens"] <= 8
    assert data["settings"]["task"] == "chain_sum" and data["settings"]["seed"] == 1
    assert data["settings"]["task_args"] == {"max_terms": 2}
    assert not (out / "entropy_flow.png").exists()


def test_malformed_pairs_file_reports_line(tmp_path, capsys):
    pairs = _pairs(tmp_path, [json.dumps({"prompt": "a", "response": "b"}), '{"prompt": "a"'])
    rc = main(["entropy", "--model", "tiny-random-llama", "--pairs", str(pairs), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{pairs}:2" in err and "not valid JSON" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "chain_sun"], "Did you mean chain_sum"),
        (["--task", "chain_sum", "--n", "0"], "--n must be >= 1"),
        (["--task", "chain_sum", "--task-arg", "max_terms"], "KEY=VALUE"),
        (["--task", "chain_sum", "--device", "cuda"], "no CUDA GPU"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, args, message):
    pytest.importorskip("torch")
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    rc = main(["entropy", "--model", "tiny-random-llama", *args, "--out", str(tmp_path / "o")])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_task_or_pairs_is_required(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["entropy", "--out", str(tmp_path)])
    assert exc.value.code == 2
