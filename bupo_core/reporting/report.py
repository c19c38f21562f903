"""The results page, rebuilt from committed data: ``bupo report results/ --out docs/results.md``.

Inputs (all committed, small JSON):

* ``results/specs/*.yaml``: the sweep specs (arms, seeds, the paper's prediction per arm);
* ``results/<sweep>/summary.json`` and ``cells.jsonl``: what ``bupo sweep`` wrote;
* ``bench/results/*.json``: the benchmarks (including ``task_pass_rate.json``, the held-out task);
* ``notebooks/05_bupo_training.ipynb``: the committed single-seed run's table of training rewards.

Every number on the page is formatted from these files by :func:`build_page`; nothing is typed by
hand. A sweep without results yet is listed with its arms, the paper's prediction and the command
that produces it. ``tests/test_report.py`` regenerates the page in memory and compares it with the
committed ``docs/results.md``, so the page cannot drift from the data.

Figures (mean +- SE across seeds with every seed's point; per-step training reward) are written
to ``docs/figures/`` by :func:`write_page` only; the text does not depend on them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputFormatError
from ..stats import compare_to_control, min_p_value
from ..sweep import _read_spec_file
from ..tasks import EASY_CHAIN_SUM, HELD_OUT_CHAIN_SUM, chain_sum_split_counts
from .sweep_results import ALPHA, SweepResults, fmt_p, fmt_pm, power_lines, power_plan

MAIN_METRICS = ("avg_at_k", "pass_at_k", "no_answer_rate", "accuracy_among_answered")
SWEEP_ORDER = ("main", "long", "gemma")
BENCH_SKIP = {"task_pass_rate.json"}


@dataclass
class Page:
    """The page's markdown and the figures it references (name -> a function that draws it)."""

    markdown: str
    figures: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- formatting
def _f(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _pm(m: float | None, se: float | None, nd: int = 3) -> str:
    return fmt_pm(m, se, nd)


def _signed(m: float | None, se: float | None, nd: int = 3) -> str:
    return fmt_pm(m, se, nd, signed=True)


_p = fmt_p


def _cfg(cfg: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in cfg.items()) or "(shared settings)"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------- inputs
def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _specs(results: Path) -> list[tuple[str, Path, dict]]:
    out = []
    for p in sorted((results / "specs").glob("*.y*ml")) + sorted((results / "specs").glob("*.json")):
        data = _read_spec_file(p)
        out.append((str(data.get("name") or p.stem), p, data))
    order = {n: i for i, n in enumerate(SWEEP_ORDER)}
    return sorted(out, key=lambda t: (order.get(t[0], len(order)), t[0]))


def _committed_sweeps(results: Path) -> list[tuple[str, SweepResults]]:
    """The sweeps with committed results, in page order: ``(name, SweepResults)``."""
    out = []
    for name, _, _ in _specs(results):
        if not (results / name / "summary.json").exists():
            continue
        res = SweepResults.load(results / name)
        try:
            res.check(tol=1e-9)
        except AssertionError as exc:
            raise InputFormatError(
                f"{results / name}: summary.json disagrees with cells.jsonl ({str(exc).splitlines()[0]}); "
                f"rewrite it with `bupo sweep results/specs/{name}.yaml --out {results / name} --summary-only`"
            ) from None
        out.append((name, res))
    return out


def notebook05_rewards(path: Path) -> list[dict] | None:
    """Rows of notebook 05's printed training table (run, reward first 3, reward last 3), if present."""
    for text in _outputs(path):
        lines = text.splitlines()
        if not lines or not lines[0].startswith("run") or "reward, last 3" not in lines[0]:
            continue
        rows = []
        for line in lines[1:]:
            nums: list[float] = []
            for tok in line.split():
                try:
                    nums.append(float(tok))
                except ValueError:
                    if nums:
                        break
            if len(nums) >= 2:
                label = line.split(f"{nums[0]:.3f}")[0].strip()
                rows.append({"run": label, "reward_first3": nums[0], "reward_last3": nums[1]})
        return rows or None
    return None


def _outputs(path: Path):
    if not path.exists():
        return
    for cell in _load_json(path).get("cells", []):
        for out in cell.get("outputs", []):
            yield "".join(out.get("text", "")) if "text" in out else "".join(out.get("data", {}).get("text/plain", ""))


def notebook07_eval(path: Path) -> list[dict] | None:
    """Rows of notebook 07's printed evaluation table (model, Avg@K mean, Pass@K, no-answer share), if present."""
    for text in _outputs(path):
        lines = text.splitlines()
        if not lines or not lines[0].startswith("model") or "Avg@K" not in lines[0]:
            continue
        rows = []
        for line in lines[1:]:
            parts = line.replace("±", " ± ").split()
            try:
                mean = float(parts[1])
                i = parts.index("±") if "±" in parts else 1
                rest = [p for p in parts[i + 2 :] if "-" not in p or p.startswith("-")]
                rows.append(
                    {"model": parts[0], "avg_at_k": mean, "pass_at_k": float(rest[0]), "no_answer_rate": float(rest[1])}
                )
            except (ValueError, IndexError):
                continue
        return rows or None
    return None


# ----------------------------------------------------------------------------- sections
def _header(results: Path, out_rel: str) -> list[str]:
    return [
        "# What our runs show",
        "",
        "<!-- Generated by `bupo report results/ --out docs/results.md` from results/ and bench/results/. "
        "Do not edit by hand: edit bupo_core/reporting/report.py or rerun the sweeps; tests/test_report.py fails when this page "
        "and the data disagree. -->",
        "",
        "The paper's numbers come from Qwen3-4B/8B and OctoThinker-3B/8B trained for 300 steps of 128 prompts x 8 "
        "samples on 8 GPUs. Ours come from the embedded SmolLM2-135M-Instruct (30 layers) and Gemma-3-270M "
        "(18 layers) at sizes a laptop CPU or one GPU can run. Every number on this page is read from the committed "
        "result files named in each section; the paper's numbers are quoted from its tables "
        "(Tan et al., arXiv 2512.19673 v3: Tables 1-3, 5, 10 and 11). "
        "Layer numbers are the paper's: 0 = embedding output, l = output of block l.",
        "",
        "Statistics (`bupo_core/stats.py`): each arm is trained with several seeds; a seed fixes the training prompts, "
        "every sampling draw and the evaluation draw, so an arm and the control at the same seed form a pair. Tables give "
        "the mean ± standard error across seeds; beside each arm, the control's mean over the *same* seeds (the control "
        "gets one row per seed set in the table), the paired difference with the two-sided sign-flip permutation p-value, "
        "the unpaired label-permutation p-value on the same seeds, the arm-control correlation r across seeds, and the "
        "detectable difference: the smallest true difference the paired test resolves at p < 0.05 with 80% power at "
        'these seeds and this variance, so "not resolved" reads as "probably smaller than that". Pairing removes '
        "variance only when r > 0 (Var(arm − control) = Var(arm) + Var(control) − 2 r SD SD); at this scale training "
        "diverges after a few steps and r can be negative, so where r ≤ 0 the unpaired test is the one the data support. "
        "With n pairs the smallest possible sign-flip p-value is 2/2^n "
        f"({_p(min_p_value(3))} for 3 seeds, {_p(min_p_value(5))} for 5), so an arm with 3 seeds can show a "
        "direction and a size but is never resolved at p < 0.05 by this test. BuPO arms list their IPA (internal-phase) "
        "updates per seed; a cell with none (marked 0!) ran no internal phase and is GRPO, not BuPO.",
        "",
    ]


def earlier_design(res: SweepResults) -> bool:
    """A sweep of the earlier design: run without dynamic sampling (issue 20's deciding sweeps use it)."""
    return not bool(
        res.summary.get("shared", {}).get("dynamic_sampling", res.spec.get("shared", {}).get("dynamic_sampling", False))
    )


def _counts(res: SweepResults) -> tuple[int, int]:
    """``(finished, planned)`` cells, counted from ``cells.jsonl`` (not from the summary's own counts)."""
    return res.finished_cells(), res.planned_cells()


def interim_note(done: int, planned: int) -> str:
    """The warning an unfinished sweep's verdicts carry (empty once every planned cell has finished).

    A p-value read before the planned seeds have run is one of several looks: stopping at the first
    look with p < 0.05 makes a false "resolved" more likely than 5%, so such a verdict is provisional.
    """
    if done >= planned:
        return ""
    return (
        f"**Interim: the sweep is still running ({done} of {planned} cells finished); every verdict below is "
        "provisional and the seeds are not yet the number its power plan needs. A p-value read at an interim look "
        "is one of several looks, so a 'resolved' here is more often a false alarm than p < 0.05 suggests; the "
        "verdict that counts is the one at the planned number of seeds.**"
    )


def _headline_section(results: Path) -> list[str]:
    """The answer to the paper's central question, per committed sweep: which arms differ from the control."""
    lines = ["## Headline", ""]
    sweeps = _committed_sweeps(results)
    for name, res in sweeps:
        verdicts: dict[str, list[str]] = {"above": [], "below": [], "open": []}
        for arm in res.arm_names:
            if arm != res.control:
                verdicts[res.resolution(arm) or "open"].append(f"`{arm}`")
        done, planned = _counts(res)
        label = " (earlier design)" if earlier_design(res) else ""
        lines.append(
            f"- Sweep `{name}`{label} ({done} of {planned} cells{', still running: interim' if done < planned else ''}), "
            f"Avg@{res.k} on held-out problems against `{res.control}` "
            f"(sign-flip test over training seeds, p < {ALPHA}): resolved above: {', '.join(verdicts['above']) or 'none'}; "
            f"resolved below: {', '.join(verdicts['below']) or 'none'}; not resolved: {', '.join(verdicts['open']) or 'none'}."
        )
        main = [
            a
            for a in res.groups().get("main comparison", [])
            if a != res.control and res.inter_steps(a) and res.arm(a)["seeds"]
        ]
        for arm in main:
            lines.append(f"  - Main comparison: {res.verdict(arm)}")
    if not sweeps:
        lines.append(
            "No sweep results are committed yet; the sections below list the planned sweeps and their commands."
        )
    else:
        lines += [
            "",
            'The main comparison of each sweep (quoted in the README\'s "Results at a glance"):',
            "",
        ] + glance_lines(results)
    lines += [
        "",
        "The paper reports BuPO above GRPO on all four of its models (Table 1); the sections below give, per arm, "
        "what the paper reports for the same change.",
        "",
    ]
    return lines


def glance_lines(results: str | Path) -> list[str]:
    """One line per committed sweep: its main comparison (mean ± SE; paired difference and p vs the control).

    The README's "Results at a glance" quotes these lines; ``tests/test_report.py`` checks that it
    does, so its numbers cannot drift from ``results/``.
    """
    out = []
    for name, res in _committed_sweeps(Path(results)):
        arms = [a for a in res.groups().get("main comparison", res.arm_names) if res.arm(a)["seeds"]]
        if not any(res.inter_steps(a) for a in arms):  # no BuPO arm in the main group: show every BuPO arm
            arms += [a for a in res.arm_names if a not in arms and res.inter_steps(a) and res.arm(a)["seeds"]]
        parts = []
        for a in arms:
            m = res.arm(a)["metrics"]["avg_at_k"]
            part = f"`{a}` {fmt_pm(m['mean'], m['se'])}"
            if a != res.control:
                v = res.arm(a)["vs_control"]["avg_at_k"]
                if v.get("n_pairs", 0) >= 2:
                    side = res.resolution(a)
                    part += (
                        f" ({fmt_pm(v['diff_mean'], v['se'], signed=True)} vs `{res.control}`, p = {fmt_p(v['p_value'])}, "
                        f"{'resolved ' + side if side else 'not resolved'})"
                    )
            parts.append(part)
        bupo = [a for a in res.arm_names if res.inter_steps(a) and res.arm(a)["seeds"]]
        above = [a for a in bupo if res.resolution(a) == "above"]
        seeds = sorted({len(res.arm(a)["seeds"]) for a in arms})
        done, planned = _counts(res)
        label = " (earlier design)" if earlier_design(res) else ""
        out.append(
            f"- Sweep `{name}`{label} ({done} of {planned} cells{', still running: interim' if done < planned else ''}; "
            f"{'/'.join(map(str, seeds))} seed{'' if seeds == [1] else 's'}): held-out Avg@{res.k}, mean ± SE over seeds: "
            + "; ".join(parts)
            + f". BuPO arms resolved above `{res.control}`: {', '.join(f'`{a}`' for a in above) or 'none'} of {len(bupo)}."
        )
    return out


def _task_section(bench: Path) -> list[str]:
    path = bench / "task_pass_rate.json"
    lines = ["## The held-out task", ""]
    lines += [
        'Evaluation is held out by construction: `load_task(..., split="train" | "eval")` partitions the '
        "*questions* by a hash of each question's key (the sorted tokens of the expression, so `a + b`, `b + a`, "
        "`a - b` and `b - a` always fall on the same side; `bupo_core/tasks.py`). Training uses the train split, "
        "`bupo eval` and `bupo sweep` the eval split; `tests/test_tasks.py` checks that no question is in both.",
        "",
    ] + _pool_lines()
    if not path.exists():
        lines += [
            "The base pass rates of the candidate tasks appear here once `python bench/task_pass_rate.py` has "
            "written `bench/results/task_pass_rate.json`.",
            "",
        ]
        return lines
    data = _load_json(path)
    st = data["settings"]
    lines += [
        f"Candidates, measured on the untrained {data['model']} ({st['prompts']} training-split prompts x "
        f"{st['samples_per_prompt']} samples, temperature {st['temperature']}, {st['max_new_tokens']} new tokens, "
        f'"{st["template"]}" template; `{data["command"]}` -> `bench/results/task_pass_rate.json`'
        + (
            ""
            if st.get("pool") == "uniform"
            else "; measured with the earlier pool rule (the first distinct questions in draw "
            "order), so its prompts over-represent two-term questions: rerun the command to measure the uniform pool"
        )
        + "). GRPO learns only "
        f"from *mixed* groups (some of the {st['samples_per_prompt']} answers right, some wrong).",
        "",
        "| task | distinct questions (train / eval split) | base pass rate | mixed groups | all-wrong groups "
        "| no parseable answer | accuracy among answered |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in data["candidates"].items():
        lines.append(
            f"| {name} | {c['distinct_questions']:,} ({c['train_questions']:,} / {c['eval_questions']:,}) "
            f"| {_f(c['pass_rate'])} | {_f(c['mixed_group_share'], 2)} | "
            f"{_f(c['all_wrong_group_share'], 2)} | {_f(c['no_answer_rate'])} | {_f(c.get('accuracy_among_answered'))} |"
        )
    chosen = data.get("chosen")
    if chosen:
        c = data["candidates"][chosen]
        majority = (
            "a majority"
            if c["mixed_group_share"] > 0.5
            else "fewer than half: no candidate with thousands of questions reaches a majority on this model"
        )
        lines += [
            "",
            f"Chosen ({data.get('rule', '')}): **{chosen}**, `task_kwargs` {json.dumps(c['task_kwargs'])}: "
            f"{c['distinct_questions']:,} distinct questions ({c['eval_questions']:,} in the eval split), "
            f"base pass rate {_f(c['pass_rate'])}, "
            f"{_f(100 * c['mixed_group_share'], 0)}% of groups mixed "
            f"({majority}). "
            "The sweeps train on its train split and evaluate on its eval split.",
        ]
    lines.append("")
    return lines


def _pool_lines() -> list[str]:
    """The question kinds of the held-out task's splits, and how each pool rule samples them."""
    c = chain_sum_split_counts(HELD_OUT_CHAIN_SUM)
    tr, ev = c["train"], c["eval"]
    n_tr, n_ev = sum(tr.values()), sum(ev.values())
    two = "2 terms"
    return [
        f"Question kinds: the train split holds {n_tr:,} distinct questions ({tr.get(two, 0)} with two terms, "
        f"{_f(100 * tr.get(two, 0) / n_tr, 1)}%), the eval split {n_ev:,} ({ev.get(two, 0)} with two terms, "
        f"{_f(100 * ev.get(two, 0) / n_ev, 1)}%). The generator draws two terms half the time, so a pool of the first distinct "
        "questions in draw order (`pool: first`, the earlier sweeps) over-represents the scarce two-term questions, the more "
        "so the smaller the pool: the earlier sweeps' 1000-question training pool, 32-problem evaluation set and the "
        "benchmark below each had a different mix. The deciding sweeps use `pool: uniform` (a seeded uniform sample of the "
        f"split's distinct questions) for the training pool and evaluate on the whole eval split ({n_ev} problems), and the "
        "benchmark draws its prompts the same way, so all three have their split's mix (`tests/test_tasks.py` checks it).",
        "",
    ]


def _arm_paper_table(data: dict) -> list[str]:
    lines = ["| arm | settings (vs shared) | seeds | what the paper reports or predicts |", "|---|---|---|---|"]
    for a in data["arms"]:
        seeds = a.get("seeds", data["seeds"])
        n = seeds if isinstance(seeds, int) else len(seeds)
        lines.append(
            f"| {a['name']} | {_cell(_cfg(a.get('config') or {}))} | {n} | {_cell(a.get('paper') or a.get('note') or '')} |"
        )
    return lines


def _planned_section(name: str, path: Path, data: dict, rel: str) -> list[str]:
    sh = data.get("shared", {})
    lines = [
        f"## Sweep `{name}`: not run yet",
        "",
        _cell(data.get("description", "")),
        "",
        f"Spec: `{rel}`. When its results are committed under `results/{name}/`, this section shows per arm the "
        "mean ± SE across seeds of Avg@K, Pass@K, the share of answers with no parseable number and the accuracy "
        f"among parseable answers, the paired difference from `{data['control']}` with its p-value, a figure with "
        "every seed's point, and the conclusion. Produce them with:",
        "",
        "```",
        f"bupo sweep {rel} --out results/{name}      # resumable; --arm NAME runs one arm",
        "bupo report results/ --out docs/results.md",
        "```",
        "",
        f"Shared settings: {_cell(_cfg(sh))}. Arms:",
        "",
    ]
    return lines + _arm_paper_table(data) + [""] + _decides_lines(data, path.parent.parent)


def _decides_lines(data: dict, results: Path) -> list[str]:
    """What the spec says it can decide (its text ``notes``) and its power, stated before the run."""
    texts = [n for n in data.get("notes") or [] if isinstance(n, str)]
    try:
        plan, missing = power_plan(data, results), ""
    except InputFormatError as exc:  # the pilot sweep is not committed next to the spec
        plan, missing = None, str(exc)
    if not texts and plan is None and not missing:
        return []
    lines = ["**Stated before the run** (the spec's notes):", ""]
    lines += [f"- {_cell(t)}" for t in texts]
    if missing:
        lines.append(f"- Power: not computed here ({_cell(missing)}).")
    if plan is not None:
        k = int((data.get("eval") or {}).get("k", 8))
        pl = power_lines(plan, k)
        lines += [f"- {pl[0]}"] + [f"  - {x.strip()}" for x in pl[1:]]
    return lines + [""]


def _results_section(name: str, spec_rel: str, data: dict, folder: Path, figures: dict) -> list[str]:
    res = SweepResults.load(folder)
    summary = res.summary
    ctl, k = res.control, res.k
    arms = summary["arms"]
    paper = {a["name"]: a.get("paper") or "" for a in data["arms"]}
    ev = summary["eval"]
    done, planned = _counts(res)
    walls = sorted(r["wall_s"]["total"] for r in res.rows)
    median = (
        walls[len(walls) // 2]
        if len(walls) % 2
        else (sum(walls[len(walls) // 2 - 1 : len(walls) // 2 + 1]) / 2 if walls else None)
    )
    earlier = earlier_design(res)
    lines = [
        f"## Sweep `{name}`" + (" (earlier design)" if earlier else ""),
        "",
        _cell(data.get("description", "")),
        "",
    ]
    if earlier:
        lines += [_earlier_design_note(res), ""]
    lines += [
        f"Spec `{spec_rel}`; results `results/{name}/summary.json` and `cells.jsonl` ({done} of {planned} cells finished, "
        "counted from `cells.jsonl`), "
        f"each cell's per-step training statistics in `results/{name}/cells/<arm>/seed-<s>/run/metrics.jsonl`. "
        f"Evaluation: {ev['num_problems']} problems of the {ev['split']} split x {k} samples, {ev['max_new_tokens']} new tokens, "
        f"temperature {ev['temperature']}. Wall time: {_f(sum(walls) / 60, 1)} min for the finished cells"
        + (
            f", {_f(sum(walls) / len(walls) / 60, 1)} min per cell on average (median {_f(median / 60, 1)} min)"
            if walls
            else ""
        )
        + ".",
        "",
    ]
    if done < planned:
        lines += [interim_note(done, planned), ""]
    lines += _decides_lines(data, folder.parent)
    groups = res.groups()
    for group, names in groups.items():
        shown = [n for n in names if arms[n]["seeds"]]
        if len(groups) > 1:
            lines += [f"### {group or 'other arms'}", ""]
        if ctl not in shown and shown:
            shown = [ctl] + shown if arms[ctl]["seeds"] else shown
        if shown:
            lines += [res.markdown_table(arms=shown), ""]
        waiting = [
            f"`{n}` ({len(arms[n]['seeds'])} of {len(arms[n].get('planned_seeds', arms[n]['seeds']))} seeds)"
            for n in names
            if len(arms[n]["seeds"]) < len(arms[n].get("planned_seeds", arms[n]["seeds"]))
        ]
        if waiting:
            lines += ["Still running or not started: " + ", ".join(waiting) + ".", ""]
    if summary.get("unavailable_arms"):
        lines += [
            "Arms not run (they need trainer settings this version lacks): "
            + "; ".join(f"`{n}`" for n in summary["unavailable_arms"])
            + ".",
            "",
        ]
    lines += _ipa_lines(res)
    lines += _matched_lines(res)
    flat = res.zero_advantage_share()
    if flat:
        lines += [
            f"Learning signal: the share of training groups whose {res.spec.get('shared', {}).get('group_size', 'G')} rewards were all "
            "equal (advantage 0 for every response: neither GRPO nor IPA learns from them), mean over steps and seeds: "
            + ", ".join(f"`{n}` {_f(v, 2)}" for n, v in flat.items())
            + ".",
            "",
        ]
    sampling = {n: a["sampling"] for n, a in arms.items() if a.get("sampling")}
    if sampling:
        parts = []
        for n, s in sampling.items():
            drawn = [x for x in s["prompts_drawn"] if x is not None]
            kept = [x for x in s["prompts_kept"] if x is not None]
            if drawn and sum(drawn):
                parts.append(f"`{n}` {sum(kept):,} of {sum(drawn):,} ({_f(sum(kept) / sum(drawn), 2)})")
        if parts:
            lines += [
                "Dynamic sampling: prompts kept (groups with unequal rewards) of prompts drawn, summed over steps and seeds: "
                + ", ".join(parts)
                + ".",
                "",
            ]
    signal_steps = {n: res.internal_signal_steps(n) for n in res.arm_names if res.inter_steps(n)}
    signal_steps = {n: st for n, st in signal_steps.items() if st[1]}
    if signal_steps:
        lines += [
            "Internal-phase steps with a learning signal (at least one group with unequal rewards; a step without one "
            "makes no update), summed over seeds: "
            + ", ".join(f"`{n}` {w} of {t}" for n, (w, t) in signal_steps.items())
            + "."
            + (
                " An arm with none ran no IPA update at all: it sampled what the control sampled at the same seed and "
                "ended in the control's weights."
                if any(w == 0 for w, _ in signal_steps.values())
                else ""
            ),
            "",
        ]
    fig_name = f"{name}_avg_at_k.png"
    figures[fig_name] = ("arms", summary)
    lines += [f"![Avg@{k} per arm, mean ± SE across seeds, every seed's point](figures/{fig_name})", ""]
    if any(arms[n]["vs_control"]["avg_at_k"].get("n_pairs", 0) for n in arms if n != ctl):
        fig_d = f"{name}_paired_avg_at_k.png"
        figures[fig_d] = ("paired", summary)
        lines += [f"![paired differences from {ctl}, per seed and mean ± SE](figures/{fig_d})", ""]
    # training reward per step: what the internal phase does to the sampling policy's reward
    curves = res.reward_curves()
    inter = {n: res.inter_steps(n) for n in curves}
    if any(inter.values()):
        fig2 = f"{name}_reward_per_step.png"
        figures[fig2] = ("curves", {"curves": curves, "inter": inter, "ylabel": "mean training reward"})
        lines += [
            "Training reward per step (mean ± SE over seeds of the sampling policy's reward):",
            "",
            f"![training reward per step](figures/{fig2})",
            "",
        ]
        if ctl in curves:
            for arm_name in [n for n in curves if n != ctl and inter[n]]:
                s = inter[arm_name]
                c = curves[arm_name]["mean"]
                seeds = [x for x in arms[arm_name]["seeds"] if x in arms[ctl]["seeds"]]
                g = (
                    res.reward_curves([ctl], seeds=seeds).get(ctl, {}).get("mean", [])
                )  # the control over the same seeds
                if len(c) <= s or len(g) < len(c):
                    continue
                after = min(len(c), 2 * s) - s
                mi, gi = sum(c[:s]) / s, sum(g[:s]) / s
                ma, ga = sum(c[s : s + after]) / after, sum(g[s : s + after]) / after
                lines.append(
                    f"- `{arm_name}`: mean reward over the internal phase (steps 1-{s}) {_f(mi)} vs `{ctl}` {_f(gi)} at the same steps "
                    f"and seeds; over the {after} steps after the switch {_f(ma)} vs {_f(ga)}."
                )
            lines.append("")
        # is IPA doing what it should? the internal policy's log-prob of the sampled tokens, per step
        phase = {n: c for n, c in res.phase_means("internal_logprob").items() if inter.get(n)}
        if phase:
            fig3 = f"{name}_internal_logprob.png"
            figures[fig3] = (
                "curves",
                {
                    "curves": phase,
                    "inter": {n: inter[n] for n in phase},
                    "ylabel": "internal policy: mean log-prob of sampled tokens",
                },
            )
            lines += [
                "During the internal phase the trainer logs the internal policy's mean log-prob of the tokens it "
                "was trained on (fresh samples each step), from the kept `metrics.jsonl` files:",
                "",
                f"![internal log-prob per step](figures/{fig3})",
                "",
            ]
            for n, c in phase.items():
                s = inter[n]
                vals = [v for v in c["mean"][:s] if not math.isnan(v)]
                if len(vals) >= 2:
                    lines.append(
                        f"- `{n}` ({c['seeds']} seeds): {_f(vals[0])} at step 1, {_f(vals[-1])} at step {s} "
                        f"({'up' if vals[-1] > vals[0] else 'down'} {_f(abs(vals[-1] - vals[0]))} nats)."
                    )
            lines.append("")
    # conclusion
    lines += ["**What the paper predicts and what this sweep resolves:**", ""]
    for arm_name, a in arms.items():
        if arm_name == ctl:
            continue
        verdict = res.verdict(arm_name)
        n = a["vs_control"]["avg_at_k"].get("n_pairs", 0)
        pred = f" Paper: {_cell(paper[arm_name])}." if paper.get(arm_name) else ""
        fmt = a["vs_control"]["no_answer_rate"]
        acc = a["vs_control"]["accuracy_among_answered"]
        extra = ""
        if fmt["diff_mean"] is not None and acc["diff_mean"] is not None and n >= 2:
            extra = (
                f" Format vs arithmetic: no-answer share {_signed(fmt['diff_mean'], fmt['se'])} (p = {_p(fmt['p_value'])}), "
                f"accuracy among answered {_signed(acc['diff_mean'], acc['se'])} (p = {_p(acc['p_value'])})."
            )
        lines.append(f"- {verdict} Settings: {_cell(_cfg(a['config']))}.{extra}{pred}")
    lines.append("")
    return lines


def _earlier_design_note(res: SweepResults) -> str:
    """What makes a sweep of the earlier design weak evidence, in numbers read from it."""
    flat = res.zero_advantage_share()
    bupo = [n for n in res.arm_names if res.ipa_updates(n) is not None]
    ups = [u for n in bupo for u in res.ipa_updates(n) if u is not None]
    zero = [(n, s) for n in bupo for s in res.zero_update_seeds(n)]
    parts = ["Earlier design, kept as run: no dynamic sampling"]
    if flat:
        parts.append(
            f"{_f(sum(flat.values()) / len(flat), 2)} of training groups had all-equal rewards (mean over arms)"
        )
    if ups:
        parts.append(
            f"BuPO cells made {min(ups)}-{max(ups)} IPA updates each" + (f", {len(zero)} made none" if zero else "")
        )
    parts.append(
        f"evaluation on {res.summary['eval']['num_problems']} problems drawn in generator order (not the split's mix of question kinds)"
    )
    return "; ".join(parts) + ". The deciding sweeps are `decide` and `decide_ablations`."


def _ipa_lines(res: SweepResults) -> list[str]:
    """BuPO cells with zero IPA updates, and each such arm's comparison without them."""
    lines = []
    for n in res.arm_names:
        zero = res.zero_update_seeds(n)
        if not zero:
            continue
        a = res.arm(n)
        v = a.get("vs_control_with_ipa", {}).get("avg_at_k")
        text = (
            f"- **`{n}`: {len(zero)} of {len(a['seeds'])} cells made no IPA update** (seed{'s' if len(zero) > 1 else ''} "
            f"{', '.join(map(str, zero))}): those cells are GRPO, not BuPO."
        )
        if v and v["n_pairs"]:
            text += (
                f" Over the {v['n_pairs']} seeds with IPA updates: Avg@{res.k} − `{res.control}` = "
                f"{_signed(v['diff_mean'], v['se'])} (paired p = {_p(v['p_value'])}, unpaired p = {_p(v['p_value_unpaired'])})."
            )
        lines.append(text)
    return (["Cells counted as BuPO must have run the internal phase:", ""] + lines + [""]) if lines else []


def _matched_lines(res: SweepResults) -> list[str]:
    """Each BuPO arm against the GRPO arm with as many full-policy steps (summary ``vs_matched``)."""
    lines = []
    for n in res.arm_names:
        a = res.arm(n)
        if not a.get("matched_control") or "vs_matched" not in a:
            continue
        g = a["matched_control"]
        v = a["vs_matched"]["avg_at_k"]
        if not v["n_pairs"]:
            continue
        r = v.get("correlation")
        dd = v.get("detectable_diff")
        lines.append(
            f"- `{n}` − `{g}` (same number of full-policy steps, {v['n_pairs']} seeds; `{g}` {_f(v['control_mean'])} on them): "
            f"{_signed(v['diff_mean'], v['se'])}, paired p = {_p(v['p_value'])}, unpaired p = {_p(v['p_value_unpaired'])}, "
            f"r = {'n/a' if r is None else f'{r:+.2f}'}, detectable {'±' + _f(dd) if dd is not None else 'none'}."
        )
    if not lines:
        return []
    return (
        [
            f"Matched controls: each BuPO arm against the GRPO arm with as many full-policy steps (Avg@{res.k}), which "
            "separates what the internal phase did from the steps it took away:",
            "",
        ]
        + lines
        + [""]
    )


def _easy_questions(bench: Path) -> int | None:
    path = bench / "task_pass_rate.json"
    if not path.exists():
        return None
    for c in _load_json(path)["candidates"].values():
        if c.get("task_kwargs") == EASY_CHAIN_SUM:
            return int(c["distinct_questions"])
    return None


def _single_seed_section(notebooks: Path, bench: Path) -> list[str]:
    rows = notebook05_rewards(notebooks / "05_bupo_training.ipynb")
    n_easy = _easy_questions(bench)
    pool = f" ({n_easy:,} distinct questions)" if n_easy else ""
    lines = [
        "## Earlier single-seed runs",
        "",
        f"The notebooks' committed runs are single training seeds on the two-term single-digit `chain_sum`{pool}: "
        "they train on its `train` split and evaluate on its `eval` split, so their evaluation questions are held out "
        "by construction, but one training seed cannot separate the methods. `bupo demo` trains the same trajectory "
        "as notebook 07 (same task, split, seed and settings): only its evaluation draw differs, so it is not an "
        "independent repeat.",
        "",
    ]
    ev = {r["model"]: r for r in (notebook07_eval(notebooks / "07_evaluation.ipynb") or [])}
    if "grpo" in ev and "bupo" in ev and rows and len(rows) >= 2:
        g, b = rows[0], rows[1]
        lines += [
            f"Single runs give different pictures. Notebook 07's committed evaluation (`notebooks/07_evaluation.ipynb`) "
            f"gives Avg@K {_f(ev['grpo']['avg_at_k'])} for GRPO and {_f(ev['bupo']['avg_at_k'])} for BuPO (base "
            f"{_f(ev.get('base', {}).get('avg_at_k'))}), with no-answer shares {_f(ev['grpo']['no_answer_rate'], 2)} and "
            f"{_f(ev['bupo']['no_answer_rate'], 2)}; in notebook 05's committed run the mean training reward of the last "
            f"3 steps is {_f(g['reward_last3'])} for {g['run']} and {_f(b['reward_last3'])} for {b['run']}. "
            "That is why the sweeps above train several seeds.",
            "",
        ]
    if rows:
        lines += [
            "Notebook 05's committed run (`notebooks/05_bupo_training.ipynb`, mean training reward of the first and last 3 steps):",
            "",
            "| run | reward, first 3 steps | reward, last 3 steps |",
            "|---|---|---|",
        ]
        lines += [f"| {_cell(r['run'])} | {_f(r['reward_first3'])} | {_f(r['reward_last3'])} |" for r in rows]
        lines.append("")
    return lines


def repeated_cells(results: str | Path) -> list[dict]:
    """Cells that more than one sweep under ``results/`` ran with the same configuration key.

    A cell's key hashes everything that determines its run (model, task, config, seed, evaluation), so two
    sweeps holding the same key ran the same experiment, in different processes and often on different
    days. Returns one dict per shared key: ``key``, ``where`` (a list of ``(sweep, arm, seed)``) and
    ``identical`` (whether the evaluation metrics and the per-step training rewards are equal in every copy).
    """
    copies: dict[str, list[tuple[str, dict]]] = {}
    for name, res in _committed_sweeps(Path(results)):
        for row in res.rows:
            copies.setdefault(row["key"], []).append((name, row))
    out = []
    for key, rows in copies.items():
        sweeps = {name for name, _ in rows}
        if len(sweeps) < 2:
            continue
        first = rows[0][1]
        same = all(
            r["metrics"] == first["metrics"] and r.get("train_rewards") == first.get("train_rewards") for _, r in rows
        )
        out.append({"key": key, "where": [(n, r["arm"], r["seed"]) for n, r in rows], "identical": same})
    return out


PAPER_RELATIVE_EFFECT = 58.51 / 55.08 - 1  # Table 1, Qwen3-4B: BuPO 58.51 vs GRPO 55.08
DECIDING = ("decide", "decide_ablations")


def _closing_section(results: Path) -> list[str]:
    """What this scale decides about BuPO and what it cannot, from the committed data only."""
    sweeps = dict(_committed_sweeps(results))
    lines = ["## What this scale decides", ""]
    earlier = [(n, r) for n, r in sweeps.items() if earlier_design(r)]
    dds = []
    for n, r in earlier:
        main = [
            a
            for a in r.groups().get("main comparison", r.arm_names)
            if r.ipa_updates(a) is not None and r.arm(a)["seeds"]
        ]
        for a in main[:1]:
            v = r.arm(a)["vs_control"]["avg_at_k"]
            g = r.arm(r.control)["metrics"]["avg_at_k"]["mean"]
            if v.get("detectable_diff") is not None and g is not None:
                dds.append(
                    f"`{n}`/`{a}` ±{_f(v['detectable_diff'])} against a paper-sized effect of {_f(PAPER_RELATIVE_EFFECT * g)}"
                )
    if dds:
        lines += [
            "The earlier-design sweeps could detect only differences far larger than the paper's (+6% relative, "
            "Table 1): " + "; ".join(dds) + '. Their "not resolved" verdicts therefore say little about BuPO.',
            "",
        ]
    if "decide" not in sweeps:
        lines += [
            "The deciding sweeps (`decide`, `decide_ablations`) have not run yet: until their results are committed, "
            "this page decides nothing about BuPO at this scale. Their sections above state in advance what each can "
            "decide and the differences it can detect.",
            "",
        ]
        return lines
    d = sweeps["decide"]
    g = d.arm(d.control)["metrics"]["avg_at_k"]["mean"]
    done, planned = _counts(d)
    interim = " " + interim_note(done, planned) if done < planned else ""
    lines.append(
        f"From `decide` ({done} of {planned} cells; `{d.control}` Avg@{d.k} {_f(g)}, so a paper-sized effect is "
        f"{_f(PAPER_RELATIVE_EFFECT * g)}):{interim}"
    )
    lines.append("")
    for a in d.arm_names:
        if a == d.control or d.ipa_updates(a) is None:  # BuPO arms only
            continue
        v = d.arm(a)["vs_control"]["avg_at_k"]
        side = d.resolution(a)
        dd = v.get("detectable_diff")
        zero = d.zero_update_seeds(a)
        text = (
            f"- `{a}` − `{d.control}` = {_signed(v['diff_mean'], v['se'])} over {v['n_pairs']} seeds (paired p = {_p(v['p_value'])}, "
            f"unpaired p = {_p(v.get('p_value_unpaired'))}, r = {_f(v.get('correlation'), 2)}): "
        )
        if side:
            text += f"**resolved {side}** GRPO at p < {ALPHA}."
        elif dd is None:
            text += (
                f"not resolved, and no difference of any size could have been: with {v['n_pairs']} seeds the "
                f"sign-flip test cannot reach p < {ALPHA} (smallest possible p {_p(min_p_value(v['n_pairs']))})."
            )
        else:
            text += (
                f"not resolved: a true difference of ±{_f(dd)} or more would have been resolved with 80% probability, "
                "so BuPO's effect here is probably smaller"
                + (" (a paper-sized effect is below this resolution)." if dd > PAPER_RELATIVE_EFFECT * g else ".")
            )
        if zero:
            text += f" {len(zero)} of its cells made no IPA update (flagged above)."
        lines.append(text)
    lines.append("")
    if "decide_ablations" in sweeps:
        ab = sweeps["decide_ablations"]
        parts = []
        for a in ab.arm_names:
            arm = ab.arm(a)
            if arm.get("matched_control") and "vs_matched" in arm:
                v = arm["vs_matched"]["avg_at_k"]
                if v["n_pairs"]:
                    res_ = (
                        "resolved"
                        if (v["n_pairs"] >= 2 and v["p_value"] is not None and v["p_value"] < ALPHA)
                        else "not resolved"
                    )
                    parts.append(
                        f"`{a}` − `{arm['matched_control']}` {_signed(v['diff_mean'], v['se'])} (p = {_p(v['p_value'])}, {res_})"
                    )
        if parts:
            lines += [
                "From `decide_ablations`, each BuPO arm against GRPO with as many full-policy steps: "
                + "; ".join(parts)
                + ".",
                "",
            ]
    cannot = [
        t
        for name in DECIDING
        if name in sweeps
        for t in (sweeps[name].spec.get("notes") or [])
        if isinstance(t, str) and "Cannot decide" in t
    ]
    if cannot:
        lines += [
            "What it cannot decide (stated before the run): "
            + " ".join(_cell(t[t.index("Cannot decide") :]) for t in cannot),
            "",
        ]
    return lines


def _repeated_section(results: Path) -> list[str]:
    shared = repeated_cells(results)
    if not shared:
        return []
    same = [c for c in shared if c["identical"]]
    lines = [
        "## Repeated cells",
        "",
        f"{len(shared)} cell(s) were run by more than one sweep with the same configuration (same cell key), in "
        f"separate processes; {len(same)} of them reproduced their evaluation metrics and per-step training rewards "
        "exactly:",
        "",
    ]
    for c in shared:
        where = ", ".join(f"`{n}`/`{a}` seed {s}" for n, a, s in c["where"])
        lines.append(f"- {where}: {'identical' if c['identical'] else 'different'}.")
    lines.append("")
    return lines


def norm_pairs(results: str | Path) -> list[dict]:
    """Arms with ``ipa_norm: final`` next to the arm (in any sweep) that differs from them only in the norm.

    The pair tests whether the raw internal policy's scale is what makes an internal phase degenerate:
    for each, the internal phase's mean internal log-prob of the sampled tokens, internal entropy and
    gradient norm before clipping (over steps that made an update), and the paired Avg@K difference
    (final-normed minus raw, same seeds = same prompts and evaluation draw).
    """

    def without_norm(cfg: dict) -> dict:
        return {k: v for k, v in cfg.items() if k != "ipa_norm"}

    arms = []  # (sweep name, results, arm, its full config, the evaluation settings)
    for name, res in _committed_sweeps(Path(results)):
        for arm in res.arm_names:
            arms.append(
                (name, res, arm, {**res.spec.get("shared", {}), **res.arm(arm).get("config", {})}, res.spec.get("eval"))
            )
    raw = [
        (without_norm(cfg), ev, name, res, arm)
        for name, res, arm, cfg, ev in arms
        if cfg.get("ipa_norm", "none") == "none"
    ]
    out = []
    for name, res, arm, cfg, ev in arms:
        if cfg.get("ipa_norm") != "final":
            continue
        match = next(
            ((rname, rres, rarm) for rcfg, rev, rname, rres, rarm in raw if rcfg == without_norm(cfg) and rev == ev),
            None,
        )
        if match is None:
            continue
        rname, rres, rarm = match
        normed_scores, raw_scores = res.per_seed(arm), rres.per_seed(rarm)
        seeds = sorted(set(normed_scores) & set(raw_scores))
        row = {
            "normed": (name, arm),
            "raw": (rname, rarm),
            "layer": cfg.get("layer"),
            "seeds": seeds,
            "vs_raw": compare_to_control(normed_scores, raw_scores),
        }
        for label, r, a, scores in (("normed", res, arm, normed_scores), ("raw", rres, rarm, raw_scores)):
            row[label + "_stats"] = {
                "internal_logprob": r.internal_phase_mean(a, "internal_logprob", seeds),
                "internal_entropy": r.internal_phase_mean(a, "internal_entropy", seeds),
                "grad_norm": r.internal_phase_mean(a, "grad_norm", seeds, skip_zero=True),
                "avg_at_k": sum(scores[s] for s in seeds) / len(seeds) if seeds else None,
            }
        out.append(row)
    return out


def _norm_section(results: Path) -> list[str]:
    pairs = norm_pairs(results)
    if not pairs:
        return []
    lines = [
        "## Raw vs final-normed internal policy",
        "",
        "Each arm with `ipa_norm: final` next to the arm that differs from it only in the norm (possibly in another "
        "sweep), over the seeds both have. Internal-phase means over steps and seeds from the kept `metrics.jsonl` files "
        "(gradient norm before clipping, over the steps that made an update); Avg@K means over the same seeds and "
        "its difference paired by seed (final-normed minus raw).",
        "",
        "| final-normed arm | raw arm | layer | seeds | internal log-prob raw → normed | internal entropy raw → normed "
        "| grad norm raw → normed | Avg@K raw → normed | difference | p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in pairs:
        a, b = r["raw_stats"], r["normed_stats"]
        v = r["vs_raw"]
        lines.append(
            f"| `{r['normed'][0]}`/`{r['normed'][1]}` | `{r['raw'][0]}`/`{r['raw'][1]}` | {r['layer']} | {len(r['seeds'])} "
            f"| {_f(a['internal_logprob'], 1)} → {_f(b['internal_logprob'], 1)} "
            f"| {_f(a['internal_entropy'])} → {_f(b['internal_entropy'])} "
            f"| {_f(a['grad_norm'], 1)} → {_f(b['grad_norm'], 1)} | {_f(a['avg_at_k'])} → {_f(b['avg_at_k'])} "
            f"| {_signed(v['diff_mean'], v['se'])} | {fmt_p(v['p_value'])} |"
        )
    lines.append("")
    return lines


def _bench_section(bench: Path) -> list[str]:
    lines = [
        "## Engineering benchmarks",
        "",
        "From `bench/results/*.json` (each file records its command and machine).",
        "",
        "| benchmark | result | target | met | command |",
        "|---|---|---|---|---|",
    ]
    found = False
    for path in sorted(bench.glob("*.json")):
        if path.name in BENCH_SKIP:
            continue
        d = _load_json(path)
        found = True
        cmd = f"`{d['command']}`" if d.get("command") else ""
        name = path.stem
        if "peak_mem_ratio_reference_over_ours" in d:
            res = (
                f"lens statistics: peak extra memory {_f(d['peak_mem_ratio_reference_over_ours'], 2)}x lower than the authors' approach; "
                f"time ratio reference/ours {_f(d['time_ratio_reference_over_ours'], 3)}"
            )
            tgt, met = (
                "memory >= 3x, time >= 1",
                str(d["peak_mem_ratio_reference_over_ours"] >= 3 and d["time_ratio_reference_over_ours"] >= 1),
            )
        elif "update_time_ratio_ipa_over_full" in d:
            res = f"one IPA update (layer {d.get('layer')}) / one full GRPO update: {_f(d['update_time_ratio_ipa_over_full'], 3)}"
            tgt, met = f"<= {_f(d['target_ratio_max'], 3)}", str(d.get("meets_target"))
        elif "step_time_ratio_ours_over_trl" in d:
            res = f"our GRPO step / TRL GRPOTrainer step: {_f(d['step_time_ratio_ours_over_trl'], 3)}"
            tgt, met = f"<= {_f(d['target_ratio_max'], 1)}", str(d.get("meets_target"))
        elif "estimated_peak_gib" in d:
            kind = "measured" if d.get("measured") else "analytic estimate (no GPU measured)"
            res = f"{d.get('model', '')}: peak {_f(d['estimated_peak_gib'], 2)} GiB, {kind}"
            tgt, met = "fits 24 GiB", str(d.get("fits_24_gib"))
        elif "speedup" in d:
            res = f"training step speedup {_f(d['speedup'], 2)}x"
            tgt, met = ">= 1.5x", str(d["speedup"] >= 1.5)
        else:
            res = _cell(d.get("benchmark", name))
            tgt, met = "", str(d.get("meets_target", ""))
        lines.append(f"| {name} | {_cell(res)} | {tgt} | {met} | {cmd} |")
    if not found:
        lines.append("| (none yet) | | | | |")
    return lines + [""]


# ----------------------------------------------------------------------------- page
def build_page(results: str | Path, *, bench: str | Path | None = None, notebooks: str | Path | None = None) -> Page:
    """Build the results page from the committed data (pure: reads files, writes nothing).

    Args:
        results: the ``results/`` folder (``specs/`` and one folder per sweep).
        bench: the benchmark results folder (default ``<results>/../bench/results``).
        notebooks: the executed notebooks' folder (default ``<results>/../notebooks``).
    """
    results = Path(results)
    root = results.resolve().parent
    bench = Path(bench) if bench is not None else root / "bench" / "results"
    notebooks = Path(notebooks) if notebooks is not None else root / "notebooks"
    figures: dict[str, Any] = {}
    lines = _header(results, "docs/results.md")
    lines += _headline_section(results)
    lines += _task_section(bench)
    for name, path, data in _specs(results):
        rel = f"results/specs/{path.name}"
        folder = results / name
        if (folder / "summary.json").exists():
            lines += _results_section(name, rel, data, folder, figures)
        else:
            lines += _planned_section(name, path, data, rel)
    lines += _norm_section(results)
    lines += _repeated_section(results)
    lines += _closing_section(results)
    lines += _single_seed_section(notebooks, bench)
    lines += [
        "## Entropy flow, boundary layers and feature refinement",
        "",
        "The layer-wise entropy analysis and the boundary rule (notebooks 02 and 03, `bupo entropy`) and the feature-"
        "refinement measures over checkpoints (notebook 06, `bupo refine`) print their numbers from their own outputs "
        "in the executed notebooks; they are not repeated here. The BuPO layers in the sweeps come from them: SmolLM2 has "
        "no layer with a positive raw FFN entropy change (no raw-rule boundary), the logit-lens rule gives layer 2, "
        "and layer 5 is the depth-ratio fallback.",
        "",
    ]
    lines += _bench_section(bench)
    return Page("\n".join(lines).rstrip() + "\n", figures)


def _draw(kind: str, payload: Any, path: Path) -> None:
    import matplotlib  # noqa: PLC0415  (optional: matplotlib is loaded only when drawing, Agg before pyplot)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  (optional: matplotlib.pyplot is loaded only when drawing)

    from .sweep_plots import plot_arms, plot_curves, plot_paired_differences  # noqa: PLC0415  (optional: it imports matplotlib.pyplot)

    if kind == "arms":
        fig = plot_arms(payload)
    elif kind == "paired":
        fig = plot_paired_differences(payload)
    else:
        fig = plot_curves(payload["curves"], payload["inter"], ylabel=payload["ylabel"])
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_page(results: str | Path, out: str | Path, **kwargs: Any) -> Path:
    """Build the page, write it to ``out`` and its figures to ``<out dir>/figures/``."""
    page = build_page(results, **kwargs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page.markdown, encoding="utf-8")
    if page.figures:
        fig_dir = out.parent / "figures"
        fig_dir.mkdir(parents=True, exist_ok=True)
        for name, (kind, payload) in page.figures.items():
            _draw(kind, payload, fig_dir / name)
    return out
