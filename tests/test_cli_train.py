"""Tests of ``bupo train``: files written, resume, and clean errors for bad input."""

from __future__ import annotations

import json

from bupo_core.cli import main
from bupo_core.trainer import read_metrics

BASE = ["train", "--model", "tiny-random-llama", "--task", "chain_sum", "--prompts-per-step", "2", "--group-size", "2",
        "--max-new-tokens", "4", "--task-size", "20", "--quiet"]


def test_train_writes_config_metrics_checkpoints_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(BASE + ["--method", "bupo", "--layer", "1", "--inter-steps", "1", "--steps", "2", "--save-every", "1",
                      "--task-arg", "max_terms=2", "--out", str(out)])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method"] == "bupo" and cfg["layer"] == 1 and cfg["task_kwargs"] == {"max_terms": 2}
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and [r["phase"] for r in rows] == ["internal", "full"]
    assert (out / "checkpoints" / "checkpoint-2" / "model.safetensors").exists()
    assert "metrics:" in capsys.readouterr().out
    rc = main(BASE + ["--method", "bupo", "--layer", "1", "--inter-steps", "1", "--steps", "3", "--task-arg", "max_terms=2",
                      "--out", str(out), "--resume"])
    assert rc == 0 and [r["step"] for r in read_metrics(out)] == [1, 2, 3]


def test_bad_input_gives_clean_errors(tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(BASE + ["--method", "bupo", "--layer", "9", "--out", out]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(BASE + ["--group-size", "1", "--out", out]) == 2
    assert "group_size must be at least 2" in capsys.readouterr().err
    assert main(BASE + ["--task", "bogus", "--out", out]) == 2
    assert "unknown task 'bogus'" in capsys.readouterr().err
    assert main(BASE + ["--method", "bupo", "--out", out]) == 2
    assert "needs layer" in capsys.readouterr().err
    assert main(BASE + ["--task-arg", "oops", "--out", out]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(BASE + ["--steps", "1", "--resume", "--out", out]) == 2
    assert "no run to resume" in capsys.readouterr().err


def test_resume_mismatch_via_cli(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(BASE + ["--steps", "1", "--out", out]) == 0
    assert main(BASE + ["--steps", "2", "--lr", "0.5", "--resume", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "settings differ" in err and "lr" in err


def test_training_on_a_test_set_is_refused_before_any_download(tmp_path, capsys, monkeypatch):
    import bupo_core.tasks as tasks

    def no_download(*args, **kwargs):  # the refusal must come first (works offline)
        raise AssertionError("a hub dataset was requested before the test-set check")

    monkeypatch.setattr(tasks, "_load_hub", no_download)
    out = str(tmp_path / "x")
    for name, instead in [("math500", "deepmath"), ("aime24", "deepmath"), ("amc23", "deepmath"), ("gsm8k-test", "gsm8k")]:
        assert main(BASE + ["--task", name, "--out", out]) == 2
        err = capsys.readouterr().err
        assert f"task {name!r} is a test set" in err and f"Train on {instead}" in err and "--allow-test-set-training" in err
    assert not (tmp_path / "x").exists()


def test_allow_test_set_training_flag_passes_the_check(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(BASE + ["--task", "math500", "--allow-test-set-training", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a test set" not in err and "not reachable" in err  # offline: the download itself fails
