"""SweepResults: loading a sweep folder, checking the summary against the rows, tables, verdicts, curves."""

from __future__ import annotations

import json
import math

import pytest

from bupo_core.errors import InputFormatError
from bupo_core.sweep import read_cells
from bupo_core.sweep_results import SweepResults, fmt_p, fmt_pm, metric_label
from conftest import write_fake_sweep


@pytest.fixture()
def sweep(tmp_path):
    return SweepResults.load(write_fake_sweep(tmp_path / "results") / "main")


def test_load_and_check(sweep):
    assert sweep.control == "grpo" and sweep.k == 4 and sweep.arm_names == ["grpo", "bupo_l1"]
    assert sweep.pending_arms == [] and sweep.groups() == {"main": ["grpo", "bupo_l1"]}
    sweep.check()  # the summary is what the rows give


def test_check_catches_an_edited_summary(sweep):
    sweep.summary["arms"]["bupo_l1"]["metrics"]["avg_at_k"]["mean"] = 0.3
    with pytest.raises(AssertionError, match=r"bupo_l1/avg_at_k mean: 0\.25.* recomputed from cells.jsonl, 0\.3 in summary.json"):
        sweep.check()


def test_check_catches_a_stale_summary(sweep):
    sweep.rows = [r for r in sweep.rows if not (r["arm"] == "bupo_l1" and r["seed"] == 2)]
    with pytest.raises(AssertionError, match=r"summary seeds \[0, 1, 2\], cells.jsonl has \[0, 1\]"):
        sweep.check()


def test_table_by_hand(sweep):
    rows = {r["arm"]: r for r in sweep.table("avg_at_k")}
    sd = math.sqrt(((0.5 - 0.5) ** 2 + (0.4 - 0.5) ** 2 + (0.6 - 0.5) ** 2) / 2)
    assert rows["grpo"]["mean"] == pytest.approx(0.5) and rows["grpo"]["se"] == pytest.approx(sd / math.sqrt(3))
    assert rows["grpo"]["diff"] is None and rows["grpo"]["p_value"] is None
    diffs = [0.25 - 0.5, 0.30 - 0.4, 0.20 - 0.6]
    m = sum(diffs) / 3
    se = math.sqrt(sum((d - m) ** 2 for d in diffs) / 2 / 3)
    assert rows["bupo_l1"]["diff"] == pytest.approx(m) and rows["bupo_l1"]["diff_se"] == pytest.approx(se)
    assert rows["bupo_l1"]["p_value"] == pytest.approx(0.25)  # all three negative: 2 of 8 sign patterns reach |sum|
    md = sweep.markdown_table()
    assert "| `bupo_l1` | 3 | 0.250 ± 0.029 |" in md and f"| {m:+.3f} ± {se:.3f} | 0.25 |" in md


def test_verdict_says_three_seeds_cannot_resolve(sweep):
    v = sweep.verdict("bupo_l1")
    assert "not resolved" in v and "3 seeds cannot give p < 0.05" in v
    assert sweep.verdict("grpo") == "`grpo` is the control."


def test_verdict_resolved_with_enough_seeds(sweep):
    sweep.summary["arms"]["bupo_l1"]["vs_control"]["avg_at_k"].update(p_value=0.03, n_pairs=6)
    assert "**resolved**, below the control" in sweep.verdict("bupo_l1")


def test_reward_curves_and_phase_means(sweep):
    c = sweep.reward_curves()
    assert c["grpo"]["mean"] == pytest.approx([0.1, 0.2, 0.3, 0.4]) and c["grpo"]["se"] == pytest.approx([0, 0, 0, 0])
    assert sweep.inter_steps("bupo_l1") == 2 and sweep.inter_steps("grpo") == 0
    p = sweep.phase_means("internal_logprob", ["bupo_l1"])["bupo_l1"]
    # seeds 0, 1, 2 at step 1: -2, -1, 0 -> mean -1, se 1/sqrt(3); full-phase steps are nan
    assert p["mean"][:2] == pytest.approx([-1.0, 0.0]) and p["se"][0] == pytest.approx(1 / math.sqrt(3))
    assert math.isnan(p["mean"][2]) and p["seeds"] == 3
    assert sweep.step_metrics("grpo", 0)[0]["reward_mean"] == 0.1 and sweep.step_metrics("grpo", 7) is None


def test_zero_advantage_share(sweep):
    # grpo: 0.25, 0.5, 0.75, 1.0 at steps 1-4 at every seed; bupo_l1: 0.5 throughout
    assert sweep.zero_advantage_share() == pytest.approx({"grpo": 0.625, "bupo_l1": 0.5})
    assert list(sweep.zero_advantage_share(["bupo_l1"])) == ["bupo_l1"]


def test_internal_signal_steps(sweep):
    assert sweep.internal_signal_steps("bupo_l1") == (6, 6)  # 2 internal steps x 3 seeds, every one with mixed groups
    assert sweep.internal_signal_steps("grpo") == (0, 0)
    path = sweep.folder / "cells" / "bupo_l1" / "seed-0" / "run" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r["zero_adv_group_frac"] = 1.0  # seed 0: every group all-equal, so its internal phase made no update
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sweep.internal_signal_steps("bupo_l1") == (4, 6)


def test_internal_phase_mean(sweep):
    # fake metrics: bupo_l1's internal log-prob is -3 + step + seed at steps 1-2: -2, -1 | -1, 0 | 0, 1
    assert sweep.internal_phase_mean("bupo_l1", "internal_logprob") == -0.5
    assert sweep.internal_phase_mean("bupo_l1", "internal_logprob", [0]) == -1.5
    assert sweep.internal_phase_mean("bupo_l1", "internal_logprob", [1], skip_zero=True) == -1.0
    assert sweep.internal_phase_mean("grpo", "internal_logprob") is None  # no internal phase


def test_fingerprint_follows_the_rows(sweep):
    before, grpo_only = sweep.fingerprint(), sweep.fingerprint(["grpo"])
    assert len(before) == 12 and grpo_only != before
    sweep.rows[-1]["metrics"]["avg_at_k"] += 0.01  # a bupo_l1 row changes
    assert sweep.fingerprint() != before
    assert sweep.fingerprint(["grpo"]) == grpo_only  # the grpo rows did not


def test_results_dir_finds_the_checkout_and_names_the_fix(tmp_path, monkeypatch):
    from bupo_core.sweep_results import results_dir

    monkeypatch.delenv("BUPO_RESULTS", raising=False)
    (tmp_path / "repo" / "results" / "specs").mkdir(parents=True)
    (tmp_path / "repo" / "notebooks").mkdir()
    assert results_dir(tmp_path / "repo" / "notebooks") == tmp_path / "repo" / "results"
    monkeypatch.setenv("BUPO_RESULTS", str(tmp_path / "repo" / "results"))
    assert results_dir(tmp_path) == tmp_path / "repo" / "results"
    monkeypatch.setenv("BUPO_RESULTS", str(tmp_path))
    with pytest.raises(InputFormatError, match="no specs"):
        results_dir()


def test_missing_folder_names_the_command(tmp_path):
    with pytest.raises(InputFormatError, match=r"summary.json: missing.*bupo sweep SPEC --out"):
        SweepResults.load(tmp_path / "nothing")


def test_read_cells_torn_last_line_and_bad_middle_line(tmp_path):
    p = tmp_path / "cells.jsonl"
    p.write_text('{"arm": "a", "seed": 0}\n{"arm": "b", "se')
    with pytest.warns(UserWarning, match=r"cells.jsonl:2: ignoring a torn last line"):
        assert read_cells(p) == [{"arm": "a", "seed": 0}]
    p.write_text('{"arm": "a", "seed": 0}\nnot json\n{"arm": "b", "seed": 0}\n')
    with pytest.raises(InputFormatError, match=r"cells.jsonl:2: not valid JSON"):
        read_cells(p)


def test_formatting():
    assert fmt_pm(0.5, 0.0577) == "0.500 ± 0.058" and fmt_pm(-0.1, None, signed=True) == "-0.100" and fmt_pm(None, 1) == "n/a"
    assert fmt_p(0.0625) == "0.0625" and fmt_p(None) == "n/a"
    assert metric_label("avg_at_k", 8) == "Avg@8" and metric_label("no_answer_rate", 8) == "no parseable answer"


def test_committed_sweeps_check():
    """Every committed sweep's summary is what its cells.jsonl gives."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "results"
    for folder in sorted(p.parent for p in root.glob("*/summary.json")):
        res = SweepResults.load(folder)
        res.check()
        assert json.loads((folder / "spec.json").read_text())["name"] == res.name


def test_resolution_needs_two_pairs_and_a_small_p(sweep):
    assert sweep.resolution("grpo") is None and sweep.resolution("bupo_l1") is None  # 3 seeds: p >= 0.25
    sweep.summary["arms"]["bupo_l1"]["vs_control"]["avg_at_k"].update(p_value=0.03, n_pairs=6)
    assert sweep.resolution("bupo_l1") == "below"
    sweep.summary["arms"]["bupo_l1"]["vs_control"]["avg_at_k"].update(n_pairs=1)
    assert sweep.resolution("bupo_l1") is None
