"""Bad input fails before the work with a message naming the problem and the fix: numbers in the
configs, output folders, files (encodings, folders, empty/NaN answers, over-long examples), models
(truncated weights, a local path that does not exist) and a diverging run."""

from __future__ import annotations

import json
import math

import pytest

from bupo_core.cli import main
from bupo_core.errors import InputFormatError, ModelNotAvailableError, UnknownModelError
from bupo_core.trainer import TrainConfig, Trainer, TrainingError

TRAIN = [
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
    "--steps",
    "1",
]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a command loads a model (the checks must come first)."""
    import bupo_core.models as models

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(models, "load_model", refuse)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lr": math.nan}, "lr must be a finite number"),
        ({"lr": math.inf}, "lr must be a finite number"),
        ({"temperature": 0.0}, "temperature must be > 0 for training.*greedy"),
        ({"temperature": -1.0}, "temperature must be > 0"),
        ({"kl_coef": -0.1}, "kl_coef must be >= 0"),
        ({"save_every": -1}, "save_every must be >= 0"),
        ({"task_size": 0}, "task_size must be >= 1"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"reward": "no_such_reward"}, "unknown reward 'no_such_reward'; known rewards"),
    ],
)
def test_train_config_refuses_bad_numbers(change, message):
    with pytest.raises(InputFormatError, match=message):
        TrainConfig(**change).validate()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "nan"], "lr must be a finite number"),
        (["--lr", "inf"], "lr must be a finite number"),
        (["--kl-coef", "-1"], "kl_coef must be >= 0"),
        (["--save-every", "-2"], "save_every must be >= 0"),
        (["--task-size", "0"], "task_size must be >= 1"),
        (["--device", "bogus"], "unknown device 'bogus'"),
        (["--reward", "bogus"], "unknown reward 'bogus'"),
        (["--temperature", "0"], "temperature must be > 0 for training"),
        (
            ["--task-arg", "min_terms=3", "--task-arg", "max_terms=2"],
            r"chain_sum.*min_terms=3, max_terms=2.*max_terms must be >= min_terms",
        ),
    ],
)
def test_train_cli_bad_numbers_exit_2_before_loading(tmp_path, capsys, no_model_load, args, message):
    assert main(TRAIN + args + ["--out", str(tmp_path / "r")]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_train_cli_refuses_a_used_folder_and_overwrite_starts_clean(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(TRAIN + ["--out", out]) == 0
    assert main(TRAIN + ["--seed", "5", "--out", out]) == 2
    assert "already holds another run" in capsys.readouterr().err
    assert main(TRAIN + ["--seed", "5", "--overwrite", "--out", out]) == 0
    from bupo_core.runs import read_metrics

    assert [r["step"] for r in read_metrics(out)] == [1]


def test_eval_checks_arguments_and_output_before_loading(tmp_path, capsys, no_model_load):
    base = ["eval", "--model", "tiny-random-llama", "--n", "2", "--k", "2"]
    assert main(base + ["--batch-size", "0", "--out", str(tmp_path / "e")]) == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err
    assert main(base + ["--temperature", "-1", "--out", str(tmp_path / "e")]) == 2
    assert "temperature must be a finite number >= 0 (0 = greedy" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(base + ["--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(base + ["--device", "tpu9", "--out", str(tmp_path / "e")]) == 2
    assert "unknown device" in capsys.readouterr().err


def test_entropy_checks_output_and_task_settings_before_loading(tmp_path, capsys, no_model_load):
    (tmp_path / "file").write_text("x")
    base = ["entropy", "--model", "tiny-random-llama", "--task", "chain_sum", "--n", "1"]
    assert main(base + ["--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(base + ["--temperature", "nan", "--out", str(tmp_path / "o")]) == 2
    assert "temperature must be a finite number" in capsys.readouterr().err
    assert main(base + ["--task-arg", "min_terms=3", "--task-arg", "max_terms=2", "--out", str(tmp_path / "o")]) == 2
    assert "max_terms must be >= min_terms" in capsys.readouterr().err
    pairs = tmp_path / "p.jsonl"
    pairs.write_bytes('{"prompt": "a", "response": "b"}\n'.encode("utf-16"))
    assert main(["entropy", "--model", "tiny-random-llama", "--pairs", str(pairs), "--out", str(tmp_path / "o")]) == 2
    assert "p.jsonl:1: the file is UTF-16" in capsys.readouterr().err


def test_demo_checks_eval_sizes_and_report_folder_before_any_work(tmp_path, no_model_load):
    from bupo_core.runs import RunFolderError
    from bupo_core.teaching.demo import DemoConfig, run_demo

    bad_k = DemoConfig(model="tiny-random-llama", out_dir=str(tmp_path / "d"))
    bad_k.eval.k = 0  # set after construction: the demo itself must check it before any work
    with pytest.raises(InputFormatError, match="k \\(samples per problem\\) must be >= 1"):
        run_demo(bad_k, log=lambda m: None)
    bad_n = DemoConfig(model="tiny-random-llama", out_dir=str(tmp_path / "d"))
    bad_n.eval.num_problems = 0
    with pytest.raises(InputFormatError, match="num_problems must be >= 1"):
        run_demo(bad_n, log=lambda m: None)
    used = tmp_path / "used"
    (used / "runs" / "grpo").mkdir(parents=True)
    (used / "runs" / "grpo" / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(RunFolderError, match="already holds files.*--overwrite"):
        run_demo(DemoConfig(model="tiny-random-llama", out_dir=str(used)), log=lambda m: None)
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputFormatError, match="is a file"):
        run_demo(DemoConfig(model="tiny-random-llama", out_dir=str(tmp_path / "f")), log=lambda m: None)


def test_demo_cli_overwrite_flag(tmp_path, capsys, no_model_load):
    used = tmp_path / "used"
    used.mkdir()
    (used / "demo.json").write_text("{}")
    assert main(["demo", "--model", "tiny-random-llama", "--out", str(used)]) == 2
    assert "already holds files" in capsys.readouterr().err


# --------------------------------------------------------------------------- task files
def _qa(tmp_path, text: str | bytes, name="qa.jsonl"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return p


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question": "q", "answer": 1}\n'.encode("utf-16"), r"qa\.jsonl:1: the file is UTF-16"),
        (b'{"question": "q", "answer": 1}\n{"question": "caf\xe9", "answer": 2}\n', r"qa\.jsonl:2: not UTF-8 text"),
        ('{"question": "q", "answer": 1}\n{"question": "q2", "answer": ""}\n', r"qa\.jsonl:2: \"answer\" is empty"),
        ('{"question": "q", "answer": NaN}\n', r"qa\.jsonl:1: \"answer\" is nan"),
        ('{"question": "q", "answer": "   "}\n', r"qa\.jsonl:1: \"answer\" is empty"),
    ],
)
def test_task_file_problems_name_file_and_line(tmp_path, content, message):
    from bupo_core.tasks import load_task

    with pytest.raises(InputFormatError, match=message):
        load_task(str(_qa(tmp_path, content)))


def test_a_folder_named_like_a_task_file(tmp_path):
    from bupo_core.tasks import load_task

    (tmp_path / "x.jsonl").mkdir()
    with pytest.raises(InputFormatError, match="x.jsonl is a folder, not a file"):
        load_task(str(tmp_path / "x.jsonl"))


def test_an_over_long_training_example_is_refused_before_step_1_naming_file_and_line(tmp_path):
    lines = [json.dumps({"question": f"{i} + 1 =", "answer": str(i + 1)}) for i in range(3)]
    lines.insert(2, json.dumps({"question": "1 + " * 400 + "1 =", "answer": "401"}))
    p = _qa(tmp_path, "\n".join(lines) + "\n")
    cfg = TrainConfig(
        model="tiny-random-llama",
        task=str(p),
        steps=1,
        prompts_per_step=2,
        group_size=2,
        max_new_tokens=8,
        out_dir=str(tmp_path / "run"),
    )
    with pytest.raises(
        InputFormatError,
        match=r"qa\.jsonl:3: the prompt has \d+ tokens; with max_new_tokens=8 that exceeds the model's context of 512",
    ):
        Trainer(cfg)


# --------------------------------------------------------------------------- models
def test_truncated_local_model_weights(tmp_path):
    from bupo_core.models import load_model

    model, tok = load_model("tiny-random-llama", device="cpu")
    folder = tmp_path / "m"
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(
        ModelNotAvailableError, match=r"model.safetensors is truncated or corrupt.*save the model again"
    ):
        load_model(str(folder), device="cpu")


def test_a_local_path_that_does_not_exist_is_not_a_hub_id(tmp_path, monkeypatch):
    from bupo_core.models import load_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("runs/x", "./runs/x", "runs/x/checkpoints/checkpoint-3"):
        with pytest.raises(UnknownModelError, match=f"the local folder {name.removeprefix('./')} does not exist"):
            load_model(name, device="cpu")


# --------------------------------------------------------------------------- divergence
def test_a_diverging_run_stops_with_a_training_error_naming_lr(tmp_path, monkeypatch):
    import bupo_core.step as step_mod

    cfg = TrainConfig(
        model="tiny-random-llama",
        task_size=10,
        steps=2,
        prompts_per_step=2,
        group_size=2,
        max_new_tokens=4,
        out_dir=str(tmp_path / "run"),
    )
    tr = Trainer(cfg)

    def diverged(*a, **k):  # what torch.multinomial raises once the weights hold inf/NaN
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")

    monkeypatch.setattr(step_mod, "generate", diverged)
    with pytest.raises(TrainingError, match=r"diverged at step 1.*learning rate is the likely cause \(lr=2e-05\)"):
        tr.train()


def test_entropy_and_demo_refuse_an_unknown_device_before_loading(tmp_path, capsys):
    from bupo_core.cli import main

    assert main(["entropy", "--task", "chain_sum", "--device", "gpu", "--out", str(tmp_path / "e")]) == 2
    assert "unknown device 'gpu'" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_demo_refuses_a_used_folder_and_overwrite_replaces_only_a_demo_report(tmp_path):
    from bupo_core.runs import RunFolderError
    from bupo_core.teaching.demo import DemoConfig, check_demo, run_demo

    out = tmp_path / "rep"
    (out / "runs" / "grpo").mkdir(parents=True)
    (out / "summary.md").write_text("an earlier demo's report")
    (out / "runs" / "grpo" / "metrics.jsonl").write_text('{"step": 1}\n')
    (out / "my_notes.txt").write_text("keep")
    with pytest.raises(RunFolderError, match="already holds files.*--overwrite"):
        run_demo(DemoConfig(out_dir=str(out)))  # refused before any model is loaded
    assert (out / "summary.md").read_text() == "an earlier demo's report"
    before = sorted(p.name for p in out.iterdir())
    folder, _, _ = check_demo(DemoConfig(out_dir=str(out)), overwrite=True)
    assert folder == out and sorted(p.name for p in out.iterdir()) == before  # the check deletes nothing

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    # run_demo deletes the old report once it holds the folder's lock, then starts (here: stops at the model load)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("bupo_core.models.load_model", stop)
        with pytest.raises(Stop):
            run_demo(DemoConfig(out_dir=str(out)), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "demo_config.json",
        "my_notes.txt",
    ]  # the old report is gone, not the notes
