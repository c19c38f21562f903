"""Tests of ``bupo train``: files written, resume, and clean errors for bad input."""

from __future__ import annotations

import json

from bupo_core.cli import main
from bupo_core.trainer import read_metrics

BASE = [
    "train",
    "--model",
    "tiny-random-llama",
    "--task",
    "chain_sum",
    "--prompts-per-step",
    "2",
    "--group-size",
    "2",
    "--max-new-tokens",
    "4",
    "--task-size",
    "20",
    "--quiet",
]


def test_train_writes_config_metrics_checkpoints_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        BASE
        + [
            "--method",
            "bupo",
            "--layer",
            "1",
            "--inter-steps",
            "1",
            "--steps",
            "2",
            "--save-every",
            "1",
            "--task-arg",
            "max_terms=2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method"] == "bupo" and cfg["layer"] == 1 and cfg["task_kwargs"] == {"max_terms": 2}
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and [r["phase"] for r in rows] == ["internal", "full"]
    assert (out / "checkpoints" / "checkpoint-2" / "model.safetensors").exists()
    assert "metrics:" in capsys.readouterr().out
    rc = main(
        BASE
        + [
            "--method",
            "bupo",
            "--layer",
            "1",
            "--inter-steps",
            "1",
            "--steps",
            "3",
            "--task-arg",
            "max_terms=2",
            "--out",
            str(out),
            "--resume",
        ]
    )
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


def test_every_train_config_field_is_a_documented_flag(capsys):
    """The CLI is generated from TrainConfig: each field has a flag whose help is its docstring line."""
    import dataclasses

    import pytest

    from bupo_core.config_cli import field_help
    from bupo_core.trainer import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    helps = field_help(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "task_kwargs":
            assert "--task-arg" in text
            continue
        flag = "--out" if f.name == "out_dir" else "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert " ".join(helps[f.name].split())[:40] in text, f.name


def test_generated_flags_parse_into_the_config():
    from bupo_core.cli import build_parser
    from bupo_core.commands.train import config_from_args
    from bupo_core.trainer import TrainConfig

    args = build_parser().parse_args(
        [
            "train",
            "--out",
            "o",
            "--lr",
            "0.001",
            "--dual-clip",
            "none",
            "--adam-betas",
            "0.8",
            "0.9",
            "--no-skip-zero-advantage-rows",
            "--loss-aggregation",
            "sequence-mean",
            "--ppo-epochs",
            "2",
            "--task",
            "basic_arithmetic",
        ]
    )
    cfg = config_from_args(args)
    assert (
        cfg.lr,
        cfg.dual_clip,
        cfg.adam_betas,
        cfg.skip_zero_advantage_rows,
        cfg.loss_aggregation,
        cfg.ppo_epochs,
    ) == (0.001, None, (0.8, 0.9), False, "sequence-mean", 2)
    assert cfg.out_dir == "o" and cfg.task_kwargs == {}  # non-chain_sum tasks start from their own defaults
    untouched = {
        k: v
        for k, v in cfg.to_dict().items()
        if k
        not in (
            "lr",
            "dual_clip",
            "adam_betas",
            "skip_zero_advantage_rows",
            "loss_aggregation",
            "ppo_epochs",
            "out_dir",
            "task",
            "task_kwargs",
        )
    }
    assert untouched == {k: v for k, v in TrainConfig().to_dict().items() if k in untouched}


def test_one_task_arg_parser():
    from bupo_core.commands._common import parse_task_args
    from bupo_core.config_cli import parse_key_values

    assert parse_key_values(["a=2", "b=0.5", "c=TRUE", "d=x", "e=[1, 2]", "f=null"]) == {
        "a": 2,
        "b": 0.5,
        "c": True,
        "d": "x",
        "e": [1, 2],
        "f": None,
    }
    assert parse_task_args(["max_terms=2"]) == {"max_terms": 2}


def test_a_new_config_field_is_a_flag_without_other_changes():
    """The one-place change of docs/adding-a-statistic.md: a field plus its docstring line gives a flag."""
    import argparse
    from dataclasses import dataclass

    from bupo_core.config_cli import add_config_arguments, config_from_args
    from bupo_core.trainer import TrainConfig

    @dataclass
    class Extended(TrainConfig):
        warmup_steps: int = 0

    Extended.__doc__ = (
        TrainConfig.__doc__ + "\n        warmup_steps: linear learning-rate warm-up over this many steps (0 = off).\n"
    )
    p = argparse.ArgumentParser()
    add_config_arguments(p, Extended, exclude=("task_kwargs",))
    assert "linear learning-rate warm-up" in p.format_help()
    cfg = config_from_args(Extended, p.parse_args(["--warmup-steps", "10", "--lr", "0.5"]))
    assert cfg.warmup_steps == 10 and cfg.lr == 0.5 and cfg.steps == TrainConfig().steps


def test_training_on_a_test_set_is_refused_before_any_download(tmp_path, capsys, monkeypatch):
    import bupo_core.tasks as tasks

    def no_download(*args, **kwargs):  # the refusal must come first (works offline)
        raise AssertionError("a hub dataset was requested before the test-set check")

    monkeypatch.setattr(tasks, "_load_hub", no_download)
    out = str(tmp_path / "x")
    for name, instead in [
        ("math500", "deepmath"),
        ("aime24", "deepmath"),
        ("amc23", "deepmath"),
        ("gsm8k-test", "gsm8k"),
    ]:
        assert main(BASE + ["--task", name, "--out", out]) == 2
        err = capsys.readouterr().err
        assert (
            f"task {name!r} is a test set" in err
            and f"Train on {instead}" in err
            and "--allow-test-set-training" in err
        )
    assert not (tmp_path / "x").exists()


def test_allow_test_set_training_flag_passes_the_check(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(BASE + ["--task", "math500", "--allow-test-set-training", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a test set" not in err and "not reachable" in err  # offline: the download itself fails
