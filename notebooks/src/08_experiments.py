# %% [markdown]
# # 08 · Experiments: GRPO vs BuPO across training seeds, and the paper's ablations
#
# Notebooks 05 and 07 each train **one** GRPO run and **one** BuPO run. Whatever they show, a
# reviewer asks the same question: would another training seed (another order of prompts, other
# samples) give the same ordering? At this scale the answer is often no, so the suite's claims about
# the paper rest on *sweeps*: every arm trained with several seeds, each evaluated on the same
# held-out problems, compared **paired by seed** against a control arm.
#
# The paper's numbers come from 4-8B models trained for 300 steps on 8 GPUs (Tan et al., Tables 1-5
# and 11). Ours come from the embedded SmolLM2-135M trained for 12 steps on a 2-core CPU. Where the
# two disagree, that is a finding about this scale, not a verdict on the paper; where our
# differences are smaller than their error bars, we say so.
#
# This chapter (1) builds the paired comparison and its sign-flip test by hand (Eqs. 8.1-8.3) and
# checks it against `bupo_core.stats` on the committed data; (2) reads the committed sweep,
# `results/main` (`bupo sweep results/specs/main.yaml`), one question at a time: the main
# comparison, the target layer (paper Table 3), the length of the internal phase (Table 2), IPA
# variants (Table 5), and the paper's layer-aware GRPO baselines (Table 11); (3) looks inside the
# internal phase (the internal policy's log-prob, entropy, clip fraction, approx KL and gradient
# norm per step); (4) shows the other committed sweeps (longer runs, the second family) when they
# are there; and (5) reruns a small sweep live.
#
# **Learning objectives.** After this chapter you can (1) explain why a comparison across training
# seeds must be paired, and compute the paired mean difference, its standard error and the
# sign-flip p-value (Eqs. 8.1-8.3); (2) say why 3 seeds can never give p < 0.05 with this test;
# (3) read a sweep's summary and tell a resolved difference from an unresolved one; (4) tell a
# format effect (no parseable answer) from an arithmetic effect (accuracy among answered).
#
# **Prerequisites.** Notebooks 05 (BuPO) and 07 (Avg@K and Pass@k); the idea of a p-value.
#
# **Time.** ~2 min to run on a 2-core CPU at the committed sizes (139 s recorded)
# (reading the committed results takes seconds; most of it is the live rerun at the end, 2 arms x
# 2 seeds of short runs). The committed sweep itself took hours of CPU (its wall time is printed below).
# **Working time.** about 15 min for the exercise:
# 8.1 the sign-flip test.

# %%
# Config. The committed results are read from the repository's results/ folder (found from here;
# on Colab the install cell clones the repository for them). The live rerun uses MODEL.
MODEL = "smollm2-135m-instruct"
DEVICE = None
SWEEP = "main"  # the sweep folder under results/ to read (results/specs/main.yaml)

from bupo_core.reporting.sweep_results import results_dir
from bupo_core.runtime import fast_mode, scaled

QUICK = fast_mode()  # True = the small CI sizes (same code, smaller numbers); BUPO_FAST=1 sets it too

RESULTS = results_dir()
LIVE_SEEDS = scaled([0, 1], [0, 1], QUICK)  # training seeds of the live rerun
LIVE_STEPS = scaled(4, 2, QUICK)
LIVE_INTER_STEPS = 1
LIVE_PROMPTS = scaled(4, 2, QUICK)
LIVE_GROUP = scaled(8, 4, QUICK)
LIVE_TOKENS = scaled(16, 8, QUICK)
LIVE_EVAL_PROBLEMS = scaled(16, 4, QUICK)
LIVE_EVAL_K = scaled(4, 2, QUICK)

# %%
import itertools
import math

import torch

from bupo_core.stats import compare_to_control, min_p_value
from bupo_core.teaching.exercises import check_sign_flip_test, yours_or_library
from bupo_core.tolerances import assert_close  # one tolerance rule for every check (float64 maths here)

# %% [markdown]
# ## Why pair by seed
#
# A *cell* of a sweep is one (arm, seed): train with that seed, then evaluate on the held-out split
# with that seed. The seed fixes which training prompts come in which order, every sampling draw,
# and the evaluation problems and their draws. So arm $A$ and the control $C$ at the same seed $s$
# saw the same prompts and are graded on the same draws: whatever part of the seed-to-seed variation
# the two cells share (an easy or a hard batch of prompts, a lucky evaluation draw) cancels in the
# paired difference
#
# $$d_s = A_s - C_s, \qquad \bar d = \frac{1}{n}\sum_{s=1}^{n} d_s, \qquad \mathrm{SE}(\bar d) = \frac{\mathrm{sd}(d_1, \dots, d_n)}{\sqrt n} \tag{8.1}$$
#
# (sd with $n - 1$ in the denominator). How much is shared is an empirical question:
# $\mathrm{Var}(A - C) = \mathrm{Var}(A) + \mathrm{Var}(C) - 2 r\,\mathrm{SD}(A)\,\mathrm{SD}(C)$, with $r$ the
# correlation of arm and control across seeds. Pairing removes variance only when $r > 0$; when the
# two runs diverge after a few steps, $r$ is near zero or negative and pairing *adds* variance. The
# cells below measure $r$ on the committed data, and `bupo_core.stats.compare_to_control` reports
# the unpaired test beside the paired one for that reason. Is $\bar d$ larger than chance? If
# the arm made no difference, $A_s$ and $C_s$ would be exchangeable, and every $d_s$ would be as
# likely to carry either sign. The **sign-flip test** counts, among all $2^n$ ways to flip the signs,
# the share whose mean is at least as far from zero as the observed one:
#
# $$p = \frac{1}{2^n} \, \#\Big\{ \epsilon \in \{-1, +1\}^n : \Big|\sum_s \epsilon_s d_s\Big| \ge \Big|\sum_s d_s\Big| \Big\}. \tag{8.2}$$
#
# The observed signs and their mirror image always count, so
#
# $$p \ \ge\ \frac{2}{2^n}: \quad 0.25 \text{ for } n = 3, \quad 0.0625 \text{ for } n = 5, \quad 0.0078 \text{ for } n = 8. \tag{8.3}$$
#
# With 3 seeds (the paper's number of runs per ablation, its Table 10) no result can reach p < 0.05
# with this test: 3 seeds show a direction and a size, not significance. Even 5 seeds cannot: a
# difference of the same sign at all five gives p = 0.0625. That is why the sweep's main comparison
# uses 8 seeds, and its ablations 3.
#
# ### Exercise 8.1 · The sign-flip test
#
# Write `sign_flip_by_hand(diffs)`: Eq. 8.2 by enumeration (`itertools.product`). Compare with a
# small tolerance: sums of floats in another order can differ in the last bit.
#
# **Difficulty** ●●○ · **importance** ●●● · **about 15 min** · **2 points**
#
# <details><summary>Hint 1</summary>
#
# `for signs in itertools.product((1, -1), repeat=len(diffs))`: flip, sum, and count the
# assignments with `abs(flipped_sum) >= abs(sum(diffs)) - tol`; divide by `2 ** len(diffs)`.
#
# </details>
# <details><summary>Hint 2</summary>
#
# Two-sided: the absolute value on both sides. Ties count (`>=`), so the observed assignment and its
# mirror image always count; all-zero differences give p = 1.
#
# </details>


# %%
def sign_flip_by_hand(diffs):
    """Eq. 8.2: two-sided p-value of the paired sign-flip test of mean(diffs) = 0."""
    # BEGIN SOLUTION
    if all(d == 0 for d in diffs):
        return 1.0
    observed = abs(sum(diffs))
    tol = 1e-12 * max(1.0, sum(abs(d) for d in diffs))
    hits = sum(
        abs(sum(s * d for s, d in zip(signs, diffs))) >= observed - tol
        for signs in itertools.product((1, -1), repeat=len(diffs))
    )
    return hits / 2 ** len(diffs)
    # END SOLUTION


check_sign_flip_test(sign_flip_by_hand)

# %%
sign_flip_fn = yours_or_library(sign_flip_by_hand, check_sign_flip_test)  # the library's if 8.1 is unfinished
for n in (3, 5, 8):
    assert sign_flip_fn([0.1] * n) == min_p_value(n)  # Eq. 8.3: all one sign is the smallest p
print("smallest p-value with 3 / 5 / 8 seeds:", ", ".join(f"{min_p_value(n):.4f}" for n in (3, 5, 8)))

# %% [markdown]
# ## The committed sweep, by hand first
#
# `SweepResults.load` reads a sweep folder: `spec.json` (the arms and their settings, what the
# paper reports for each), `cells.jsonl` (one row per finished cell: its metrics, per-step training
# rewards, wall time) and `summary.json` (the statistics). `check()` recomputes every mean, SE and
# paired test from the rows and fails if the summary says anything else. The fingerprint is a hash
# of the rows: a test checks that this notebook's outputs were computed from the committed data.
#
# Take the main comparison's numbers from the rows and redo Eq. 8.1-8.2 by hand for BuPO against
# GRPO.

# %%
from bupo_core.reporting.sweep_results import SweepResults

res = SweepResults.load(RESULTS / SWEEP)
res.check()
print(
    f"sweep {res.name!r}: {res.summary['cells_finished']} of {res.summary['cells_planned']} cells finished; "
    f"fingerprint {res.fingerprint()}; control arm {res.control!r}; Avg@{res.k} on "
    f"{res.summary['eval']['num_problems']} held-out problems x {res.k} samples"
)
print(f"wall time of the finished cells: {res.summary['wall_s_total'] / 3600:.1f} h on this suite's 2-core CPU")

MAIN_ARM = "bupo_l5"  # the demo's BuPO arm (layer 5, 3 internal steps of 12)
grpo, bupo = res.per_seed(res.control), res.per_seed(MAIN_ARM)
d = [bupo[s] - grpo[s] for s in sorted(set(grpo) & set(bupo))]
d_mean, d_se = sum(d) / len(d), math.sqrt(sum((x - sum(d) / len(d)) ** 2 for x in d) / (len(d) - 1) / len(d))
p = sign_flip_fn(d)
print(f"{MAIN_ARM} - {res.control}, per seed: " + ", ".join(f"{x:+.3f}" for x in d))
print(f"by hand: mean {d_mean:+.4f}, SE {d_se:.4f}, sign-flip p = {p:.4f} ({len(d)} pairs)")

lib = compare_to_control(bupo, grpo)
summary = res.arm(MAIN_ARM)["vs_control"]["avg_at_k"]
for key, mine in (("diff_mean", d_mean), ("se", d_se), ("p_value", p)):
    assert_close(lib[key], mine, dtype=torch.float64, what=f"compare_to_control {key}", atol=1e-12)
    assert_close(summary[key], mine, dtype=torch.float64, what=f"summary.json {key}", atol=1e-12)
print("bupo_core.stats.compare_to_control and summary.json agree with the hand computation")

# %% [markdown]
# ### Does pairing help here?
#
# The correlation $r$ of BuPO and GRPO across the seeds decides it. Compare the SD of the paired
# differences with $\sqrt{\mathrm{Var}(A) + \mathrm{Var}(C)}$, what the SD of a difference would be
# without the pairing, and the paired sign-flip p-value with the unpaired label-permutation one
# (the arm/control labels of the $2n$ results permuted, pairing ignored).

# %%
from bupo_core.stats import correlation, label_permutation_test

seeds = sorted(set(grpo) & set(bupo))
a_vals, c_vals = [bupo[s] for s in seeds], [grpo[s] for s in seeds]


def sd(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


r = correlation(bupo, grpo)
sd_paired, sd_unpaired = sd(d), math.sqrt(sd(a_vals) ** 2 + sd(c_vals) ** 2)
print(
    f"{MAIN_ARM} vs {res.control} over {len(seeds)} seeds: correlation r = {r:+.2f}; "
    f"SD of paired differences {sd_paired:.4f}, unpaired {sd_unpaired:.4f}"
)
print(
    "pairing " + ("removed" if sd_paired < sd_unpaired else "added") + " variance here; "
    f"paired p = {summary['p_value']:.3g}, unpaired p = {label_permutation_test(a_vals, c_vals):.3g}"
)
assert (r > 0) == (sd_paired < sd_unpaired)  # the identity above: pairing helps exactly when r > 0
assert_close(summary["correlation"], r, dtype=torch.float64, what="summary.json correlation", atol=1e-12)

# %% [markdown]
# ### Power: what these seeds could detect
#
# A test at $p < 0.05$ detects a true difference $\delta$ with 80% probability when
# $\delta \ge (t_{0.975,\,n-1} + t_{0.8,\,n-1})\,\mathrm{SE}$ (paired). `summary.json` stores this
# *detectable difference* for every comparison, so "not resolved" can be read as "probably smaller
# than that", and `bupo_core.stats.seeds_needed` turns a variance into the seeds a target needs.
# The paper's Table 1 effect (58.51 vs 55.08, about +6% relative) is about 0.009 Avg@8 at this
# sweep's GRPO level.

# %%
from bupo_core.stats import detectable_difference, seeds_needed

dd = detectable_difference(sd_paired, len(d))
assert_close(summary["detectable_diff"], dd, dtype=torch.float64, what="summary.json detectable_diff", atol=1e-12)
paper_effect = (58.51 / 55.08 - 1) * res.arm(res.control)["metrics"]["avg_at_k"]["mean"]
print(f"{len(d)} pairs at this SD detect {dd:.3f} Avg@{res.k} (p < 0.05, 80% power)")
print(
    f"the paper's relative effect at this GRPO level: {paper_effect:.4f}; "
    f"seeds needed at this SD: {seeds_needed(sd_paired, paper_effect)}; for 0.03: {seeds_needed(sd_paired, 0.03)}"
)

# %% [markdown]
# ## The main comparison
#
# Four arms, 8 training seeds each: the untrained model (`base`), GRPO at the full budget of 12
# steps (`grpo`, the control), GRPO with only as many full-policy steps as BuPO's second phase
# (`grpo_9`: separates "fewer GRPO steps" from "what the internal phase did"), and BuPO with the
# internal phase on layer 5 for 3 steps (`bupo_l5`, the demo's arm). On the left, each arm's
# mean ± SE across seeds with every seed's value; on the right, the paired differences from GRPO.
# The verdicts below the table are printed from `summary.json`.

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from bupo_core.reporting.sweep_plots import plot_arms, plot_paired_differences


def show_group(results, arms, title):
    """Table, figure (arms | paired differences) and verdicts of one group of arms of a sweep."""
    arms = [a for a in arms if results.arm(a)["seeds"]]
    shown = ([results.control] if results.control not in arms else []) + arms
    display(Markdown(results.markdown_table(arms=shown)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.1, 1]})
    plot_arms(results.summary, arms=shown, ax=left, title=f"{title}: Avg@{results.k}, mean ± SE across seeds")
    plot_paired_differences(results.summary, arms=arms, ax=right, title=f"paired difference from {results.control}")
    plt.show()
    for a in arms:
        if a != results.control:
            paper = results.arm(a).get("paper") or ""
            print("-", results.verdict(a), f"Paper: {paper}." if paper else "")


groups = res.groups()
show_group(res, groups["main comparison"], "main comparison")

# %% [markdown]
# What to read off: whether any GRPO-BuPO difference is larger than its SE *and* has a small
# p-value; where the `grpo_9` control sits (if BuPO lands near `grpo_9`, its deficit is what
# three fewer GRPO steps cost, not something the internal phase did); and how far every trained
# arm is from `base`.

# %% [markdown]
# ## Format or arithmetic?
#
# Much of what 12 steps of RL teach a 135M model on `chain_sum` is to *print a number at all*. The
# evaluation therefore reports the share of responses with no parseable answer separately from the
# accuracy among the responses that have one. An arm that only learned the format lowers the first
# without raising the second.

# %%
main_arms = groups["main comparison"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
plot_arms(
    res.summary,
    metric="no_answer_rate",
    arms=main_arms,
    ax=axes[0],
    title="share of responses with no parseable answer",
)
plot_arms(
    res.summary, metric="accuracy_among_answered", arms=main_arms, ax=axes[1], title="accuracy among answered responses"
)
plt.show()
for a in main_arms:
    if a == res.control:
        continue
    fmt, acc = (res.arm(a)["vs_control"][m] for m in ("no_answer_rate", "accuracy_among_answered"))
    if fmt["diff_mean"] is None:
        continue
    print(
        f"{a:8s} - {res.control}: no-answer share {fmt['diff_mean']:+.3f} ± {fmt['se']:.3f} (p = {fmt['p_value']:.3g}), "
        f"accuracy among answered {acc['diff_mean']:+.3f} ± {acc['se']:.3f} (p = {acc['p_value']:.3g})"
    )

# %% [markdown]
# ## Training curves, and inside the internal phase
#
# The training reward per step is the sampling policy's: during BuPO's internal phase that policy
# is not the one being optimised, so its reward is not what IPA climbs. What IPA *does* climb is the
# internal policy's log-probability of the sampled tokens with positive advantage; the trainer logs,
# for every internal-phase step, the internal policy's mean log-prob of the sampled tokens
# (`internal_logprob`, before the update, on that step's fresh samples) and its entropy
# (`internal_entropy`), the clip fraction, the approximate KL between the old and new policy, and
# the gradient norm before clipping. The sweep keeps each cell's `metrics.jsonl`.

# %%
from bupo_core.reporting.sweep_plots import plot_curves

curves = res.reward_curves(main_arms)
inter = {a: res.inter_steps(a) for a in curves}
fig = plot_curves(
    curves, inter, ylabel="mean training reward", title="training reward per step, mean ± SE across seeds"
)
plt.show()

bupo_arms = [a for a in res.arm_names if res.inter_steps(a)]
FIELDS = {
    "internal_logprob": "internal policy: mean log-prob\nof the sampled tokens (nats)",
    "internal_entropy": "internal policy entropy (nats)",
    "clip_frac": "clip fraction",
    "approx_kl": "approx KL(old || new)",
    "grad_norm": "gradient norm before clipping",
}
focus = [a for a in (MAIN_ARM, "bupo_l26", "bupo_l5_ipa_norm_final", "bupo_l5_s6") if a in bupo_arms]
fig, axes = plt.subplots(1, len(FIELDS), figsize=(4.2 * len(FIELDS), 3.4))
for ax, (field, label) in zip(axes, FIELDS.items()):
    means = res.phase_means(field, focus)
    if means:
        plot_curves(means, {a: res.inter_steps(a) for a in means}, ylabel=label, ax=ax, title=field)
plt.show()

for a in focus:
    s = res.inter_steps(a)
    lp = res.phase_means("internal_logprob", [a]).get(a)
    gn = res.phase_means("grad_norm", [a]).get(a)
    if lp is None:
        continue
    first, last = lp["mean"][0], lp["mean"][s - 1]
    print(
        f"{a}: internal log-prob of the sampled tokens {first:.2f} at step 1 -> {last:.2f} at step {s} "
        f"(mean over {lp['seeds']} seeds); gradient norm {gn['mean'][0]:.1f} at step 1 vs {gn['mean'][s]:.1f} "
        f"at the first full-policy step"
    )

# %% [markdown]
# ## The paper's ablations
#
# Each group below answers one of the paper's questions, with 3 training seeds per arm (the paper's
# own number of runs for its ablations). By Eq. 8.3, 3 seeds cannot give p < 0.05: read these for
# direction and size, next to what the paper reports for the same change (the "Paper:" line of each
# arm, from the spec).
#
# - **Target layer** (Table 3): layer 2 is the logit-lens boundary on SmolLM2 (the raw rule finds
#   no boundary, notebook 02); 26 and 29 are near the top, where the paper finds the boundary of its
#   Llama-based models; 5 is the depth-ratio fallback.
# - **Internal-phase length** $s_{inter}$ (Table 2): 1, 2, 3 and 6 of 12 steps.
# - **IPA variants**: the final-normed internal policy softmax(LN_final(H^l) E_u^T) (Table 5, "with
#   LN"); a smaller and a larger learning rate for the internal phase; a fresh optimizer at the switch.
# - **Layer-aware GRPO baselines** (Table 11): GRPO with the embedding and blocks 1..5 frozen, and
#   GRPO with 0.1x the learning rate above layer 5.

# %%
for group, arms in groups.items():
    if group == "main comparison":
        continue
    display(Markdown(f"### {group}"))
    show_group(res, arms, group)
pending = res.pending_arms
print("arms still waiting for seeds:", ", ".join(pending) if pending else "none; every planned cell is finished")

# %% [markdown]
# ## The other committed sweeps
#
# The same reading for every other sweep folder under `results/`: longer runs (50 steps, GRPO vs
# BuPO) and the second family (Gemma-3-270M). Each is shown with its fingerprint, and with the share
# of groups whose 8 rewards were all equal (GRPO learns nothing from those: if that share is near 1,
# the model cannot learn this task at these sizes, whatever the method). A folder that is not there
# yet is listed with the command that makes it, and with its power stated before the run.
#
# `main`, `long`, `gemma` and `gemma_norm` are the **earlier design**: without dynamic sampling
# most groups were flat, so BuPO cells made a handful of IPA updates (some none: those cells are
# GRPO), the pools over-represented two-term questions, and the s_inter arms had no GRPO arm with
# the same number of full-policy steps. The deciding sweeps `decide` (25 seeds, from the power
# function) and `decide_ablations` (s_inter with matched GRPO controls, target layers) fix all
# three; each spec's notes state what it can decide.

# %%

from bupo_core.reporting.sweep_results import power_lines, power_plan
from bupo_core.sweep import _read_spec_file

others = {}
for spec_path in sorted((RESULTS / "specs").glob("*.yaml")):
    name = spec_path.stem
    if name == SWEEP:
        continue
    if not (RESULTS / name / "summary.json").exists():
        print(f"{name}: not run yet (`bupo sweep results/specs/{spec_path.name} --out results/{name}`)")
        plan = power_plan(_read_spec_file(spec_path), RESULTS)
        for line in power_lines(plan) if plan else []:
            print("  " + line.replace("`", ""))
        continue
    other = SweepResults.load(RESULTS / name)
    other.check()
    others[name] = other
    display(Markdown(f"### `{name}`: {other.spec.get('description', '')}"))
    design = "earlier design" if not other.summary.get("shared", {}).get("dynamic_sampling") else "dynamic sampling"
    print(
        f"{other.finished_cells()} of {other.planned_cells()} cells finished ({design}); fingerprint {other.fingerprint()}"
    )
    for flag in other.summary.get("flags", []):
        print("flagged:", flag)
    for group, arms in other.groups().items():
        show_group(other, arms, f"{name}: {group}")
    # can this model learn here at all? GRPO learns only from groups whose rewards differ
    for a, share in other.zero_advantage_share().items():
        print(
            f"{name}/{a}: {share:.0%} of groups had all-equal rewards (no learning signal), mean over steps and seeds"
        )
    for a in other.arm_names:
        with_signal, total = other.internal_signal_steps(a)
        if total:
            print(
                f"{name}/{a}: {with_signal} of {total} internal-phase steps had a learning signal (summed over seeds)"
            )

# %% [markdown]
# ### Does the final norm fix the internal policy's scale?
#
# On Gemma the raw internal policy at layer 16 is one-hot, so raw IPA there cannot be a sane update.
# `bupo_core.reporting.report.norm_pairs` pairs every `ipa_norm: final` arm with the arm (in any sweep) that
# differs from it only in the norm, and reads the internal-phase diagnostics of both from the kept
# metrics files. The hypothesis predicts a sane internal policy with the norm; whether that also
# changes the held-out score is a separate question, answered by the paired difference.

# %%
from bupo_core.reporting.report import norm_pairs

pairs = norm_pairs(RESULTS)
print(f"{'final-normed arm':44} {'raw arm':22} {'log-prob raw -> normed':>24} {'entropy':>14} {'Avg@K diff':>17}   p")
for p in pairs:
    a, b, v = p["raw_stats"], p["normed_stats"], p["vs_raw"]
    print(
        f"{'/'.join(p['normed']):44} {'/'.join(p['raw']):22} {a['internal_logprob']:>10.1f} -> {b['internal_logprob']:<10.1f}"
        f" {a['internal_entropy']:>5.3f}->{b['internal_entropy']:<6.3f} {v['diff_mean']:+.3f} ± {v['se']:.3f}   {v['p_value']:.2g}"
    )
# each pair compares the same seeds, so the difference is paired
assert all(len(p["seeds"]) == p["vs_raw"]["n_pairs"] for p in pairs)

# %% [markdown]
# ## A small sweep, live
#
# The committed sweep is `bupo sweep results/specs/main.yaml --out results/main`; it resumes where it
# stopped (finished cells are skipped) and writes the summary after every cell. The cell below runs a
# small version in a temporary folder: GRPO against BuPO on layer 5, `LIVE_SEEDS` training seeds,
# short runs. It is the same code path as the committed sweep, only smaller; with two seeds it cannot
# resolve anything (Eq. 8.3 gives p >= 0.5), which is the point of running it: the same code on too
# few seeds shows a direction at best (open question 1 below asks how many seeds it would need).

# %%
import tempfile
from pathlib import Path

from bupo_core.sweep import parse_spec, run_sweep

live_spec = parse_spec(
    {
        "name": "live",
        "description": "a small live sweep (notebook 08)",
        "shared": {
            "model": MODEL,
            "task": "chain_sum",
            "task_size": 200,
            "steps": LIVE_STEPS,
            "inter_steps": LIVE_INTER_STEPS,
            "task_kwargs": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1, "split": "train"},
            "prompts_per_step": LIVE_PROMPTS,
            "group_size": LIVE_GROUP,
            "max_new_tokens": LIVE_TOKENS,
            "lr": 2e-5,
        },
        "seeds": LIVE_SEEDS,
        "control": "grpo",
        "eval": {
            "split": "eval",
            "task_seed": 10_000,
            "num_problems": LIVE_EVAL_PROBLEMS,
            "k": LIVE_EVAL_K,
            "max_new_tokens": LIVE_TOKENS,
        },
        "arms": [
            {"name": "grpo", "config": {"method": "grpo"}},
            {"name": "bupo_l5", "config": {"method": "bupo", "layer": 5}},
        ],
    },
    "live spec",
)
live_dir = Path(tempfile.mkdtemp(prefix="nb08-live-"))
report = run_sweep(live_spec, live_dir, device=DEVICE, progress=True, log=lambda s: None)
live = SweepResults.load(live_dir)
live.check()
print(f"ran {len(report.ran)} cells in {report.wall_s / 60:.1f} min")
show_group(live, ["grpo", "bupo_l5"], "live sweep")
assert len(live.rows) == len(LIVE_SEEDS) * 2
# resuming a finished sweep runs nothing
again = run_sweep(live_spec, live_dir, device=DEVICE, progress=False, log=lambda s: None)
assert again.ran == [] and len(again.skipped) == len(live.rows)

# %% [markdown]
# ## What the sweep resolves
#
# The cell below prints, from `summary.json`, every arm's verdict against the control: **resolved**
# when the sign-flip p-value is below 0.05, otherwise "not resolved at this scale" with the paired
# difference and its SE. It then counts them, so that any sentence about "BuPO vs GRPO on SmolLM2"
# can be checked against it.

# %%
resolved = {"above": [], "below": []}
unresolved = []
for a in res.arm_names:
    if a != res.control:
        side = res.resolution(a)  # "above" / "below" the control at p < 0.05, or None
        (resolved[side] if side else unresolved).append(a)
print(f"Avg@{res.k} vs {res.control} ({res.name} sweep):")
print("  resolved above the control:", ", ".join(resolved["above"]) or "none")
print("  resolved below the control:", ", ".join(resolved["below"]) or "none")
print("  not resolved at this scale:", ", ".join(unresolved) or "none")
bupo_resolved_above = [a for a in resolved["above"] if res.inter_steps(a)]
print(
    "BuPO arms resolved above GRPO:",
    ", ".join(bupo_resolved_above) or "none",
    "| the paper's Table 1 has BuPO above GRPO on all four of its models",
)

# %% [markdown]
# ## Summary
#
# * A comparison across training seeds is paired by seed (Eq. 8.1) and tested with the sign-flip
#   test (Eq. 8.2), whose smallest p-value is $2/2^n$ (Eq. 8.3): 3 seeds show direction and size,
#   not significance. Pairing helps only when arm and control are positively correlated across
#   seeds; here they are not always, so the unpaired test and $r$ are reported beside it.
# * Every comparison states its detectable difference: a sweep that cannot detect the paper's
#   effect says nothing about it, and `results/specs/decide.yaml` takes its seeds from the power
#   function (`bupo sweep SPEC --out DIR --dry-run` prints it).
# * The sweep separates format from arithmetic (no-answer share vs accuracy among answered) and
#   BuPO's internal phase from its shorter GRPO phase (the `grpo_9` control).
# * The internal-phase diagnostics show what IPA does to the internal policy it optimises, which
#   the sampling policy's reward cannot show.
# * Every number above is printed from the committed `results/`; `docs/results.md` is generated
#   from the same files by `bupo report results/ --out docs/results.md`, and CI checks both.
#
# **Open questions.** The power function assumes roughly normal per-seed differences: simulate
# the sign-flip test's power by resampling the per-seed differences and compare. Does the ordering of target
# layers change with a longer run, or with the final-normed internal policy? Which arm would you add
# to test an explanation of the main result, rather than offer it as one?
