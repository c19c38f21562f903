# %% [markdown]
# # 06 · Feature refinement: what the internal phase does to the layers above
#
# BuPO first optimises the internal policy of a lower layer *l* (internal policy alignment, IPA),
# then switches to ordinary GRPO. Why should a few steps on a lower layer help? The paper (section 4)
# looks inside the model while IPA runs on layer 6 of Qwen3-4B and reports that:
#
# 1. the cosine similarity between $H^6$ and every higher hidden state $H^j$ **rises**: the lower layer
#    learns features the upper layers would otherwise have added;
# 2. the layer entropy change $\Delta\mathcal{H}^6$ turns **negative**: layer 6 starts to converge on its own;
# 3. the full policy's perplexity **rises** (about 1.20 → 1.28 over 300 steps);
# 4. the KL divergence between $\pi^6$ and the higher layers' policies **grows**.
#
# And the ablation on the internal phase's length: $s_{inter}$ = 30 / 50 / 70 steps of 300 gives
# 58.51 / 42.11 / 9.89 average accuracy on Qwen3-4B. Too long a bottom-up phase collapses the model.
#
# In this notebook we define these four measures precisely, build each by hand once, check the
# `bupo_core.refinement` implementation against the hand-built version, and then follow them through
# two BuPO runs on the embedded model: one with a **short** internal phase and one that stays in
# the internal phase for the **whole** run. The four measures, on the response positions of a fixed
# reference set (averaged over its tokens), for the target layer $l$ and every higher layer $j > l$:
#
# $$\cos(H^l, H^j) = \frac{H^l \cdot H^j}{\|H^l\|\,\|H^j\|}, \tag{6.1}$$
# $$\Delta\mathcal{H}^l = \mathcal{H}(H^l) - \mathcal{H}(H^{l-1})\quad\text{(Eq. 2.2, raw projections)}, \tag{6.2; paper Eq. 9}$$
# $$\mathrm{PPL} = \exp\Big(-\frac{1}{T}\sum_t \log\pi_\theta(o_t)\Big), \tag{6.3}$$
# $$\mathrm{KL}(\pi^l \,\|\, \pi^j) = \sum_{v} \pi^l(v)\left(\log\pi^l(v) - \log\pi^j(v)\right). \tag{6.4}$$
#
# **Learning objectives.** After this chapter you can (1) define the four feature-refinement
# measures precisely (Eqs. 6.1-6.4: which tokens, which KL direction) and compute them by hand;
# (2) measure them on a fixed reference set across checkpoints; (3) compare a short and an
# internal-only BuPO run and say what a small run can show.
#
# **Prerequisites.** Notebooks 01, 02 and 05.
#
# **Time.** ~3 min to run on a 2-core CPU at the committed sizes (189 s recorded)
# (two short training runs plus the measurements).
# **Working time.** about 15 min for the 2 exercises:
# 6.1 the KL between two layers' policies, 6.2 the cosine of hidden states.

# %%
# Config. Switch MODEL to e.g. "Qwen/Qwen3-0.6B" on a GPU machine that reaches the hub.
MODEL = "smollm2-135m-instruct"
DEVICE = None
SEED = 0
PRECISION = "auto"  # compute precision: auto = bf16 on GPUs with compute capability >= 8.0, fp16 + loss scaling on older ones (T4), fp32 on CPU

from bupo_core.runtime import fast_mode, scaled

QUICK = fast_mode()  # True = the small CI sizes (same code, smaller numbers); BUPO_FAST=1 sets it too

LAYER = 5  # BuPO target layer (paper numbering); notebook 02 explains the choice for SmolLM2
STEPS = scaled(8, 3, QUICK)  # training steps of each run
SHORT_INTER = scaled(2, 1, QUICK)  # short internal phase
LONG_INTER = STEPS  # the long run never leaves the internal phase
PROMPTS_PER_STEP = scaled(4, 2, QUICK)
GROUP_SIZE = scaled(8, 4, QUICK)
MAX_NEW_TOKENS = scaled(16, 8, QUICK)
LR = 2e-5
TRAIN_POOL = 128  # distinct training questions, from the easy task's "train" split (~154 questions)
REFERENCE_PROMPTS = scaled(8, 3, QUICK)  # fixed reference set on which every step is measured
REFERENCE_TOKENS = scaled(24, 12, QUICK)
MEASURE_EVERY = scaled(2, 1, QUICK)

# %% [markdown]
# ## The reference set
#
# Every measurement must see the same tokens, or the curves would mix the effect of training with
# the effect of different text. So we sample one answer per prompt from the **base** model once,
# keep the token ids, and measure every later model on exactly these (prompt, response) pairs.
# The prompts come from the task's `"eval"` split, and training from its `"train"` split
# (`load_task(..., split=...)`, a fixed partition of the questions, docs/experiments.md), so the
# runs never train on a reference question.
# Positions are the response positions (those whose next-token prediction is a response token)
# and every mean is token-weighted.

# %%
import math

import torch

from bupo_core import ArchitectureAdapter, capture_residuals, load_model
from bupo_core.refinement import ReferenceSet, build_reference_set, feature_refinement
from bupo_core.tasks import load_task
from bupo_core.teaching.exercises import check_hidden_cosine, check_layer_kl, yours_or_library
from bupo_core.tolerances import assert_close  # tolerance from the dtype: float32 on CPU, bf16 on GPU

model, tokenizer = load_model(MODEL, device=DEVICE)
from bupo_core.tasks import EASY_CHAIN_SUM

task_kwargs = dict(EASY_CHAIN_SUM)  # two single-digit terms
ref_task = load_task("chain_sum", size=REFERENCE_PROMPTS, seed=20_000, split="eval", **task_kwargs)
reference = build_reference_set(
    model, tokenizer, ref_task, num_prompts=REFERENCE_PROMPTS, max_new_tokens=REFERENCE_TOKENS
)
print(len(reference), "pairs,", reference.num_tokens, "response tokens")
print(repr(tokenizer.decode(reference.response_ids[0])))

# %% [markdown]
# ## The four measures, by hand
#
# Take one reference pair and capture the residual stream (notebook 01). With P prompt tokens and
# R response tokens, the response positions are P-1 .. P+R-2.

# ### Exercise 6.1 · KL between two layers' policies
#
# Write `layer_kl_by_hand(logits_l, logits_j)`: Eq. 6.4 per token for [P, N] logits of the two
# layers, in nats, from log-softmaxes (peaked policies underflow). Mind the direction.
#
# **Difficulty** ●○○ · **importance** ●●○ · **about 10 min** · **1 point**
#
# <details><summary>Hint</summary>
#
# With `logp_l, logp_j` the log-softmaxes over the last dimension, the KL is
# `(logp_l.exp() * (logp_l - logp_j)).sum(-1)`: weighted by the LOWER layer's policy.
#
# </details>


# %%
def layer_kl_by_hand(logits_l, logits_j):
    """Eq. 6.4: KL(pi^l || pi^j) per token, [P, N] x [P, N] -> [P]."""
    # BEGIN SOLUTION
    logp_l = torch.log_softmax(logits_l.float(), dim=-1)
    logp_j = torch.log_softmax(logits_j.float(), dim=-1)
    return (logp_l.exp() * (logp_l - logp_j)).sum(-1)
    # END SOLUTION


check_layer_kl(layer_kl_by_hand)

# %% [markdown]
# ### Exercise 6.2 · Cosine similarity of hidden states
#
# Write `hidden_cosine_by_hand(h_l, h_j)`: Eq. 6.1 per token for [P, d] hidden states.
#
# **Difficulty** ●○○ · **importance** ●○○ · **about 5 min** · **1 point**
#
# <details><summary>Hint</summary>
#
# The dot product over the hidden dimension, `(h_l * h_j).sum(-1)`, divided by both norms
# `h_l.norm(dim=-1) * h_j.norm(dim=-1)`.
#
# </details>


# %%
def hidden_cosine_by_hand(h_l, h_j):
    """Eq. 6.1 per token: [P, d] x [P, d] -> [P]."""
    # BEGIN SOLUTION
    return (h_l * h_j).sum(-1) / (h_l.norm(dim=-1) * h_j.norm(dim=-1))
    # END SOLUTION


check_hidden_cosine(hidden_cosine_by_hand)

# %%
cosine_fn = yours_or_library(hidden_cosine_by_hand, check_hidden_cosine)  # the library's if 6.2 is unfinished
kl_fn = yours_or_library(layer_kl_by_hand, check_layer_kl)  # ... and if 6.1 is
adapter = ArchitectureAdapter(model)
L = adapter.num_layers
p_ids, r_ids = reference.prompt_ids[0], reference.response_ids[0]
ids = torch.tensor([p_ids + r_ids], device=model.device)
cap = capture_residuals(model, ids, with_logits=True)
pos = slice(len(p_ids) - 1, len(p_ids) + len(r_ids) - 1)
H = {j: cap.resid(j)[0, pos].float() for j in range(L + 1)}

# 1. cosine similarity between H^l and a higher H^j, averaged over tokens
j = LAYER + 1
cos_by_hand = cosine_fn(H[LAYER], H[j]).mean().item()  # Eq. 6.1

# 2. layer entropy change: entropy of softmax(H^l E_u^T) minus that of H^{l-1} (no norm: the paper's)
E_u = adapter.unembed_weight.float()


def entropy(h):
    logp = torch.log_softmax(h @ E_u.T, dim=-1)
    return -(logp.exp() * logp).sum(-1)


dH_by_hand = (entropy(H[LAYER]) - entropy(H[LAYER - 1])).mean().item()

# 3. perplexity of the response tokens under the full policy
logp_full = torch.log_softmax(cap.logits[0, pos].float(), dim=-1)
ppl_by_hand = math.exp(-logp_full.gather(-1, torch.tensor(r_ids, device=model.device)[:, None]).mean().item())

# 4. KL(pi^l || pi^j) = sum_v pi^l(v) (log pi^l(v) - log pi^j(v)), averaged over tokens
kl_by_hand = kl_fn(H[LAYER] @ E_u.T, H[j] @ E_u.T).mean().item()  # Eq. 6.4
print(
    f"cos(H^{LAYER}, H^{j}) = {cos_by_hand:.4f}   dH^{LAYER} = {dH_by_hand:+.3f} nats   "
    f"PPL = {ppl_by_hand:.3f}   KL(pi^{LAYER} || pi^{j}) = {kl_by_hand:.3f} nats"
)

# %% [markdown]
# The direction of the KL matters and the paper does not state it; we use **$\mathrm{KL}(\pi^l \,\|\, \pi^j)$**, the
# expected log-ratio under the lower layer's policy: how surprised the higher layer's policy would
# be by tokens drawn from layer l's. `feature_refinement` computes all four, for every higher layer
# j, in chunks of tokens so that at most two [chunk × vocabulary] tensors exist at once.

# %%
one = ReferenceSet(prompt_ids=[p_ids], response_ids=[r_ids])
pt = feature_refinement(model, one, LAYER)
assert_close(pt.cosine_to_higher[str(j)], cos_by_hand, dtype=model.dtype, what="cosine to the higher layer", atol=1e-4)
assert_close(pt.layer_entropy_change, dH_by_hand, dtype=model.dtype, what="layer entropy change", atol=1e-3)
assert_close(pt.perplexity, ppl_by_hand, dtype=model.dtype, what="perplexity", atol=0.0, rtol=1e-4)
assert_close(pt.kl_to_higher[str(j)], kl_by_hand, dtype=model.dtype, what="KL to the higher layer", atol=1e-3)
base_point = feature_refinement(model, reference, LAYER)
print(
    {
        k: (round(v, 3) if isinstance(v, float) else v)
        for k, v in base_point.to_json().items()
        if not isinstance(v, dict)
    }
)

# %% [markdown]
# ## Two BuPO runs from the same start
#
# Both runs use the same task (two single-digit terms of `chain_sum`, the easiest setting on which
# the 135M model earns reward; its training split), the same seed and the same prompts. The **short** run spends
# `SHORT_INTER` steps in the internal phase and then switches to GRPO; the **long** run never
# leaves it. After every `MEASURE_EVERY` steps a callback measures the current weights on the
# reference set: no checkpoints needed. (`bupo refine --run DIR` does the same from a run's saved
# checkpoints.)

# %%
import tempfile

from bupo_core.trainer import TrainConfig, Trainer


def run_bupo(inter_steps: int, label: str):
    m, tok = load_model(MODEL, device=DEVICE)
    cfg = TrainConfig(
        model=MODEL,
        task="chain_sum",
        task_kwargs={**task_kwargs, "split": "train"},
        task_size=TRAIN_POOL,
        method="bupo",
        layer=LAYER,
        inter_steps=inter_steps,
        internal_phase_only=inter_steps >= STEPS,
        steps=STEPS,
        prompts_per_step=PROMPTS_PER_STEP,
        group_size=GROUP_SIZE,
        max_new_tokens=MAX_NEW_TOKENS,
        lr=LR,
        seed=SEED,
        device=DEVICE,
        precision=PRECISION,
        out_dir=tempfile.mkdtemp(prefix=f"bupo-{label}-"),
    )
    trainer = Trainer(cfg, model=m, tokenizer=tok)
    # disjoint splits: no reference question is among the questions this run can be served
    assert {e.question for e in trainer.task.examples}.isdisjoint(e.question for e in ref_task.examples)
    points = [base_point]

    def measure(row):
        if row["step"] % MEASURE_EVERY == 0 or row["step"] == STEPS:
            points.append(feature_refinement(trainer.model, reference, LAYER, step=row["step"]))

    result = trainer.train(progress=True, callback=measure)
    return result.metrics, points


short_metrics, short_points = run_bupo(SHORT_INTER, "short")
long_metrics, long_points = run_bupo(LONG_INTER, "long")
assert [r["phase"] for r in long_metrics] == ["internal"] * STEPS
assert short_metrics[-1]["phase"] == ("full" if STEPS > SHORT_INTER else "internal")

# %% [markdown]
# ## The measures over training
#
# Each panel is one measure at the target layer, against the training step (step 0 is the base
# model). Left to right: cosine similarity of $H^l$ with each higher $H^j$ (one line per j), the layer
# entropy change at l, the full policy's perplexity on the reference set, and $\mathrm{KL}(\pi^l \,\|\, \pi^j)$.

# %%
from bupo_core.reporting.evaluation_plots import plot_refinement

fig_short = plot_refinement(
    [p.to_json() for p in short_points], title=f"short internal phase ({SHORT_INTER} of {STEPS} steps), layer {LAYER}"
)
fig_long = plot_refinement(
    [p.to_json() for p in long_points], title=f"internal phase for all {STEPS} steps, layer {LAYER}"
)

# %%
from bupo_core.refinement import summarise


def show(label, points, metrics):
    s = summarise(points)
    print(
        f"{label:6s} cos {s['mean_cosine_to_higher'][0]:.3f} -> {s['mean_cosine_to_higher'][1]:.3f} | "
        f"dH^{LAYER} {s['layer_entropy_change'][0]:+.3f} -> {s['layer_entropy_change'][1]:+.3f} | "
        f"PPL {s['perplexity'][0]:.3f} -> {s['perplexity'][1]:.3f} | "
        f"KL {s['mean_kl_to_higher'][0]:.3f} -> {s['mean_kl_to_higher'][1]:.3f} | "
        f"reward first/last step {metrics[0]['reward_mean']:.2f}/{metrics[-1]['reward_mean']:.2f}"
    )
    return s


s_short = show("short", short_points, short_metrics)
s_long = show("long", long_points, long_metrics)
for s in (s_short, s_long):
    assert all(math.isfinite(v) for pair in s.values() for v in pair)

# %% [markdown]
# ## Reward and entropy while the phases run
#
# The internal phase optimises $\pi^l$, not the policy that samples the answers, so the reward of the
# full policy is not what it climbs directly. The curves show what the full policy does meanwhile.

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for label, rows in (("short internal phase", short_metrics), ("internal only", long_metrics)):
    steps = [r["step"] for r in rows]
    axes[0].plot(steps, [r["reward_mean"] for r in rows], marker="o", label=label)
    axes[1].plot(steps, [r["entropy"] for r in rows], marker="o", label=label)
axes[0].axvline(SHORT_INTER + 0.5, color="grey", ls="--", lw=0.8)
axes[1].axvline(SHORT_INTER + 0.5, color="grey", ls="--", lw=0.8)
axes[0].set_title("mean reward of the sampled answers")
axes[1].set_title("full-policy entropy (nats)")
axes[0].set_ylabel("mean reward (fraction right, 0-1)")
axes[1].set_ylabel("entropy of the full policy (nats)")
for ax in axes:
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## Reading the results honestly
#
# What to expect from the paper: during IPA on Qwen3-4B's layer 6, cosine similarity to the upper
# layers rises, $\Delta\mathcal{H}^6$ goes negative, perplexity creeps up and the KL to upper layers grows; a long
# internal phase eventually collapses the model.
#
# The cell below compares this run with those four directions, from the measurements above (base
# model to last step), and splits the short run's perplexity change into its internal phase and its
# GRPO phase.

# %%
FLAT = 0.01  # relative change below which a measure counts as flat (one seed, 8 reference answers)
paper_direction = {"mean_cosine_to_higher": +1, "layer_entropy_change": -1, "perplexity": +1, "mean_kl_to_higher": +1}
names = {
    "mean_cosine_to_higher": f"mean cos(H^{LAYER}, H^j)",
    "layer_entropy_change": f"dH^{LAYER} (nats)",
    "perplexity": "perplexity",
    "mean_kl_to_higher": f"mean KL(pi^{LAYER} || pi^j)",
}
print(
    f"Reference set: {len(reference)} answers, {reference.num_tokens} response tokens; {STEPS} steps of {PROMPTS_PER_STEP} prompts x "
    f"{GROUP_SIZE} samples, lr {LR}, target layer {LAYER}, one training seed ({SEED})."
)
print(
    f"{'measure':26s} {'paper':>6s} {'short (' + str(SHORT_INTER) + ' internal steps)':>34s} {'internal only (' + str(STEPS) + ')':>34s}"
)
for key, sign in paper_direction.items():
    cells = []
    for s in (s_short, s_long):
        a, b = s[key]
        if abs(b - a) < FLAT * max(abs(a), 1e-9):
            verdict = "flat"  # a change under 1% of the start is not read as a direction
        else:
            verdict = "as paper" if (b - a) * sign > 0 else "against paper"
        cells.append(f"{a:.3f} -> {b:.3f} ({b - a:+.3f}, {verdict})")
    print(f"{names[key]:26s} {'up' if sign > 0 else 'down':>6s} {cells[0]:>34s} {cells[1]:>34s}")

# the short run's perplexity: during its internal phase (up to step SHORT_INTER) and after the switch
end_internal = [p for p in short_points if p.step <= SHORT_INTER][-1]
print(
    f"short run, perplexity: base {short_points[0].perplexity:.3f} -> {end_internal.perplexity:.3f} at step {end_internal.step} "
    f"(end of the internal phase) -> {short_points[-1].perplexity:.3f} at step {short_points[-1].step}; "
    f"internal-only run: {long_points[0].perplexity:.3f} -> {long_points[-1].perplexity:.3f}"
)
after = lambda rows: sum(r["reward_mean"] for r in rows[SHORT_INTER:]) / max(len(rows[SHORT_INTER:]), 1)  # noqa: E731
print(
    f"mean training reward of steps {SHORT_INTER + 1}..{STEPS}: short run (GRPO there) {after(short_metrics):.3f}, "
    f"internal-only run {after(long_metrics):.3f}"
)
print(
    f"entropy of the raw internal policy pi^{LAYER} on the reference set at the start: {base_point.layer_entropy:.2f} nats "
    f"(uniform over the vocabulary: ln N = {math.log(adapter.vocab_size):.2f})"
)

# %% [markdown]
# How to read it:
#
# - Every number above comes from **one training seed** of a few steps, measured on a reference set
#   whose size is on the first line above; a change in the second or third decimal, or a direction that
#   differs from the paper's, can be noise of this size. Whether anything BuPO does here holds across seeds is what
#   `bupo sweep results/specs/main.yaml` measures (docs/experiments.md); the results page,
#   `docs/results.md` (generated by `bupo report`), shows it.
# - The perplexity line separates what IPA did (up to the end of the internal phase) from what the
#   GRPO steps after the switch did; do not attribute the short run's total change to IPA.
# - The reward line compares GRPO steps with further internal-phase steps on the same prompts: the
#   paper's $s_{inter}$ ablation predicts that staying in the internal phase costs reward, with a collapse
#   only at lengths far beyond this run's.
# - The raw internal policy at layer 5 is **not** uniform: its entropy (last line above) is far below
#   ln N. SmolLM2's lower-layer states have large norms (notebook 02), so without the final norm the
#   raw projection is sharply peaked and its entropy mostly tracks the vector's norm; IPA starts from a
#   policy very different from the paper's boundary layer, which the rule could not locate here
#   (layer 5 is a depth-ratio fallback).
# - Tied embeddings (IPA on SmolLM2 also moves the input embedding, which every layer reads) are not an
#   explanation we can offer: Qwen3-4B, the model of the paper's feature-refinement analysis, ties
#   its embeddings too. That they matter here is an untested hypothesis that the paper's own tied
#   models argue against.
#
# To reproduce the paper's scale, run the same code with `MODEL = "Qwen/Qwen3-0.6B"`, `LAYER = 6`
# and a few hundred steps on a GPU, or use the CLI:
#
# ```bash
# bupo train --model Qwen/Qwen3-0.6B --task gsm8k --method bupo --layer 6 --inter-steps 30 \
#     --steps 300 --save-every 10 --out runs/qwen3-bupo
# bupo refine --run runs/qwen3-bupo
# ```

# %% [markdown]
# ## Summary
#
# * Feature refinement is measured with four quantities (Eqs. 6.1-6.4) on a fixed reference set, so
#   that every checkpoint is compared on the same tokens; the KL direction is $\pi^l \| \pi^j$.
# * The hand-built measures agree with `bupo_core.refinement.feature_refinement` (asserted above).
#
# **Open questions.** Does the picture change with the logit-lens convention (`norm="final"`) for
# the entropy and the KL? Is the reference set large enough for the differences between checkpoints
# to be larger than the token-to-token noise (bootstrap over its tokens)? Which layers $j$ move most
# during IPA: the ones just above $l$ or the top?
#
# Next: [07 · evaluation](07_evaluation.ipynb).
