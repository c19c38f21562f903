"""The deciding sweeps' specs (issue 20): seeds from the stated power, matched controls, the whole eval split."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from bupo_core.cli import main
from bupo_core.reporting.sweep_results import power_plan
from bupo_core.sweep import _read_spec_file, matched_controls, parse_spec
from bupo_core.trainer import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "results" / "specs"
HAVE_DYNAMIC_SAMPLING = "dynamic_sampling" in {f.name for f in fields(TrainConfig)}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _runnable_here(data: dict) -> dict:
    """The spec without the settings this machine cannot validate: ``device: cuda`` without a GPU, and
    ``dynamic_sampling`` before the trainer has it (issue 20's trainer change)."""
    drop = ({"dynamic_sampling"} if not HAVE_DYNAMIC_SAMPLING else set()) | ({"device"} if not _cuda() else set())
    return {**data, "shared": {k: v for k, v in data["shared"].items() if k not in drop}}


def _parse(name: str):
    data = _read_spec_file(SPECS / f"{name}.yaml")
    return data, parse_spec(_runnable_here(data), str(SPECS / f"{name}.yaml"))


def test_decide_has_the_seeds_its_stated_power_needs():
    data, spec = _parse("decide")
    plan = power_plan(data, ROOT / "results")
    assert plan["pilot"] == "long" and plan["target_diff"] == 0.03 and plan["test"] == "paired"  # long's r = +0.55
    n = plan["seeds_needed"]
    assert n >= 12 and spec.seeds == list(range(n))  # seeds 0..N-1, exactly what the power function gives
    assert [a.name for a in spec.arms] == ["grpo", "bupo_l5", "bupo_l5_ipa_norm_final"]
    assert all(a.seeds == spec.seeds for a in spec.arms)
    assert all(c["detectable_diff"] <= 0.03 for c in plan["comparisons"])
    assert (
        data["shared"]["dynamic_sampling"] is True and "device" not in data["shared"]
    )  # chosen at run time (--device)
    assert data["shared"]["steps"] == 50 and data["shared"]["inter_steps"] == 5  # the `long` settings
    cfg = {a.name: spec.train_config(a, 0, "x") for a in spec.arms}
    assert (
        cfg["bupo_l5"].layer == 5
        and cfg["bupo_l5"].ipa_norm == "none"
        and cfg["bupo_l5_ipa_norm_final"].ipa_norm == "final"
    )
    assert any(isinstance(x, str) and x.startswith("Can decide") for x in data["notes"])


@pytest.mark.parametrize("name", ["decide", "decide_ablations"])
def test_deciding_sweeps_use_uniform_pools_and_the_whole_eval_split(name):
    from bupo_core.tasks import HELD_OUT_CHAIN_SUM, chain_sum_split_counts

    data, spec = _parse(name)
    kw = spec.shared["task_kwargs"]
    assert kw["pool"] == "uniform" and kw["split"] == "train"
    assert {k: v for k, v in kw.items() if k not in ("pool", "split")} == HELD_OUT_CHAIN_SUM
    assert spec.eval["task_kwargs"]["pool"] == "uniform" and spec.eval["split"] == "eval"
    assert spec.eval["num_problems"] == sum(chain_sum_split_counts(HELD_OUT_CHAIN_SUM)["eval"].values()) == 743


def test_ablations_give_every_bupo_arm_a_matched_grpo_control():
    data, spec = _parse("decide_ablations")
    matched = matched_controls(spec)
    bupo = [a.name for a in spec.arms if spec.train_config(a, 0, "x").method == "bupo"]
    assert sorted(matched) == sorted(bupo)
    for arm, grpo in matched.items():
        b, g = spec.train_config(spec.arm(arm), 0, "x"), spec.train_config(spec.arm(grpo), 0, "x")
        assert g.method == "grpo" and g.steps == b.steps - b.inter_steps
    s_inter = sorted(
        spec.train_config(spec.arm(a), 0, "x").inter_steps
        for a in bupo
        if spec.train_config(spec.arm(a), 0, "x").layer == 5
    )
    layers = sorted({spec.train_config(spec.arm(a), 0, "x").layer for a in bupo})
    assert s_inter == [3, 5, 6, 12] and layers == [2, 5, 15, 26]
    assert len(spec.seeds) >= 3 and all(len(a.seeds) >= 3 for a in spec.arms)
    assert data["shared"]["dynamic_sampling"] is True


@pytest.mark.skipif(not HAVE_DYNAMIC_SAMPLING, reason="needs TrainConfig.dynamic_sampling (issue 20's trainer change)")
def test_deciding_specs_validate_and_their_summary_shows_dynamic_sampling(tmp_path):
    from bupo_core.sweep import load_spec, write_summary

    for name in ("decide", "decide_ablations"):
        spec = (
            load_spec(SPECS / f"{name}.yaml")
            if _cuda()
            else parse_spec(_runnable_here(_read_spec_file(SPECS / f"{name}.yaml")), name)
        )
        assert spec.shared["dynamic_sampling"] is True
        (tmp_path / name).mkdir()
        assert write_summary(spec, tmp_path / name)["shared"]["dynamic_sampling"] is True


def test_dry_run_prints_the_power(tmp_path, capsys):
    import json
    import shutil

    results = tmp_path / "results"  # decide.yaml next to its pilot (without device: cuda on a machine without a GPU)
    (results / "specs").mkdir(parents=True)
    shutil.copytree(ROOT / "results" / "long", results / "long", ignore=shutil.ignore_patterns("cells"))
    (results / "specs" / "decide.json").write_text(json.dumps(_runnable_here(_read_spec_file(SPECS / "decide.yaml"))))
    assert main(["sweep", str(results / "specs" / "decide.json"), "--out", str(tmp_path / "d"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Power, stated before the run: pilot long (bupo_l5 vs grpo" in out
    assert "seeds needed for a 0.03 difference: 25" in out and "bupo_l5 vs control, 25 seeds: ±0.030" in out


def test_dry_run_power_of_a_spec_without_a_power_note(tmp_path, capsys):
    import json

    spec = {
        "name": "t",
        "shared": {"model": "tiny-random-llama", "steps": 2},
        "seeds": [0, 1],
        "control": "grpo",
        "arms": [{"name": "grpo", "config": {"method": "grpo"}}],
    }
    (tmp_path / "t.json").write_text(json.dumps(spec))
    assert main(["sweep", str(tmp_path / "t.json"), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    assert "states no power basis" in capsys.readouterr().out
    # with a power note naming a committed pilot, the plan is printed
    results = tmp_path / "results"
    (results / "specs").mkdir(parents=True)
    import shutil

    shutil.copytree(ROOT / "results" / "long", results / "long", ignore=shutil.ignore_patterns("cells"))
    spec["notes"] = [{"power": {"pilot": "long", "arm": "bupo_l5", "target_diff": 0.05}}]
    (results / "specs" / "t.json").write_text(json.dumps(spec))
    assert main(["sweep", str(results / "specs" / "t.json"), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "pilot long (bupo_l5 vs grpo, 6 seeds" in out and "seeds needed for a 0.05 difference: 11" in out


def test_decide_cost_note_matches_the_gpu_pilot():
    """decide.yaml's cost note quotes bench/results/decide_gpu_pilot.json: check each number against it."""
    cells = json.loads((ROOT / "bench" / "results" / "decide_gpu_pilot.json").read_text())["cells"]
    note = " ".join(
        n for n in _read_spec_file(SPECS / "decide.yaml")["notes"] if isinstance(n, str) and n.startswith("Cost")
    )
    steps = [c["steps_done"] for c in cells.values()]
    assert f"{len(cells)} cells ran {min(steps)}-{max(steps)} of" in note
    drawn = [c["prompts_drawn_per_step"] for c in cells.values()]
    assert f"drew {round(min(drawn))}-{round(max(drawn))} of at most 16" in note
    secs = [sum(c["seconds_per_step"].values()) for c in cells.values()]
    assert 5.5 <= sum(secs) / len(secs) <= 6.5 and "about 6 s per step" in note
    bupo = {k: c["internal_steps_with_update"] for k, c in cells.items() if k.startswith("bupo")}
    assert sorted(bupo.values()) == [4] + [5] * (len(bupo) - 1) and "all 5 internal steps but one cell's" in note
    bad = sorted(k for k, c in cells.items() if c["nonfinite_updates"])
    assert bad == ["bupo_l5/seed-2", "grpo/seed-3"] and "bupo_l5 seed 2, grpo seed 3" in note


@pytest.mark.parametrize("name", ["decide", "decide_ablations"])
def test_deciding_sweeps_compute_in_fp32(name):
    """The H200 pilot lost cells to non-finite bf16 updates (decide.yaml's cost note): the deciding specs pin fp32."""
    data, spec = _parse(name)
    assert data["shared"]["precision"] == "fp32"
    assert spec.train_config(spec.arms[0], 0, "x").precision == "fp32"
