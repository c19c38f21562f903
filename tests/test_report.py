"""The results page is generated from the committed data: regenerating it must give the committed page,
and a sweep's numbers must appear in it as computed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from conftest import write_fake_sweep

from bupo_core.cli import main
from bupo_core.reporting.report import build_page, glance_lines, interim_note, notebook05_rewards
from bupo_core.reporting.sweep_results import SweepResults

ROOT = Path(__file__).resolve().parent.parent


def test_committed_results_page_matches_the_data():
    page = build_page(ROOT / "results", bench=ROOT / "bench" / "results", notebooks=ROOT / "notebooks")
    committed = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert page.markdown == committed, (
        "docs/results.md is out of date: run `bupo report results/ --out docs/results.md`"
    )
    for name in page.figures:
        assert (ROOT / "docs" / "figures" / name).exists(), f"docs/figures/{name} missing: rerun bupo report"


def test_readme_glance_quotes_the_committed_results():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = glance_lines(ROOT / "results")
    assert lines, "no committed sweep"
    for line in lines:
        assert line in readme, (
            f"README.md's 'Results at a glance' is out of date; paste this line from glance_lines:\n{line}"
        )


def test_readme_claims_follow_the_data():
    """The README's prose after the glance lines: no BuPO arm above GRPO; Gemma's GRPO learns mostly the format."""
    from bupo_core.reporting.sweep_results import SweepResults

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    main_res = SweepResults.load(ROOT / "results" / "main")
    if "no BuPO arm is resolved above GRPO" in readme:
        assert not [a for a in main_res.arm_names if main_res.inter_steps(a) and main_res.resolution(a) == "above"]
    if "nor at 50 steps" in readme:
        long_res = SweepResults.load(ROOT / "results" / "long")
        assert not [a for a in long_res.arm_names if long_res.inter_steps(a) and long_res.resolution(a) == "above"]
    m = re.search(r"`(\w+)` is below `grpo` at (\d+) of (\d+) seeds \(not resolved\)", readme)
    if m:
        arm = SweepResults.load(ROOT / "results" / "long").arm(m.group(1))
        diffs = [d for _, d in arm["vs_control"]["avg_at_k"]["per_seed"]]
        assert (sum(d < 0 for d in diffs), len(diffs)) == (int(m.group(2)), int(m.group(3)))
        assert arm["vs_control"]["avg_at_k"]["p_value"] >= 0.05
    if "the final norm makes it a sane one" in readme:
        test_final_norm_makes_gemmas_layer_16_internal_policy_sane()
    if "GRPO mostly learns the answer format" in readme:
        base = SweepResults.load(ROOT / "results" / "gemma").arm("base")["vs_control"]
        # base - grpo: far more unanswered, about the same accuracy among answered
        assert base["no_answer_rate"]["diff_mean"] > 0.2 and abs(base["accuracy_among_answered"]["diff_mean"]) < 0.02


def test_page_avoids_claims_the_outputs_contradict():
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8").lower()
    for phrase in (
        "reward falls during",
        "repeats the comparison",
        "lower layers are nearly uniform",
        "tied embeddings:",
    ):
        assert phrase not in text


def _fake_sweep(tmp_path: Path) -> Path:
    return write_fake_sweep(tmp_path / "results")


def test_page_numbers_come_from_the_summary(tmp_path):
    res = _fake_sweep(tmp_path)
    page = build_page(res, bench=tmp_path / "nobench", notebooks=tmp_path / "nonb")
    md = page.markdown
    # grpo 0.5 +- 0.058; bupo 0.25 +- 0.029; diff -0.25 +- 0.087, p = 0.25 (3 seeds, all one sign)
    assert "| `grpo` | 3 | 0.500 ± 0.058 |" in md
    assert "| `bupo_l1` | 3 | 0.250 ± 0.029 |" in md and "| -0.250 ± 0.087 | 0.25 |" in md
    assert "not resolved at this scale" in md and "Table 1: BuPO beats GRPO" in md
    # the headline names every arm's verdict against the control
    assert "Sweep `main` (earlier design) (6 of 6 cells), Avg@4 on held-out problems against `grpo`" in md
    assert "## Sweep `main` (earlier design)" in md  # no dynamic sampling in its shared settings
    assert "resolved above: none; resolved below: none; not resolved: `bupo_l1`." in md
    # internal phase (steps 1-2): bupo 0.15 vs grpo 0.15; after the switch (3-4): 0.25 vs 0.35
    assert "steps 1-2) 0.150 vs `grpo` 0.150" in md and "0.250 vs 0.350" in md
    assert "6.0 min for the finished cells, 1.0 min per cell on average (median 1.0 min)" in md  # 6 cells x 60 s
    # 3 seeds: p cannot go below 0.25, and the page says so
    assert "3 seeds cannot give p < 0.05 at all (smallest possible p 0.25)" in md
    assert set(page.figures) == {
        "main_avg_at_k.png",
        "main_paired_avg_at_k.png",
        "main_reward_per_step.png",
        "main_internal_logprob.png",
    }
    # internal log-prob, mean over seeds: step 1 -1.0, step 2 0.0
    assert "- `bupo_l1` (3 seeds): -1.000 at step 1, 0.000 at step 2 (up 1.000 nats)." in md
    assert "mean over steps and seeds: `grpo` 0.62, `bupo_l1` 0.50." in md  # learning signal from the metrics files
    assert "summed over seeds: `bupo_l1` 6 of 6." in md


def test_cli_report_writes_page_and_figures(tmp_path, capsys):
    res = _fake_sweep(tmp_path)
    out = tmp_path / "docs" / "results.md"
    assert (
        main(
            [
                "report",
                str(res),
                "--out",
                str(out),
                "--bench",
                str(tmp_path / "nb"),
                "--notebooks",
                str(tmp_path / "nn"),
            ]
        )
        == 0
    )
    assert out.read_text().startswith("# What our runs show")
    assert (out.parent / "figures" / "main_avg_at_k.png").stat().st_size > 1000
    assert main(["report", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_planned_sweeps_say_how_to_produce_them(tmp_path):
    res = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "specs", res / "specs")
    md = build_page(res, bench=tmp_path / "nb", notebooks=tmp_path / "nn").markdown
    assert "## Sweep `main`: not run yet" in md and "bupo sweep results/specs/main.yaml --out results/main" in md


def test_notebook05_table_is_read(tmp_path):
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "outputs": [
                    {
                        "name": "stdout",
                        "output_type": "stream",
                        "text": [
                            "run                                       reward, first 3  reward, last 3    entropy first->last\n",
                            "GRPO                                                0.125           0.250      2.257 -> 0.380\n",
                            "BuPO (layer 5, s_inter=3)                           0.111           0.264      2.483 -> 0.966\n",
                        ],
                    }
                ],
            }
        ]
    }
    p = tmp_path / "05.ipynb"
    p.write_text(json.dumps(nb))
    assert notebook05_rewards(p) == [
        {"run": "GRPO", "reward_first3": 0.125, "reward_last3": 0.25},
        {"run": "BuPO (layer 5, s_inter=3)", "reward_first3": 0.111, "reward_last3": 0.264},
    ]


def test_notebook07_table_is_read(tmp_path):
    text = (
        "model   Avg@K (mean over seeds)    95% CI (seed 0)  Pass@K no answer length\n"
        "base              0.094 ± 0.008    0.059-0.152   0.469      0.29   13.5\n"
        "grpo              0.543 ± 0.004    0.395-0.676   0.750      0.01   10.5\n"
    )
    p = tmp_path / "07.ipynb"
    p.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream", "text": text}]}]}))
    from bupo_core.reporting.report import notebook07_eval

    assert notebook07_eval(p) == [
        {"model": "base", "avg_at_k": 0.094, "pass_at_k": 0.469, "no_answer_rate": 0.29},
        {"model": "grpo", "avg_at_k": 0.543, "pass_at_k": 0.75, "no_answer_rate": 0.01},
    ]


def test_repeated_cells_are_compared_across_sweeps(tmp_path):
    from bupo_core.reporting.report import repeated_cells

    res = _fake_sweep(tmp_path)
    spec = json.loads((res / "specs" / "main.json").read_text())
    (res / "specs" / "again.json").write_text(json.dumps({**spec, "name": "again"}))
    shutil.copytree(res / "main", res / "again")
    rows = [json.loads(line) for line in (res / "again" / "cells.jsonl").read_text().splitlines()]
    rows[4]["metrics"]["avg_at_k"] += 0.01  # bupo_l1 seed 1 came out differently the second time
    (res / "again" / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from bupo_core.sweep import parse_spec, write_summary

    write_summary(
        parse_spec({**spec, "name": "again"}, "again.json"), res / "again"
    )  # the report refuses a stale summary
    shared = repeated_cells(res)
    assert len(shared) == 6
    assert [c["where"] for c in shared if not c["identical"]] == [[("main", "bupo_l1", 1), ("again", "bupo_l1", 1)]]
    md = build_page(res, bench=tmp_path / "nobench", notebooks=tmp_path / "nonb").markdown
    assert "6 cell(s) were run by more than one sweep" in md and "5 of them reproduced" in md
    assert "- `main`/`bupo_l1` seed 1, `again`/`bupo_l1` seed 1: different." in md


def test_committed_repeated_control_cells_reproduce():
    """gemma_norm.yaml repeats gemma.yaml's GRPO cells: on the same machine they must give the same numbers."""
    from bupo_core.reporting.report import repeated_cells

    shared = {tuple(c["where"]): c["identical"] for c in repeated_cells(ROOT / "results")}
    for seed in (0, 1, 2):
        assert shared[(("gemma", "grpo", seed), ("gemma_norm", "grpo", seed))] is True


def test_norm_pairs_match_arms_that_differ_only_in_the_norm(tmp_path):
    from bupo_core.reporting.report import norm_pairs

    res = _fake_sweep(tmp_path)
    spec = json.loads((res / "specs" / "main.json").read_text())
    (res / "specs" / "normed.json").write_text(json.dumps({**spec, "name": "normed"}))
    shutil.copytree(res / "main", res / "normed")
    summary = json.loads((res / "normed" / "summary.json").read_text())
    summary["arms"]["bupo_l1"]["config"]["ipa_norm"] = "final"
    (res / "normed" / "summary.json").write_text(json.dumps(summary))
    pairs = norm_pairs(res)
    assert [(p["normed"], p["raw"]) for p in pairs] == [(("normed", "bupo_l1"), ("main", "bupo_l1"))]
    assert pairs[0]["seeds"] == [0, 1, 2] and pairs[0]["vs_raw"]["diff_mean"] == 0.0  # the same cells
    md = build_page(res, bench=tmp_path / "nobench", notebooks=tmp_path / "nonb").markdown
    assert "## Raw vs final-normed internal policy" in md and "| `normed`/`bupo_l1` | `main`/`bupo_l1` | 1 | 3 |" in md


def test_final_norm_makes_gemmas_layer_16_internal_policy_sane():
    """The committed gemma/gemma_norm pair: raw IPA at Gemma's layer 16 has a one-hot internal policy (log-probs
    of order -1e4), the final-normed one a sane one (a few nats), as docs/results.md and the closing note say."""
    from bupo_core.reporting.report import norm_pairs

    pair = {p["normed"]: p for p in norm_pairs(ROOT / "results")}[("gemma_norm", "bupo_l16_ipa_norm_final")]
    assert pair["raw"] == ("gemma", "bupo_l16")
    assert pair["raw_stats"]["internal_logprob"] < -1000 and pair["raw_stats"]["internal_entropy"] < 0.01
    assert -10 < pair["normed_stats"]["internal_logprob"] < 0 and pair["normed_stats"]["internal_entropy"] > 1
    assert pair["vs_raw"]["p_value"] >= 0.05  # and no resolved difference in Avg@8 at 3 seeds


# ----------------------------------------------------------------------------- issue 20
def _table_rows(md: str):
    """Yield ``(sweep, rows)`` for every results table on a page: rows as lists of cells, header first."""
    sweep, table = None, []
    for line in md.splitlines() + [""]:
        if line.startswith("## Sweep `"):
            sweep = line.split("`")[1]
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if table and sweep and any("same seeds" in c for c in table[0]):
            yield sweep, table
        table = []


def _check_control_means_match_seeds(md: str, results_dir: Path) -> int:
    """Every arm row's control mean is the control over that arm's seeds, and the control row(s) of its table
    cover exactly the arm's seed set. Returns the number of arm rows checked."""
    from bupo_core.reporting.sweep_results import SweepResults

    checked = 0
    for sweep, table in _table_rows(md):
        res = SweepResults.load(results_dir / sweep)
        head = table[0]
        col = next(i for i, c in enumerate(head) if "same seeds" in c)
        ctl_all = res.arm(res.control)["seeds"]
        ctl_sets = []
        for row in table[2:]:
            name = row[0].split("`")[1]
            if name == res.control:
                label = row[0]
                seeds = _expand(label.split("(seeds ")[1].rstrip(")")) if "(seeds" in label else list(ctl_all)
                assert set(seeds) <= set(ctl_all), (sweep, label)
                ctl_sets.append(sorted(seeds))
                mean = sum(res.per_seed(res.control)[s] for s in seeds) / len(seeds)
                assert row[2].startswith(f"{mean:.3f}"), (sweep, row, mean)  # the control row's Avg@K is over its seeds
                continue
            seeds = sorted(set(res.arm(name)["seeds"]) & set(ctl_all))
            mean = sum(res.per_seed(res.control)[s] for s in seeds) / len(seeds)
            assert row[col] == f"{mean:.3f}", (sweep, name, row[col], mean)
            assert seeds in ctl_sets, f"{sweep}/{name}: its seeds {seeds} have no control row ({ctl_sets})"
            checked += 1
    return checked


def _expand(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def test_every_table_shows_the_control_over_the_arms_seeds(tmp_path):
    from conftest import write_matched_sweep

    # the committed page: the 3-seed ablation tables of `main` must show grpo over seeds 0-2, not its 8-seed mean
    committed = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert _check_control_means_match_seeds(committed, ROOT / "results") >= 20
    assert "| `grpo` (seeds 0-2) | 3 | 0.180 ± 0.038 |" in committed
    # a sweep whose arms have two seed sets in one table
    res = write_matched_sweep(tmp_path / "results")
    md = build_page(res, bench=tmp_path / "nb", notebooks=tmp_path / "nn").markdown
    assert _check_control_means_match_seeds(md, res) == 3
    assert "| `grpo` (seeds 0-1) |" in md and "| `grpo` (seeds 0-3) |" in md


def test_page_flags_bupo_cells_without_ipa_updates_and_shows_matched_controls(tmp_path):
    from conftest import write_matched_sweep

    res = write_matched_sweep(tmp_path / "results")
    md = build_page(res, bench=tmp_path / "nb", notebooks=tmp_path / "nn").markdown
    assert "**`bupo_l1`: 1 of 4 cells made no IPA update** (seed 2): those cells are GRPO, not BuPO." in md
    assert "Over the 3 seeds with IPA updates" in md
    assert (
        "- `bupo_l1` − `grpo_2` (same number of full-policy steps, 4 seeds; `grpo_2` 0.400 on them): -0.11" in md
    )  # 0.2875 - 0.4
    assert "Dynamic sampling: prompts kept (groups with unequal rewards) of prompts drawn" in md
    # the verdict names both tests, r and (with 4 pairs) no detectable difference
    line = next(x for x in md.splitlines() if x.startswith("- `bupo_l1`: not resolved"))
    assert "unpaired p = " in line and "correlation across seeds" in line


def test_planned_sweeps_state_what_they_can_decide_and_their_power():
    md = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    for name in ("decide", "decide_ablations"):
        part = md.split(f"## Sweep `{name}`", 1)[1].split("\n## ", 1)[0]
        assert "Can decide:" in part and "Power, stated before the run: pilot `long`" in part, name
    assert "seeds needed for a 0.03 difference: 25" in md.split("## Sweep `decide`", 1)[1]


def test_cli_report_errors_are_one_line(tmp_path, capsys):
    res = _fake_sweep(tmp_path)
    out = tmp_path / "page.md"
    args = ["report", str(res), "--out", str(out), "--bench", str(tmp_path / "nb"), "--notebooks", str(tmp_path / "nn")]
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert main(["report", str(res), "--out", str(folder)]) == 2
    assert "is a folder" in capsys.readouterr().err
    summary = res / "main" / "summary.json"
    good = summary.read_text()
    for content, message in (
        (good[: len(good) // 2], "not valid JSON"),
        ("[]", "must be a JSON object"),
        (good.replace('"mean": 0.5,', '"mean": "0.5",', 1), "is not a number"),
    ):
        summary.write_text(content)
        assert main(args) == 2, content[:40]
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    # counts are recomputed from cells.jsonl: a summary that claims cells cells.jsonl lacks is refused
    summary.write_text(good)
    rows = (res / "main" / "cells.jsonl").read_text().splitlines()
    (res / "main" / "cells.jsonl").write_text("\n".join(rows[:2]) + "\n")
    assert main(args) == 2
    assert "summary.json disagrees with cells.jsonl" in capsys.readouterr().err


def test_closing_section_reads_the_deciding_sweep(tmp_path):
    from conftest import write_matched_sweep

    res = write_matched_sweep(tmp_path / "results", name="decide")
    md = build_page(res, bench=tmp_path / "nb", notebooks=tmp_path / "nn").markdown
    part = md.split("## What this scale decides", 1)[1].split("\n## ", 1)[0]
    # grpo Avg@4 mean over 4 seeds 0.45; bupo_l1 - grpo = (0.25 + 0.30 + 0.20 + 0.40 - 1.8) / 4 = -0.1625
    assert (
        "From `decide` (14 of 14 cells; `grpo` Avg@4 0.450" in part and "`grpo_2` − `grpo`" not in part
    )  # BuPO arms only
    assert "- `bupo_l1` − `grpo` = -0.163 ± " in part or "- `bupo_l1` − `grpo` = -0.162 ± " in part
    # 4 pairs: the sign-flip test cannot reach p < 0.05, so no size of difference is called detectable
    assert "not resolved, and no difference of any size could have been: with 4 seeds" in part
    assert "smallest possible p 0.125" in part and "would have been resolved with 80% probability" not in part
    assert "Interim" not in part  # 14 of 14 cells: the sweep is complete
    assert "1 of its cells made no IPA update" in part
    committed = (ROOT / "docs" / "results.md").read_text(encoding="utf-8").split("## What this scale decides", 1)[1]
    if not (ROOT / "results" / "decide" / "summary.json").exists():
        assert "have not run yet" in committed.split("\n## ", 1)[0]


def test_glance_marks_an_unfinished_sweep_as_interim(tmp_path):
    res = _fake_sweep(tmp_path)
    (line,) = glance_lines(res)
    assert line.startswith("- Sweep `main` (earlier design) (6 of 6 cells; 3 seeds)")
    summary_path = res / "main" / "summary.json"
    summary = json.loads(summary_path.read_text())
    for arm in summary["arms"].values():  # the spec plans a 4th seed no cell has run yet
        arm["planned_seeds"] = [*arm["seeds"], 3]
    summary["cells_planned"] = 8
    summary_path.write_text(json.dumps(summary))
    (line,) = glance_lines(res)
    assert line.startswith("- Sweep `main` (earlier design) (6 of 8 cells, still running: interim; 3 seeds)")
    # the page marks it too: in the headline and above the sweep's own tables, with the multiple-looks warning
    md = build_page(res, bench=tmp_path / "nb", notebooks=tmp_path / "nn").markdown
    headline = md.split("## Headline", 1)[1].split("\n## ", 1)[0]
    assert "- Sweep `main` (earlier design) (6 of 8 cells, still running: interim), Avg@" in headline
    section = md.split("## Sweep `main`", 1)[1].split("\n## ", 1)[0]
    assert interim_note(6, 8) in section and section.index(interim_note(6, 8)) < section.index("| arm |")
    assert "one of several looks" in interim_note(6, 8) and interim_note(8, 8) == ""
    # and the committed ones: a sweep still running says so in the README
    for committed in glance_lines(ROOT / "results"):
        name = committed.split("`")[1]
        r = SweepResults.load(ROOT / "results" / name)
        assert ("still running: interim" in committed) == (r.finished_cells() < r.planned_cells()), committed
