"""`bupo sweep`: spec validation (errors name the file and the reason), resume, checkpoint clean-up,
and summary statistics against hand computation. Tiny random models and tiny sizes."""

from __future__ import annotations

import json
import math

import pytest

from bupo_core.cli import main
from bupo_core.errors import InputFormatError
from bupo_core.rewards import register_scorer
from bupo_core.sweep import cell_key, load_spec, parse_spec, read_cells, run_sweep, summarize

register_scorer("test_even_length", lambda text, example: float(len(text) % 2 == 0))

SHARED = {
    "model": "tiny-random-llama",
    "task": "chain_sum",
    "task_size": 20,
    "reward": "test_even_length",
    "task_kwargs": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "split": "train"},
    "steps": 2,
    "prompts_per_step": 2,
    "group_size": 2,
    "max_new_tokens": 4,
    "lr": 1e-3,
    "num_mini_batches": 1,
    "micro_batch_size": 4,
}


def tiny_spec(**over) -> dict:
    spec = {
        "name": "tiny",
        "shared": dict(SHARED),
        "seeds": [0, 1],
        "control": "grpo",
        "eval": {"num_problems": 2, "k": 2, "max_new_tokens": 4, "batch_size": 8},
        "arms": [
            {"name": "base", "config": {"steps": 0}, "seeds": [0]},
            {"name": "grpo", "config": {"method": "grpo"}},
            {"name": "bupo_l1", "config": {"method": "bupo", "layer": 1, "inter_steps": 1}},
        ],
    }
    spec.update(over)
    return spec


def write(tmp_path, data, name="spec.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data) if name.endswith(".json") else data)
    return p


def test_sweep_runs_resumes_and_cleans_checkpoints(tmp_path):
    spec = load_spec(write(tmp_path, tiny_spec()))
    out = tmp_path / "out"
    seen = []

    def stop_after_two(row):
        seen.append((row["arm"], row["seed"]))
        if len(seen) == 2:
            raise KeyboardInterrupt  # Ctrl-C between cells: what is finished stays finished

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, progress=False, log=lambda s: None, on_cell_done=stop_after_two)
    assert [(r["arm"], r["seed"]) for r in read_cells(out)] == [("base", 0), ("grpo", 0)]
    # the summary is rewritten after every cell, so an interrupted sweep leaves a current one
    assert json.loads((out / "summary.json").read_text())["cells_finished"] == 2
    report = run_sweep(spec, out, progress=False, log=lambda s: None)
    assert report.skipped == [("base", 0), ("grpo", 0)]
    assert report.ran == [("bupo_l1", 0), ("grpo", 1), ("bupo_l1", 1)]
    rows = read_cells(out)
    assert len(rows) == 5
    for r in rows:
        cell = out / "cells" / r["arm"] / f"seed-{r['seed']}"
        assert (cell / "eval" / "eval.json").exists()
        assert not (cell / "run" / "checkpoints").exists()  # deleted once the row is written
        assert r["wall_s"]["total"] >= r["wall_s"]["train"] >= 0
        if r["arm"] != "base":
            assert len((cell / "run" / "metrics.jsonl").read_text().splitlines()) == 2
            assert len(r["train_rewards"]) == 2
    # a third run has nothing to do
    again = run_sweep(spec, out, progress=False, log=lambda s: None)
    assert again.ran == [] and len(again.skipped) == 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["control"] == "grpo" and set(summary["arms"]) == {"base", "grpo", "bupo_l1"}
    bupo = summary["arms"]["bupo_l1"]
    assert bupo["config"] == {"method": "bupo", "layer": 1, "inter_steps": 1}
    assert bupo["seeds"] == [0, 1]
    for metric in ("avg_at_k", "pass_at_k", "no_answer_rate", "accuracy_among_answered"):
        assert set(bupo["metrics"][metric]) >= {"mean", "se", "per_seed"}
        assert set(bupo["vs_control"][metric]) >= {"diff_mean", "se", "p_value"}
    # changing an arm's settings is detected instead of reusing old numbers
    changed = tiny_spec()
    changed["arms"][1]["config"]["lr"] = 5e-4
    with pytest.raises(InputFormatError, match="other settings"):
        run_sweep(parse_spec(changed, "changed.json"), out, progress=False, log=lambda s: None)


def test_interrupted_cell_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from bupo_core import trainer as trainer_mod

    spec = load_spec(write(tmp_path, tiny_spec(arms=[{"name": "grpo", "config": {}}], seeds=[3])))
    out = tmp_path / "out"
    real = trainer_mod.Trainer.train_step
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, progress=False, log=lambda s: None)
    run_dir = out / "cells" / "grpo" / "seed-3" / "run"
    assert (run_dir / "checkpoints" / "checkpoint-1").exists() and read_cells(out) == []
    report = run_sweep(spec, out, progress=False, log=lambda s: None)
    row = read_cells(out)[0]
    assert report.ran == [("grpo", 3)] and row["resumed"] is True
    assert [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_summary_statistics_match_hand_computation():
    spec = parse_spec(tiny_spec(seeds=[0, 1, 2]), "s.json")

    def row(arm, seed, avg, pas, na, acc):
        return {
            "arm": arm,
            "seed": seed,
            "key": cell_key(spec, spec.arm(arm), seed),
            "train_rewards": [0.5, 1.0],
            "metrics": {
                "avg_at_k": avg,
                "pass_at_k": pas,
                "no_answer_rate": na,
                "accuracy_among_answered": acc,
                "k": 2,
            },
            "wall_s": {"total": 10.0, "train": 8.0, "eval": 2.0},
        }

    rows = [
        row("grpo", 0, 0.50, 0.75, 0.10, 0.6),
        row("grpo", 1, 0.40, 0.50, 0.20, 0.5),
        row("grpo", 2, 0.60, 1.00, 0.00, 0.6),
        row("bupo_l1", 0, 0.25, 0.50, 0.30, 0.4),
        row("bupo_l1", 1, 0.30, 0.50, 0.20, 0.4),
        row("bupo_l1", 2, 0.20, 0.75, 0.40, None),
        row("base", 0, 0.10, 0.25, 0.50, 0.2),
        {**row("grpo", 1, 0.9, 0.9, 0.9, 0.9), "key": "stale"},  # a row from other settings is ignored
    ]
    s = summarize(spec, rows)
    g = s["arms"]["grpo"]["metrics"]["avg_at_k"]
    assert g["per_seed"] == [0.50, 0.40, 0.60]
    assert g["mean"] == pytest.approx(0.5)
    assert g["se"] == pytest.approx(math.sqrt(((0.0) ** 2 + 0.1**2 + 0.1**2) / 2) / math.sqrt(3))
    v = s["arms"]["bupo_l1"]["vs_control"]["avg_at_k"]
    # diffs -0.25, -0.10, -0.40: mean -0.25, sd 0.15, se 0.15/sqrt(3); all one sign -> p = 2/8
    assert v["diff_mean"] == pytest.approx(-0.25)
    assert v["se"] == pytest.approx(0.15 / math.sqrt(3))
    assert v["p_value"] == pytest.approx(0.25)
    # accuracy among answered: a missing value is left out of the mean and the pairs
    a = s["arms"]["bupo_l1"]["metrics"]["accuracy_among_answered"]
    assert a["per_seed"] == [0.4, 0.4, None] and a["mean"] == pytest.approx(0.4)
    assert s["arms"]["bupo_l1"]["vs_control"]["accuracy_among_answered"]["n_pairs"] == 2
    # the base arm has one seed: no SE, paired with the control's seed 0 only
    b = s["arms"]["base"]
    assert b["seeds"] == [0] and b["metrics"]["avg_at_k"]["se"] is None
    assert (
        b["vs_control"]["avg_at_k"]["diff_mean"] == pytest.approx(-0.4)
        and b["vs_control"]["avg_at_k"]["p_value"] == 1.0
    )
    assert s["arms"]["grpo"]["vs_control"]["avg_at_k"]["diff_mean"] == 0.0
    assert s["arms"]["grpo"]["train_reward_last3"] == pytest.approx(0.75)
    assert s["cells_finished"] == 7 and s["wall_s_total"] == pytest.approx(70.0)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda d: d["arms"][1]["config"].update(ipa_nrom="final"),
            r"spec\.json: arm 'grpo': unknown TrainConfig field\(s\) \['ipa_nrom'\]"
            r".*Valid fields: max_new_tokens, temperature, top_p, model, task",
        ),
        (lambda d: d["shared"].update(sed=3), r"spec\.json: shared settings: unknown TrainConfig field\(s\) \['sed'\]"),
        (lambda d: d["shared"].update(seed=3), r"do not set 'seed'"),
        (lambda d: d.update(control="nope"), r"spec\.json: control arm 'nope' is not one of the arms"),
        (lambda d: d.pop("seeds"), r"spec\.json: missing required key 'seeds'"),
        (lambda d: d.update(seeds=[0, 0]), r"lists a seed twice"),
        (lambda d: d["arms"].append({"name": "grpo", "config": {}}), r"two arms have this name"),
        (lambda d: d["arms"][2]["config"].pop("layer"), r"arm 'bupo_l1': method='bupo' needs layer"),
        (lambda d: d["eval"].update(kk=3), r"unknown eval setting\(s\) \['kk'\]"),
        (lambda d: d.update(armz=[]), r"unknown top-level key\(s\) \['armz'\]"),
        (lambda d: d["arms"][0].update(name="a/b"), r"the name must be"),
    ],
)
def test_malformed_specs_name_file_and_reason(tmp_path, mutate, match):
    data = tiny_spec()
    mutate(data)
    with pytest.raises(InputFormatError, match=match):
        load_spec(write(tmp_path, data))


def test_spec_file_errors(tmp_path):
    with pytest.raises(InputFormatError, match="does not exist"):
        load_spec(tmp_path / "none.yaml")
    bad_yaml = write(tmp_path, "seeds: [0, 1\narms: x\n", "bad.yaml")
    with pytest.raises(InputFormatError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_spec(bad_yaml)
    bad_json = write(tmp_path, '{"seeds": [0,]}', "bad.json")
    bad_json.write_text('{"seeds": [0,]}')
    with pytest.raises(InputFormatError, match=r"bad\.json:1: not valid JSON"):
        load_spec(bad_json)
    with pytest.raises(InputFormatError, match="must be a mapping"):
        load_spec(write(tmp_path, "- 1\n- 2\n", "list.yaml"))


def test_cli_sweep_dry_run_and_error_exit(tmp_path, capsys):
    p = write(tmp_path, tiny_spec())
    assert main(["sweep", str(p), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "bupo_l1" in out and "5 cells" in out and "missing" in out
    data = tiny_spec()
    data["arms"][1]["config"]["ipa_nrom"] = "final"
    assert main(["sweep", str(write(tmp_path, data, "bad.json")), "--out", str(tmp_path / "o")]) == 2
    assert "unknown TrainConfig field" in capsys.readouterr().err


def test_committed_specs_parse_or_name_only_future_fields():
    """Every committed spec is well formed; the only errors allowed are fields the trainer does not have yet."""
    from pathlib import Path

    from bupo_core.sweep import _read_spec_file

    specs = sorted((Path(__file__).parent.parent / "results" / "specs").glob("*.yaml"))
    assert specs, "results/specs/*.yaml missing"
    future = {
        "ipa_norm",
        "ipa_lr",
        "reset_optimizer_at_switch",
        "freeze_through_layer",
        "upper_lr_scale",
        "upper_lr_layer",
    }
    from dataclasses import fields

    from bupo_core.trainer import TrainConfig

    have = {f.name for f in fields(TrainConfig)}
    for path in specs:
        if "dynamic_sampling" not in have and "dynamic_sampling" in (_read_spec_file(path).get("shared") or {}):
            continue  # the deciding specs need the trainer's dynamic sampling (issue 20); tests/test_specs.py checks them
        spec = load_spec(path, skip_unavailable=True)
        for arm in spec.arms:
            if arm.unavailable:
                assert set(arm.config) & future and not (
                    set(arm.config) - future - {"method", "layer", "inter_steps", "steps"}
                ), arm
        data = _read_spec_file(path)
        assert data["control"] in [a["name"] for a in data["arms"]]
        assert len(spec.arm(data["control"]).seeds) >= 3


def test_docs_describe_the_committed_specs():
    """docs/experiments.md's one-line description of each extra spec states its real steps and seeds."""
    from pathlib import Path

    root = Path(__file__).parent.parent
    text = " ".join((root / "docs" / "experiments.md").read_text().split())
    for name in ("long", "gemma", "gemma_norm"):
        spec = load_spec(root / "results" / "specs" / f"{name}.yaml")
        line = text.split(f"`{name}.yaml` (", 1)[1].split(")", 1)[0]
        assert f"{spec.shared['steps']} steps" in line and f"{len(spec.seeds)} seeds" in line, (name, line)


def test_unavailable_arms_are_skipped_only_when_asked(tmp_path):
    data = tiny_spec()
    data["arms"].append({"name": "future", "config": {"method": "bupo", "layer": 1, "future_setting": 1}})
    p = write(tmp_path, data)
    with pytest.raises(InputFormatError, match=r"arm 'future': unknown TrainConfig field\(s\) \['future_setting'\]"):
        load_spec(p)
    spec = load_spec(p, skip_unavailable=True)
    assert spec.arm("future").unavailable and ("future", 0) not in [(a.name, s) for a, s in spec.cells()]
    s = summarize(spec, [])
    assert "future" in s["unavailable_arms"] and "future" not in s["arms"]
    with pytest.raises(InputFormatError, match="fields this version"):
        run_sweep(spec, tmp_path / "o", only_arms=["future"], progress=False, log=lambda s: None)


def test_spec_shorthands():
    data = tiny_spec(seeds=2)
    data["arms"] = {
        "grpo": {"method": "grpo"},
        "bupo_l1": {"config": {"method": "bupo", "layer": 1, "inter_steps": 1}, "seeds": [1]},
    }
    spec = parse_spec(data, "s.json")
    assert spec.seeds == [0, 1] and spec.arm("grpo").config == {"method": "grpo"} and spec.arm("bupo_l1").seeds == [1]
    flat = tiny_spec()
    flat["arms"] = [{"name": "grpo", "method": "grpo", "lr": 1e-4}]
    assert parse_spec(flat, "f.json").arm("grpo").config == {"method": "grpo", "lr": 1e-4}


def test_cli_summary_only_recomputes_without_running(tmp_path, capsys):
    from conftest import write_fake_sweep

    from bupo_core.cli import main

    res = write_fake_sweep(tmp_path / "results")
    out = res / "main"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["sweep", str(res / "specs" / "main.json"), "--out", str(out), "--summary-only"]) == 0
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # reads only
    text = capsys.readouterr().out
    assert "6/6 cells done" in text and "bupo_l1" in text and "p = 0.25" in text
    assert not (out / "cells" / "grpo" / "seed-0" / "eval").exists()  # nothing ran
    assert main(["sweep", str(res / "specs" / "main.json"), "--out", str(tmp_path / "none"), "--summary-only"]) == 2
    assert "cells.jsonl: missing" in capsys.readouterr().err
