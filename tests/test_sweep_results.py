"""SweepResults: loading a sweep folder, checking the summary against the rows, tables, verdicts, curves."""

from __future__ import annotations

import json
import math

import pytest
from conftest import write_fake_sweep

from bupo_core.errors import InputFormatError
from bupo_core.reporting.sweep_results import SweepResults, fmt_p, fmt_pm, metric_label
from bupo_core.sweep import read_cells


@pytest.fixture()
def sweep(tmp_path):
    return SweepResults.load(write_fake_sweep(tmp_path / "results") / "main")


def test_load_and_check(sweep):
    assert sweep.control == "grpo" and sweep.k == 4 and sweep.arm_names == ["grpo", "bupo_l1"]
    assert sweep.pending_arms == [] and sweep.groups() == {"main": ["grpo", "bupo_l1"]}
    sweep.check()  # the summary is what the rows give


def test_check_catches_an_edited_summary(sweep):
    sweep.summary["arms"]["bupo_l1"]["metrics"]["avg_at_k"]["mean"] = 0.3
    with pytest.raises(
        AssertionError, match=r"bupo_l1/avg_at_k mean: 0\.25.* recomputed from cells.jsonl, 0\.3 in summary.json"
    ):
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
    from bupo_core.reporting.sweep_results import results_dir

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
    assert (
        fmt_pm(0.5, 0.0577) == "0.500 ± 0.058"
        and fmt_pm(-0.1, None, signed=True) == "-0.100"
        and fmt_pm(None, 1) == "n/a"
    )
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


# ----------------------------------------------------------------------------- issue 20: the summary's new fields
from conftest import write_matched_sweep  # noqa: E402


@pytest.fixture()
def matched(tmp_path):
    return SweepResults.load(write_matched_sweep(tmp_path / "results") / "matched")


def test_summary_counts_ipa_updates_and_flags_cells_without_any(matched):
    s = matched.summary
    b = s["arms"]["bupo_l1"]
    assert b["ipa_updates"] == {
        "per_seed": [2, 2, 0, 2],
        "zero_update_seeds": [2],
    }  # 2 internal steps x 1 update; seed 2 none
    assert s["arms"]["bupo_l1_s1"]["ipa_updates"]["per_seed"] == [1, 1]
    assert "ipa_updates" not in s["arms"]["grpo"] and "ipa_updates" not in s["arms"]["grpo_2"]
    assert [f.split(":")[0] for f in s["flags"]] == ["bupo_l1 seed 2"]
    # the comparison without the cell that ran no internal phase: seeds 0, 1, 3
    w = b["vs_control_with_ipa"]["avg_at_k"]
    assert w["n_pairs"] == 3 and w["diff_mean"] == pytest.approx(((0.25 - 0.5) + (0.30 - 0.4) + (0.40 - 0.3)) / 3)
    assert matched.zero_update_seeds("bupo_l1") == [2] and matched.ipa_updates("grpo") is None
    assert s["shared"]["dynamic_sampling"] is False  # the spec does not set it
    # dynamic-sampling counts: per seed, sum over 4 steps of 6 + step drawn and 4 kept
    assert s["arms"]["grpo"]["sampling"] == {"prompts_drawn": [34] * 4, "prompts_kept": [16] * 4}
    assert s["arms"]["grpo_2"]["sampling"]["prompts_drawn"] == [7 + 8] * 4


def test_summary_vs_control_has_unpaired_test_correlation_and_detectable_difference(matched):
    from bupo_core.stats import compare_to_control

    for name in matched.arm_names:
        for metric, v in matched.arm(name)["vs_control"].items():
            for key in ("p_value_unpaired", "correlation", "detectable_diff", "control_mean"):
                assert key in v, (name, metric, key)
    v = matched.arm("bupo_l1_s1")["vs_control"]["avg_at_k"]
    assert v["n_pairs"] == 2 and v["control_mean"] == pytest.approx((0.5 + 0.4) / 2)  # the control over seeds 0-1 only
    ref = compare_to_control({0: 0.25, 1: 0.30, 2: 0.20, 3: 0.40}, {0: 0.50, 1: 0.40, 2: 0.60, 3: 0.30})
    assert matched.arm("bupo_l1")["vs_control"]["avg_at_k"]["p_value_unpaired"] == pytest.approx(
        ref["p_value_unpaired"]
    )
    assert matched.arm("bupo_l1")["vs_control"]["avg_at_k"]["correlation"] == pytest.approx(ref["correlation"])


def test_matched_controls_have_as_many_full_policy_steps(matched):
    a = matched.arm("bupo_l1")
    assert a["matched_control"] == "grpo_2"  # 4 steps - 2 internal = 2 full-policy steps
    v = a["vs_matched"]["avg_at_k"]
    assert v["n_pairs"] == 4 and v["diff_mean"] == pytest.approx(
        (0.25 + 0.30 + 0.20 + 0.40 - 0.45 - 0.30 - 0.50 - 0.35) / 4
    )
    assert "matched_control" not in matched.arm("bupo_l1_s1")  # 3 full-policy steps: no grpo_3 in the sweep
    matched.check()


def test_check_catches_a_wrong_ipa_count(matched):
    matched.summary["arms"]["bupo_l1"]["ipa_updates"]["per_seed"][2] = 1
    with pytest.raises(AssertionError, match="IPA updates"):
        matched.check()


def test_table_shows_the_control_over_each_arms_own_seeds(matched):
    md = matched.markdown_table(arms=["grpo", "bupo_l1", "bupo_l1_s1"])
    # two seed sets among the arms: one control row per set
    assert "| `grpo` (seeds 0-1) | 2 | 0.450 ± 0.050 |" in md
    assert "| `grpo` (seeds 0-3) | 4 | 0.450 ± 0.065 |" in md
    row = next(line for line in md.splitlines() if line.startswith("| `bupo_l1_s1`"))
    # control mean over seeds 0-1; differences -0.40 and +0.50: mean +0.05, SE = 0.636 / sqrt(2) = 0.45
    assert "| 0.450 | +0.050 ± 0.450 |" in row
    assert "| 2, 2, 0!, 2 |" in next(line for line in md.splitlines() if line.startswith("| `bupo_l1` "))
    one = matched.markdown_table(arms=["grpo", "bupo_l1"])  # the arms share all the control's seeds: one plain row
    assert "| `grpo` | 4 |" in one and "(seeds" not in one
    t = {r["arm"]: r for r in matched.table(arms=["grpo", "bupo_l1_s1"])}
    assert t["bupo_l1_s1"]["control_mean"] == pytest.approx(0.45) and t["grpo"]["control_mean"] is None


def test_reward_curves_over_chosen_seeds(matched):
    full = matched.reward_curves(["grpo"])["grpo"]
    two = matched.reward_curves(["grpo"], seeds=[0, 1])["grpo"]
    assert full["n"] == [4] * 4 and two["n"] == [2] * 4
    assert two["mean"][0] == pytest.approx(0.1 + 0.005)  # 0.1 + 0.01 x mean(0, 1)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"control": "grpo", "k": 4, "arms": {', "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got a list"),
        ('{"name": "x"}', "no 'control'"),
    ],
)
def test_load_refuses_a_broken_summary_in_one_line(sweep, content, message):
    (sweep.folder / "summary.json").write_text(content)
    with pytest.raises(InputFormatError, match=message) as exc:
        SweepResults.load(sweep.folder)
    assert "\n" not in str(exc.value) and "--summary-only" in str(exc.value)


def test_load_refuses_non_numeric_metrics(sweep):
    s = json.loads((sweep.folder / "summary.json").read_text())
    s["arms"]["grpo"]["metrics"]["avg_at_k"]["mean"] = "high"
    (sweep.folder / "summary.json").write_text(json.dumps(s))
    with pytest.raises(InputFormatError, match="'high' is not a number"):
        SweepResults.load(sweep.folder)
    rows = (sweep.folder / "cells.jsonl").read_text().splitlines()
    bad = json.loads(rows[0])
    bad["metrics"]["avg_at_k"] = "0.5"
    (sweep.folder / "cells.jsonl").write_text("\n".join([json.dumps(bad)] + rows[1:]) + "\n")
    (sweep.folder / "summary.json").write_text(json.dumps({**s, "arms": json.loads(json.dumps(sweep.summary["arms"]))}))
    with pytest.raises(InputFormatError, match=r"row 1 \(grpo seed 0\): metric 'avg_at_k' is '0.5', not a number"):
        SweepResults.load(sweep.folder)


def test_cell_counts_come_from_the_rows(sweep):
    assert (sweep.finished_cells(), sweep.planned_cells()) == (6, 6)
    sweep.rows = sweep.rows[:2]  # a summary claiming 6 finished cells, with 2 rows
    assert sweep.finished_cells() == 2


def test_per_problem_counts_of_a_cell(matched):
    folder = matched.folder / "cells" / "grpo" / "seed-0" / "eval"
    folder.mkdir(parents=True)
    rows = [{"index": 1, "num_correct": 3, "num_samples": 4}, {"index": 0, "num_correct": 0, "num_samples": 4}]
    (folder / "per_problem.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert matched.per_problem("grpo", 0) == [0, 3]  # problem order
    assert matched.per_problem("grpo", 1) is None


def test_run_cell_writes_a_small_per_problem_file_that_git_keeps():
    """.gitignore keeps each sweep cell's per_problem.jsonl (counts) and drops responses.jsonl (texts)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for name, ignored in (("per_problem.jsonl", False), ("responses.jsonl", True), ("eval.json", False)):
        path = f"results/some_sweep/cells/grpo/seed-0/eval/{name}"
        rc = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=root).returncode
        assert (rc == 0) == ignored, path
