# %% [markdown]
# # 07 · Evaluation: Avg@K and Pass@k for base, GRPO and BuPO models
#
# The paper reports **Avg@K** (mean pass rate over K samples per problem: K = 16 for AMC23 and
# MATH500, 32 for AIME) and **Pass@K** curves with the unbiased estimator of Chen et al. (2021),
# with n = 300 samples and K up to 256. For example, on Qwen3-4B:
#
# | model | GRPO avg | BuPO avg |
# |---|---|---|
# | Qwen3-4B | 55.08 | 58.51 |
# | Qwen3-8B | 64.23 | 66.36 |
# | OctoThinker-8B-Base | 24.11 | 27.79 |
#
# This notebook builds the estimator by hand, shows why the naive one is biased, and then compares
# the base model with short GRPO and BuPO runs on held-out problems, with error bars. Held out by
# construction: training draws from the task's `"train"` split and evaluation from its `"eval"`
# split, a fixed partition of the questions (asserted below).
#
# **Learning objectives.** After this chapter you can (1) compute Avg@K and the unbiased Pass@k
# (Eqs. 7.1-7.2) and show that the plug-in estimate is biased; (2) put a percentile-bootstrap
# interval on a mean over problems (Eq. 7.3) and compare two models with a paired bootstrap;
# (3) say what an evaluation of this size can and cannot distinguish.
#
# **Prerequisites.** Notebooks 04 and 05; sampling without replacement; the idea of a confidence
# interval.
#
# **Time.** ~6 min to run on a 2-core CPU at the committed sizes (331 s recorded)
# (two training runs plus 3 models x 32 problems x 8 samples x 2 seeds): the longest chapter.
# **Working time.** about 30 min for the 2 exercises:
# 7.1 the unbiased Pass@k, 7.2 a bootstrap interval.

# %%
# Config. Online with a GPU, switch MODEL to e.g. "Qwen/Qwen3-0.6B" and scale the sizes up.
MODEL = "smollm2-135m-instruct"
DEVICE = None
PRECISION = "auto"  # compute precision: auto = bf16 on GPUs with compute capability >= 8.0, fp16 + loss scaling on older ones (T4), fp32 on CPU
SEED = 0

from bupo_core.runtime import fast_mode, scaled

QUICK = fast_mode()  # True = the small CI sizes (same code, smaller numbers); BUPO_FAST=1 sets it too

LAYER = 5  # BuPO target layer (paper numbering), see notebook 02
STEPS = scaled(12, 2, QUICK)
INTER_STEPS = scaled(3, 1, QUICK)
PROMPTS_PER_STEP = scaled(4, 2, QUICK)
GROUP_SIZE = scaled(8, 4, QUICK)
MAX_NEW_TOKENS = scaled(16, 8, QUICK)
LR = 2e-5
TRAIN_POOL = 128  # distinct training questions: the easy task's "train" split has only ~154
EVAL_PROBLEMS = scaled(32, 4, QUICK)  # held-out problems, from the "eval" split (~46 distinct questions)
EVAL_K = scaled(8, 4, QUICK)  # samples per problem
EVAL_SEEDS = scaled([0, 1], [0], QUICK)  # independent sampling seeds, for seed-to-seed variation

# %%
from math import comb

import numpy as np
import torch

from bupo_core.teaching.exercises import check_bootstrap_interval, check_pass_at_k, yours_or_library
from bupo_core.tolerances import assert_close  # one tolerance rule for every check (dtype: exact float64 here)

# %% [markdown]
# ## Pass@k by hand
#
# For one problem, draw $n$ responses and count $c$ correct ones. The pass rate averaged over the
# $M$ problems is
#
# $$\mathrm{Avg@}K = \frac{1}{M}\sum_{m=1}^{M} \frac{c_m}{n}\qquad (n = K). \tag{7.1}$$
#
# If we now pick $k$ of the $n$ at random without replacement, the chance that none is correct is
# $\binom{n-c}{k} / \binom{n}{k}$. So
#
# $$\mathrm{pass@}k = 1 - \frac{\binom{n-c}{k}}{\binom{n}{k}}, \tag{7.2}$$
#
# averaged over problems, is an unbiased estimate of the probability that $k$ fresh samples contain
# a correct one (Chen et al., 2021). The tempting plug-in estimate $1 - (1 - c/n)^k$ is biased when
# $n$ is small.
#
# ### Exercise 7.1 · The unbiased Pass@k
#
# Write `pass_at_k_by_hand(n, c, k)`: Eq. 7.2 for one problem (`math.comb` is exact). Mind the case
# $n - c < k$.
#
# **Difficulty** ●○○ · **importance** ●●○ · **about 10 min** · **1 point**
#
# <details><summary>Hint</summary>
#
# `1 - comb(n - c, k) / comb(n, k)`; `math.comb(a, b)` is 0 when `b > a`, which is exactly the case
# $n - c < k$ (every $k$-subset holds a correct sample).
#
# </details>


# %%
def pass_at_k_by_hand(n, c, k):
    """Eq. 7.2 for one problem with n samples of which c are correct."""
    # BEGIN SOLUTION
    return 1.0 - comb(n - c, k) / comb(n, k)  # comb(n - c, k) = 0 when n - c < k
    # END SOLUTION


check_pass_at_k(pass_at_k_by_hand)

# %%
from bupo_core.evaluate import pass_at_k

n, c = 8, 2
pass_at_k_fn = yours_or_library(pass_at_k_by_hand, check_pass_at_k)  # the library's if 7.1 is unfinished
by_hand = {k: pass_at_k_fn(n, c, k) for k in range(1, n + 1)}
for k in (1, 2, 4, 8):
    print(f"pass@{k}: by hand {by_hand[k]:.4f}  bupo_core {pass_at_k(n, c, k):.4f}  plug-in {1 - (1 - c / n) ** k:.4f}")
    assert_close(
        pass_at_k(n, c, k), by_hand[k], dtype=torch.float64, what=f"pass@{k}", atol=1e-12
    )  # exact float64 maths

# %% [markdown]
# A quick simulation makes the bias visible: a problem the model solves 10% of the time, n = 8
# samples, k = 4. The true pass@4 is 1 − 0.9⁴ = 0.344.

# %%
rng = np.random.default_rng(SEED)
p_true, n, k = 0.1, 8, 4
cs = rng.binomial(n, p_true, size=20_000)
unbiased = np.mean([pass_at_k(n, int(c), k) for c in cs])
plug_in = np.mean(1 - (1 - cs / n) ** k)
truth = 1 - (1 - p_true) ** k
print(f"truth {truth:.4f}   unbiased estimator {unbiased:.4f}   plug-in {plug_in:.4f}")
assert abs(unbiased - truth) < 0.01 and plug_in < truth - 0.02

# %% [markdown]
# ## Three models from the same start
#
# We train a GRPO run and a BuPO run (internal phase on layer `LAYER` for `INTER_STEPS` steps, then
# GRPO) from the same weights, seed and prompts: the easy two-term `chain_sum` task. Then all three
# models answer the **same held-out problems** with the same sampling seeds.
#
# *Held out* means held out by construction. `load_task(..., split="train" | "eval")` partitions the
# task's questions by a hash of each question's key (`3 + 4`, `4 + 3`, `4 - 3` and `3 - 4` share one
# key), 20% to `"eval"`, whatever the seed or size (docs/experiments.md). Training uses
# `task_kwargs={..., "split": "train"}` (the same key `bupo train --task-arg split=train` and the sweep
# specs set), evaluation `split="eval"`, so no evaluated question is ever trained on. The easy task has
# only 200 distinct questions, about 154 on the training side and 46 on the evaluation side: enough for
# these short CPU runs. The sweeps use `HELD_OUT_CHAIN_SUM` (2 or 3 single-digit terms, thousands of
# questions; `bupo_core.tasks`).

# %%
import tempfile

from bupo_core import load_model
from bupo_core.tasks import EASY_CHAIN_SUM
from bupo_core.trainer import TrainConfig, Trainer

task_kwargs = dict(EASY_CHAIN_SUM)  # two single-digit terms
base_model, tokenizer = load_model(MODEL, device=DEVICE)
models = {"base": base_model}
train_rows, train_questions = {}, set()
for method in ("grpo", "bupo"):
    m, tok = load_model(MODEL, device=DEVICE)
    cfg = TrainConfig(
        model=MODEL,
        task="chain_sum",
        task_kwargs={**task_kwargs, "split": "train"},
        task_size=TRAIN_POOL,
        method=method,
        layer=LAYER if method == "bupo" else None,
        inter_steps=INTER_STEPS,
        steps=STEPS,
        prompts_per_step=PROMPTS_PER_STEP,
        group_size=GROUP_SIZE,
        max_new_tokens=MAX_NEW_TOKENS,
        lr=LR,
        seed=SEED,
        device=DEVICE,
        precision=PRECISION,
        out_dir=tempfile.mkdtemp(prefix=f"nb07-{method}-"),
    )
    trainer = Trainer(cfg, model=m, tokenizer=tok)
    train_questions |= {e.question for e in trainer.task.examples}  # every question this run can be served
    train_rows[method] = trainer.train(progress=True).metrics
    models[method] = m
for method, rows in train_rows.items():
    print(method, "reward per step:", " ".join(f"{r['reward_mean']:.2f}" for r in rows))

# %% [markdown]
# ## Evaluating
#
# `bupo_core.evaluate.evaluate` samples K answers per problem in batches, grades them with the
# task's verifier (time-limited, never `eval`), and records per problem the number correct, the
# mean response length and how many answers had no parseable number. (`bupo eval` is the same from
# the command line.) We repeat with independent sampling seeds.

# %%
from bupo_core.evaluate import EvalConfig, evaluate
from bupo_core.tasks import load_task, question_split

held_out = load_task("chain_sum", size=EVAL_PROBLEMS, seed=10_000, split="eval", **task_kwargs)
eval_questions = {e.question for e in held_out.examples}
# held out by construction: every evaluation question is on the "eval" side of the partition, and none
# is among the questions either training run could be served
assert all(question_split(e) == "eval" for e in held_out.examples)
assert eval_questions.isdisjoint(train_questions), "an evaluation question occurs in the training pool"
print(
    f"{len(eval_questions)} distinct evaluation questions, {len(train_questions)} distinct training questions, "
    f"{len(eval_questions & train_questions)} in both"
)

results = {name: [] for name in models}
for seed in EVAL_SEEDS:
    for name, m in models.items():
        res = evaluate(
            m,
            tokenizer,
            held_out,
            EvalConfig(num_problems=EVAL_PROBLEMS, k=EVAL_K, max_new_tokens=MAX_NEW_TOKENS, seed=seed),
            model_name=name,
        )
        results[name].append(res)

# %%
# The estimator on the evaluation's own counts, by hand, for one model
res = results["base"][0]
by_hand = np.mean([c / EVAL_K for c in res.correct])
assert_close(res.avg_at_k, by_hand, dtype=torch.float64, what="Avg@K", atol=1e-12)
assert_close(res.pass_at_k[1], res.avg_at_k, dtype=torch.float64, what="pass@1 vs Avg@K", atol=1e-12)

rows = []
for name, runs in results.items():
    avgs = [r.avg_at_k for r in runs]
    js = runs[0].to_json()
    rows.append(
        (
            name,
            np.mean(avgs),
            np.std(avgs),
            js["avg_at_k_ci"],
            js["pass_at_k"][str(EVAL_K)],
            js["no_answer_rate"],
            js["mean_response_length"],
        )
    )
print(
    f"{'model':6s} {'Avg@K (mean over seeds)':>24s} {'95% CI (seed 0)':>18s} {'Pass@K':>7s} {'no answer':>9s} {'length':>6s}"
)
for name, mean, sd, ci, pk, na, ln in rows:
    print(f"{name:6s} {mean:16.3f} ± {sd:.3f} {ci[0]:8.3f}-{ci[1]:.3f} {pk:7.3f} {na:9.2f} {ln:6.1f}")

# %% [markdown]
# ## Pass@k curves
#
# Bands are 95% bootstrap intervals over problems (resampling problems, not samples, because the
# K samples of one problem are correlated): draw $B$ resamples of the $M$ per-problem values with
# replacement, compute each resample's mean $\bar x^{*b}$, and take the quantiles
#
# $$\left[\, q_{(1-\gamma)/2}\big(\bar x^{*1..B}\big),\ q_{(1+\gamma)/2}\big(\bar x^{*1..B}\big) \,\right]\quad\text{for confidence } \gamma. \tag{7.3}$$
#
# ### Exercise 7.2 · A bootstrap interval
#
# Write `bootstrap_by_hand(values, confidence=0.95, resamples=2000, seed=0)`: Eq. 7.3 with
# `np.random.default_rng(seed)`. Your draws differ from the library's, so the checker tests the
# interval's properties (contains the mean, width close to the reference's, narrower with lower
# confidence and with more problems, reproducible for a fixed seed, and really resampling: other
# seeds give slightly different intervals).
#
# **Difficulty** ●●○ · **importance** ●●● · **about 20 min** · **2 points**
#
# <details><summary>Hint 1</summary>
#
# Draw `resamples` samples of `len(values)` indices **with** replacement
# (`rng.integers(0, n, size=(resamples, n))`), average each resample, and take the quantiles
# $(1-	ext{conf})/2$ and $1-(1-	ext{conf})/2$ of those means.
#
# </details>
# <details><summary>Hint 2</summary>
#
# A formula such as mean ± 1.96 standard errors is the normal approximation, not a bootstrap: it is
# symmetric and can leave [0, 1] for a skewed pass rate.
#
# </details>


# %%
def bootstrap_by_hand(values, confidence=0.95, resamples=2000, seed=0):
    """Eq. 7.3: percentile bootstrap interval (low, high) of the mean of values."""
    # BEGIN SOLUTION
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)
    # END SOLUTION


check_bootstrap_interval(bootstrap_by_hand)

# %%
from bupo_core.evaluate import bootstrap_interval

rates = [c / EVAL_K for c in results["base"][0].correct]
bootstrap_fn = yours_or_library(bootstrap_by_hand, check_bootstrap_interval)  # the library's if 7.2 is unfinished
print(
    "base model, Avg@K 95% interval over problems: by hand",
    tuple(round(v, 3) for v in bootstrap_fn(rates)),
    "| bupo_core",
    tuple(round(v, 3) for v in bootstrap_interval(rates)),
)

# %%
from bupo_core.reporting.evaluation_plots import plot_pass_at_k

fig = plot_pass_at_k(
    {name: runs[0].to_json() for name, runs in results.items()},
    title=f"Pass@k on {EVAL_PROBLEMS} held-out chain_sum problems (seed {EVAL_SEEDS[0]})",
)

# %% [markdown]
# ## Is the difference real?
#
# The problems are shared, so the fair comparison is *paired*: per problem, the difference in pass
# rate, bootstrapped over problems. An interval that contains zero means this evaluation cannot
# tell the two models apart.

# %%
from bupo_core.evaluate import compare

paired = compare(
    {name: {"correct": runs[0].correct, "num_samples": EVAL_K} for name, runs in results.items()}, seed=SEED
)
for pair, d in paired.items():
    verdict = "distinguishable" if d["ci95"][0] > 0 or d["ci95"][1] < 0 else "not distinguishable at this size"
    print(f"{pair:12s} {d['mean']:+.3f}  95% CI [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]  -> {verdict}")
assert set(paired) == {"base - grpo", "base - bupo", "grpo - bupo"}

# %% [markdown]
# ## What this shows, and what it does not
#
# The cell below states this run's results from the variables above (nothing is typed in by hand):
# the evaluation table, which paired differences the evaluation resolves, and what happened to the
# training reward during BuPO's internal phase and after its switch to GRPO.

# %%
avg = {name: float(np.mean([r.avg_at_k for r in runs])) for name, runs in results.items()}
pk = {name: runs[0].to_json()["pass_at_k"][str(EVAL_K)] for name, runs in results.items()}
seed_spread = max(float(np.std([r.avg_at_k for r in runs])) for runs in results.values())
print(
    f"Avg@{EVAL_K} (mean over {len(EVAL_SEEDS)} sampling seed(s); largest seed-to-seed SD {seed_spread:.3f}): "
    + ", ".join(f"{name} {avg[name]:.3f}" for name in results)
    + f"; Pass@{EVAL_K} (seed {EVAL_SEEDS[0]}): "
    + ", ".join(f"{name} {pk[name]:.3f}" for name in results)
    + "."
)
for pair, d in paired.items():
    a, b = pair.split(" - ")
    resolved = d["ci95"][0] > 0 or d["ci95"][1] < 0
    ahead = a if d["mean"] > 0 else b
    print(
        f"{pair}: {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] -> "
        + (f"{ahead} ahead, resolved by this evaluation" if resolved else "not resolved by this evaluation")
    )
order = (
    "GRPO ahead of BuPO (the opposite of the paper's ordering)"
    if avg["grpo"] > avg["bupo"]
    else "BuPO ahead of GRPO (the paper's ordering)"
    if avg["bupo"] > avg["grpo"]
    else "GRPO and BuPO level"
)
print(f"Ordering of the trained models' mean Avg@{EVAL_K} here: {order}.")

# training reward: BuPO's internal phase vs GRPO at the same steps, and after the switch
mean_reward = lambda rows: sum(r["reward_mean"] for r in rows) / max(len(rows), 1)  # noqa: E731
g_rows, b_rows = train_rows["grpo"], train_rows["bupo"]
print(
    f"Mean training reward, steps 1..{INTER_STEPS} (BuPO's internal phase): BuPO {mean_reward(b_rows[:INTER_STEPS]):.3f}, "
    f"GRPO {mean_reward(g_rows[:INTER_STEPS]):.3f}; steps {INTER_STEPS + 1}..{STEPS} (both on the full policy): "
    f"BuPO {mean_reward(b_rows[INTER_STEPS:]):.3f}, GRPO {mean_reward(g_rows[INTER_STEPS:]):.3f}."
)
per_step = lambda rows: " ".join(f"{r['reward_mean']:.2f}" for r in rows)  # noqa: E731
print(
    f"BuPO's per-step reward, internal phase: {per_step(b_rows[:INTER_STEPS])} | after the switch: {per_step(b_rows[INTER_STEPS:])}"
)
print(
    f"Budget: BuPO spends {INTER_STEPS} of its {STEPS} steps ({INTER_STEPS / STEPS:.0%}) on layer {LAYER}'s internal policy, "
    f"so its full policy gets {STEPS - INTER_STEPS} GRPO steps to GRPO's {STEPS}; the paper spends 30 of 300 (10%)."
)

# %% [markdown]
# How to read it:
#
# - **One training seed cannot separate the methods.** The intervals above resample *problems* for
#   fixed trained models; they say nothing about how much the trained models themselves would change
#   with another training seed (another order of prompts, other samples), and at this size that
#   variation is large. A resolved GRPO-BuPO difference here is a statement about these two trained
#   models, not about the methods. The multi-seed comparison is `bupo sweep results/specs/main.yaml`
#   (docs/experiments.md: paired differences over training seeds with a sign-flip test); its results
#   are on the results page, `docs/results.md`, generated from the committed sweep by `bupo report`.
# - **The reward during the internal phase.** IPA optimises $\pi^l$, not the sampling policy, so the
#   training reward of those steps is not what it climbs. The printed per-step rewards show whether
#   BuPO's reward fell during the internal phase or only after the switch to GRPO, when the full policy
#   first meets weights that IPA moved; read them rather than assuming either.
# - **Budget.** A short BuPO run compares a handful of GRPO steps after a detour with the full number of
#   GRPO steps (the budget line above). The sweep's `grpo_9` arm (GRPO with only as many steps as BuPO's second
#   phase) is the control that separates "fewer GRPO steps" from "what IPA did".
# - **No boundary layer.** On SmolLM2 no FFN raises the raw internal policy's entropy (notebook 02),
#   so the paper's rule gives no target; layer 5 is a depth-ratio fallback, not a measured boundary,
#   and its raw internal policy is sharply peaked (notebook 05 prints its entropy), so IPA there has a
#   different starting point from the paper's boundary layer. The sweep's arms at other layers test this.
# - **Tied embeddings are not an explanation we can offer.** With tied embeddings IPA also moves the
#   input embedding, which every layer reads; but Qwen3-4B, on which the paper reports BuPO's gain,
#   ties its embeddings too. That tying hurts BuPO on SmolLM2 is an untested hypothesis, and the
#   paper's own tied models argue against it.
#
# The estimator and the error bars are the paper's; the scale is not. `bupo demo` at its defaults
# trains the same trajectory as this notebook (same task, split, pool, seed and settings) and differs
# only in its evaluation draw, so it is not an independent repeat of this comparison.

# %% [markdown]
# ## Across training seeds: the committed sweep
#
# The comparison that can separate the methods trains every arm with several seeds and pairs them
# by seed (notebook 08 builds the paired test by hand and reads every arm). The committed sweep
# `results/main` (`bupo sweep results/specs/main.yaml`) uses the held-out task with thousands of
# questions (`HELD_OUT_CHAIN_SUM`), 12 steps of 4 prompts x 8 samples, and evaluates each trained
# model on 32 held-out problems x 8 samples. Its main comparison, read from the committed files:

# %%
import matplotlib.pyplot as plt

from bupo_core.reporting.sweep_plots import plot_arms, plot_paired_differences
from bupo_core.reporting.sweep_results import SweepResults, results_dir

sweep = SweepResults.load(results_dir() / "main")
sweep.check()  # the summary is what the committed cells.jsonl gives
main_arms = sweep.groups()["main comparison"]
# the fingerprint of the main comparison's arms only; notebook 08 prints the whole sweep's (all arms), a different hash
print(
    f"results/main, main comparison ({', '.join(main_arms)}): fingerprint {sweep.fingerprint(main_arms)} (these arms' rows only)"
)
print(sweep.markdown_table(arms=main_arms))
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
plot_arms(sweep.summary, arms=main_arms, ax=left, title=f"Avg@{sweep.k} across training seeds (grey: each seed)")
plot_paired_differences(sweep.summary, arms=main_arms, ax=right, title=f"paired difference from {sweep.control}")
plt.show()
for a in main_arms:
    if a != sweep.control:
        print("-", sweep.verdict(a))

# %% [markdown]
# ## Summary
#
# * Avg@K (Eq. 7.1) and the unbiased Pass@k (Eq. 7.2) are the paper's metrics; the plug-in Pass@k
#   underestimates (the simulation above).
# * Error bars come from a bootstrap over problems (Eq. 7.3), and model comparisons should be paired
#   over the same problems.
#
# **Open questions.** How many problems and samples would this evaluation need to resolve a
# 3-point difference like the paper's GRPO-BuPO gap (simulate with the observed pass rates)? How
# much do the intervals widen if you bootstrap samples instead of problems, and why is that wrong?
# Does the ranking hold across training seeds on the task with thousands of questions
# (`HELD_OUT_CHAIN_SUM`; the sweep, docs/results.md)?
