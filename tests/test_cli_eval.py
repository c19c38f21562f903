"""`bupo eval` and `bupo refine` end to end on a tiny model, and their bad-input messages."""

from __future__ import annotations

import json

from bupo_core.cli import main


def test_eval_writes_eval_json(tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(
        [
            "eval",
            "--model",
            "tiny-random-qwen3",
            "--easy",
            "--n",
            "3",
            "--k",
            "2",
            "--max-new-tokens",
            "4",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads((out / "eval.json").read_text())
    for key in ("avg_at_k", "pass_at_k", "num_problems", "num_samples", "no_answer_rate", "mean_response_length"):
        assert key in data
    assert data["num_problems"] == 3 and data["num_samples"] == 2 and set(data["pass_at_k"]) == {"1", "2"}
    assert len((out / "per_problem.jsonl").read_text().splitlines()) == 3
    assert (out / "pass_at_k.png").stat().st_size > 0


def test_eval_bad_inputs(tmp_path, capsys):
    assert main(["eval", "--model", "tiny-random-llama", "--n", "0", "--out", str(tmp_path)]) == 2
    assert "--n and --k must be >= 1" in capsys.readouterr().err
    assert main(["eval", "--model", "tiny-random-llama", "--task", "no_such_task", "--out", str(tmp_path)]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["eval", "--model", "tiny-random-llama", "--task-arg", "oops", "--out", str(tmp_path)]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_refine_over_a_training_run(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--model",
            "tiny-random-llama",
            "--method",
            "bupo",
            "--layer",
            "1",
            "--inter-steps",
            "1",
            "--steps",
            "2",
            "--prompts-per-step",
            "2",
            "--group-size",
            "2",
            "--max-new-tokens",
            "4",
            "--save-every",
            "1",
            "--out",
            str(run),
            "--quiet",
        ]
    )
    assert rc == 0
    rc = main(["refine", "--run", str(run), "--n", "2", "--max-new-tokens", "4"])
    assert rc == 0
    data = json.loads((run / "refinement" / "refinement.json").read_text())
    assert [p["step"] for p in data["points"]] == [0, 1, 2]
    assert data["layer"] == 1 and set(data["points"][0]["kl_to_higher"]) == {"2"}
    assert (run / "refinement" / "refinement.png").exists()


def test_refine_needs_a_run_folder(tmp_path, capsys):
    assert main(["refine", "--run", str(tmp_path)]) == 2
    assert "bupo train" in capsys.readouterr().err


def test_eval_uses_the_eval_split_by_default(tmp_path):
    from bupo_core.tasks import EASY_CHAIN_SUM, load_task

    out = tmp_path / "ev"
    assert (
        main(
            [
                "eval",
                "--model",
                "tiny-random-qwen3",
                "--easy",
                "--n",
                "3",
                "--k",
                "2",
                "--max-new-tokens",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    asked = [json.loads(line)["question"] for line in (out / "responses.jsonl").read_text().splitlines()]
    eval_side = {
        e.question for e in load_task("chain_sum", size=40, seed=10_000, split="eval", **EASY_CHAIN_SUM).examples
    }
    train_side = {
        e.question for e in load_task("chain_sum", size=150, seed=0, split="train", **EASY_CHAIN_SUM).examples
    }
    assert set(asked) <= eval_side and not set(asked) & train_side
    data = json.loads((out / "eval.json").read_text())
    assert "accuracy_among_answered" in data and data["num_answered"] >= 0
