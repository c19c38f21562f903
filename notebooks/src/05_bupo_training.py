# %% [markdown]
# # 05 · BuPO: optimise a lower layer's internal policy first, then the whole model
#
# Notebook 04 built GRPO. BuPO (Bottom-up Policy Optimization) changes only its first `s_inter`
# steps. For those steps the policy being optimised is not the model's output distribution but the
# **internal layer policy** of a lower layer $l$ (Eq. 1.4: raw residual state, paper numbering, no
# final norm),
#
# $$\pi^l_\theta(o_{i,t}) = \mathrm{softmax}\left(H^l_{i,t} E_u^T\right)[o_{i,t}], \tag{5.1; paper Eq. 6}$$
#
# while the samples still come from the full model. This is *Internal Policy Alignment* (IPA): the
# same clipped objective (Eqs. 4.3-4.5) with $\log\pi$ and $\log\pi_{old}$ taken from $\pi^l$,
#
# $$r^l_{i,t} = \exp\left(\log\pi^l_\theta(o_{i,t}) - \log\pi^l_{old}(o_{i,t})\right), \tag{5.2; paper Eq. 10}$$
#
# and BuPO is IPA for the first $s_{inter}$ steps, then GRPO on the full policy:
#
# $$\text{policy optimised at step } s = \begin{cases} \pi^l & s \le s_{inter} \\ \pi_\theta & s > s_{inter} \end{cases} \tag{5.3; paper Eq. 11}$$
# Because $\pi^l$ depends only on the
# embedding, blocks 1..l and $E_u$, the blocks above l and the final norm receive no gradient - and we
# do not even need to run them: our internal phase runs only blocks 1..l. After `s_inter` steps the
# run switches, abruptly, to plain GRPO on the full policy.
#
# This notebook: (1) picks l from the entropy analysis of notebook 02, (2) builds one IPA update by
# hand and checks it against `bupo_core`, (3) trains GRPO and BuPO side by side on the embedded model
# and plots reward, entropy and response length with the switch marked, (4) gives the config for a
# real single-GPU run, and (5) says plainly what the small run shows and what it does not.
#
# **Learning objectives.** After this chapter you can (1) pick BuPO's target layer from the entropy
# analysis; (2) compute the internal policy's log-probs of the sampled tokens (Eq. 5.1) with a
# forward pass that stops after block $l$; (3) show that an IPA update leaves the blocks above $l$
# and the final norm bit-identical; (4) implement the phase switch (Eq. 5.3) and run GRPO and BuPO
# side by side; (5) say what a small run can and cannot show.
#
# **Prerequisites.** Notebooks 02 (boundary layer) and 04 (GRPO).
#
# **Time.** ~3 min to run on a 2-core CPU at the committed sizes (154 s recorded)
# (two short training runs); the GPU configuration at the end (Qwen3-0.6B, 300 steps) is a multi-hour
# run and does not execute here.
# **Working time.** about 25 min for the 2 exercises:
# 5.1 internal-policy log-probs with a truncated forward, 5.2 the phase switch.

# %%
# Config. Offline default: the embedded model on CPU. For a real run see the GPU config cell below
# (switch MODEL to e.g. "Qwen/Qwen3-0.6B" online).
MODEL = "smollm2-135m-instruct"
TASK, TASK_KWARGS, TEMPLATE = "chain_sum", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1), "short"
SEED = 0
PRECISION = "auto"  # compute precision: auto = bf16 on GPUs with compute capability >= 8.0, fp16 + loss scaling on older ones (T4), fp32 on CPU

from bupo_core.runtime import fast_mode, scaled

QUICK = fast_mode()  # True = the small CI sizes (same code, smaller numbers); BUPO_FAST=1 sets it too

STEPS = scaled(
    10, 3, QUICK
)  # training steps per run. Moderate sizes, for a 2-core CPU (the chapter's recorded time is above).
INTER_STEPS = scaled(
    3, 1, QUICK
)  # s_inter: internal-phase steps of BuPO (paper: 20-30 of 300, i.e. 7-10%; here 30% of a short run)
PROMPTS_PER_STEP = scaled(3, 2, QUICK)
GROUP_SIZE = scaled(8, 4, QUICK)
MAX_NEW_TOKENS = scaled(12, 8, QUICK)
LR = 3e-5  # the paper uses 1e-6 on 4B-8B models; a 135M model needs more to move within tens of steps
ANALYSIS_PROMPTS = scaled(6, 2, QUICK)
TRAIN_POOL = 128  # distinct training questions from the task's "train" split (the easy task has ~154 there)

# %%
import copy
import shutil
import time

import matplotlib.pyplot as plt
import torch

from bupo_core import ArchitectureAdapter, load_model
from bupo_core.tasks import load_task
from bupo_core.teaching.exercises import check_internal_logprobs, check_phase_switch, yours_or_library
from bupo_core.tolerances import assert_close  # tolerance from the dtype in use

torch.manual_seed(SEED)
model, tokenizer = load_model(MODEL)
adapter = ArchitectureAdapter(model)
L = adapter.num_layers
# the training side of the task's fixed question partition (docs/experiments.md); notebook 07 evaluates on the other side
task = load_task(TASK, size=TRAIN_POOL, seed=SEED, template=TEMPLATE, split="train", **TASK_KWARGS)
print(f"{MODEL}: {L} layers, vocabulary {adapter.vocab_size}, tied embeddings: {adapter.tied_embeddings}")

# %% [markdown]
# ## 1. Which layer?
#
# The paper targets the **boundary layer**: the last layer of the first run of layers whose FFN
# *increases* the entropy of the internal policy (dH_FFN > 0: the "exploration" stage), before FFN
# entropy change turns to ~0 or negative. Notebook 02 explains the measurement; here we rerun it
# briefly on the same kind of prompts we train on and take the layer it reports.

# %%
from bupo_core.analysis import AnalysisConfig, analyse_entropy

prompts = [task.prompt(e) for e in task.batch(10_000, ANALYSIS_PROMPTS)]
report = analyse_entropy(
    model,
    tokenizer,
    prompts,
    config=AnalysisConfig(max_new_tokens=MAX_NEW_TOKENS, seed=SEED, keep_token_statistics=False),
)
ffn_change = report.ffn_entropy_change
fig, ax = plt.subplots(figsize=(8, 2.8))
ax.bar(range(1, L + 1), ffn_change, color=["tab:orange" if v > 0 else "tab:blue" for v in ffn_change])
ax.axhline(0, color="black", lw=0.8)
ax.set_xlabel("layer l (paper numbering: output of block l)")
ax.set_ylabel("mean dH_FFN (nats)")
if report.boundary_layer:
    ax.axvline(report.boundary_layer, color="red", ls="--", label=f"boundary layer {report.boundary_layer}")
    ax.legend()
ax.set_title("FFN entropy change per layer (orange: widens, blue: narrows)")
plt.show()
print("boundary layer:", report.boundary_layer, "-", report.boundary_reason)

# %% [markdown]
# On SmolLM2 with these short answers the rule may find **no** exploration run at all: every FFN
# narrows the internal policy (dH_FFN < 0 from layer 1 on), unlike Qwen3's three stages. That is a
# real difference between models, not a bug (notebook 02 shows the full curves). Then there is no
# boundary layer to take, and we fall back to the paper's *relative* depth for Qwen3: layer 6 of 36,
# i.e. layer 5 of SmolLM2's 30.

# %%
# The layer BuPO will optimise: the boundary layer when the rule finds one below the top layer, else the
# paper's relative depth (the same rule as `bupo demo`).
from bupo_core.layer_choice import choose_layer

LAYER, LAYER_REASON = choose_layer(report)
print(f"BuPO target layer: {LAYER} of {L} ({LAYER_REASON})")

# %% [markdown]
# ## 2. One IPA update, by hand
#
# Rollouts come from the **full** model. Then the internal policy's log-probs of the sampled tokens:
# run only the embedding and blocks 1..l (`forward_to_layer` stops the forward with an exception in a
# hook right after block l), multiply the raw $H^l$ by $E_u$ (`adapter.logits(h, norm="none")`),
# log-softmax, pick the sampled token.

# %%
from bupo_core.capture import forward_to_layer
from bupo_core.grpo import clipped_policy_loss, group_advantages
from bupo_core.rewards import Grader
from bupo_core.rollout import SamplingConfig, generate

for position in range(0, 8 * PROMPTS_PER_STEP, PROMPTS_PER_STEP):  # the first batch with a learning signal
    examples = task.batch(position, PROMPTS_PER_STEP)
    rollout = generate(
        model,
        tokenizer,
        [task.prompt(e) for e in examples],
        group_size=GROUP_SIZE,
        config=SamplingConfig(max_new_tokens=MAX_NEW_TOKENS),
        seed=SEED,
    )
    rewards = torch.tensor(
        Grader(scorer="reasoning_gym")(rollout.texts, [examples[i] for i in rollout.prompt_index]).rewards
    )
    adv, zero = group_advantages(rewards, GROUP_SIZE)
    if not zero.all():
        break
print(
    f"prompts {position}..{position + PROMPTS_PER_STEP - 1}: rewards {rewards.tolist()}; {int((~zero).sum())} of {len(zero)} groups carry a signal"
)
if MODEL == "smollm2-135m-instruct":  # measured: the second batch has mixed groups at the committed and the QUICK sizes
    assert not zero.all(), "no batch with mixed rewards: the IPA update below would be trivial"
if zero.all():  # another model or task without any signal: made-up advantages show the mechanics only
    print("no group with mixed rewards in 8 batches; using illustrative advantages for the update demo")
    adv = torch.linspace(-1, 1, len(adv))
batch = rollout.pack(tokenizer.pad_token_id)
m = batch.prediction_mask.bool()

ipa_model = copy.deepcopy(model).float().train()  # float32 master weights, as the Trainer keeps them
ipa_adapter = ArchitectureAdapter(ipa_model)
t0 = time.perf_counter()
h = forward_to_layer(ipa_model, batch.input_ids, LAYER, batch.attention_mask)  # raw H^l, blocks 1..l only
logits_l = ipa_adapter.logits(h, norm="none")  # [B, T, N] float32 (fine for this small batch)
logp_by_hand = torch.log_softmax(logits_l, -1).gather(-1, batch.targets[..., None]).squeeze(-1) * batch.prediction_mask
t_trunc = time.perf_counter() - t0
with torch.no_grad():
    t0 = time.perf_counter()
    ipa_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    t_full = time.perf_counter() - t0
print(f"forward to layer {LAYER}: {t_trunc:.2f} s (with grad) vs full forward {t_full:.2f} s (no grad)")
print(
    f"mean entropy of pi^{LAYER} at the response positions: "
    f"{-(torch.softmax(logits_l, -1) * torch.log_softmax(logits_l, -1)).sum(-1)[m].mean():.2f} nats (max ln N = {torch.log(torch.tensor(float(adapter.vocab_size))):.2f})"
)

# %% [markdown]
# The chunked `bupo_core` version gives the same numbers without the [B x T x N] tensor:

# %%
from bupo_core.policy_head import policy_logprobs

with torch.no_grad():
    logp_core, ent_core = policy_logprobs(ipa_model, batch, layer=LAYER)
assert_close(
    logp_core[m], logp_by_hand.detach()[m], dtype=ipa_model.dtype, what=f"pi^{LAYER} log-probs", atol=1e-4, rtol=1e-5
)
print(f"max |difference| {(logp_core - logp_by_hand.detach())[m].abs().max():.1e}")

# %% [markdown]
# ### Exercise 5.1 · Internal-policy log-probs of layer $l$ with a truncated forward
#
# Write `internal_logprobs_by_hand(model, batch, layer)`: $\log\pi^l$ (Eq. 5.1) of each position's
# next token `batch.targets`, 0 outside `batch.prediction_mask`, running only the embedding and
# blocks $1..l$ (`forward_to_layer`), with gradient. The checker watches that no block above $l$
# and not the final norm runs, that positions are not shifted by one, and that the gradient of your
# log-probs reaches every block $1..l$ (what IPA trains) and nothing above.
#
# **Difficulty** ●●○ · **importance** ●●● · **about 20 min** · **3 points**
#
# <details><summary>Hint 1</summary>
#
# `h = forward_to_layer(model, batch.input_ids, layer, batch.attention_mask)` is the raw $H^l$;
# `ArchitectureAdapter(model).logits(h, norm="none")` projects it through $E_u$ without the final norm.
#
# </details>
# <details><summary>Hint 2</summary>
#
# Gather at `batch.targets` (the next token), not `batch.input_ids`; multiply by
# `batch.prediction_mask`; no `torch.no_grad()` anywhere: the IPA update backpropagates into blocks
# $1..l$.
#
# </details>


# %%
def internal_logprobs_by_hand(model, batch, layer):
    """Eq. 5.1: log pi^l of batch.targets at each position, [B, T] float32, 0 outside the prediction mask."""
    # BEGIN SOLUTION
    adapter = ArchitectureAdapter(model)
    h = forward_to_layer(model, batch.input_ids, layer, batch.attention_mask)  # raw H^l, blocks 1..l only
    logp = torch.log_softmax(adapter.logits(h, norm="none"), dim=-1)
    return logp.gather(-1, batch.targets[..., None]).squeeze(-1) * batch.prediction_mask
    # END SOLUTION


check_internal_logprobs(internal_logprobs_by_hand)
with torch.no_grad():
    mine = yours_or_library(internal_logprobs_by_hand, check_internal_logprobs)(ipa_model, batch, LAYER)
assert_close(mine[m], logp_core[m], dtype=ipa_model.dtype, what="internal log-probs, by hand vs bupo_core", atol=1e-4)

# %% [markdown]
# Now the update. The loss is the GRPO objective on $\pi^l$; after `backward()` only the embedding, blocks
# 1..l (and $E_u$, which SmolLM2 ties to the embedding) have gradients. Blocks above l and the final
# norm have `grad is None`, so AdamW - weight decay included - skips them: they stay **bit-identical**.

# %%
old = logp_core.detach()
out = clipped_policy_loss(logp_by_hand, old, adv, batch.prediction_mask)
out.loss.backward()
upper = {id(p) for p in ipa_adapter.upper_parameters(LAYER)}
with_grad = {n for n, p in ipa_model.named_parameters() if p.grad is not None}
upper_names = [n for n, p in ipa_model.named_parameters() if id(p) in upper]
print(
    f"{len(with_grad)} parameter tensors got a gradient; {len(upper_names)} (blocks {LAYER + 1}..{L} + final norm) did not"
)
assert not (with_grad & set(upper_names))
snapshot = {n: p.detach().clone() for n, p in ipa_model.named_parameters()}
opt = torch.optim.AdamW(ipa_model.parameters(), lr=LR, weight_decay=0.01)
torch.nn.utils.clip_grad_norm_([p for p in ipa_model.parameters() if p.grad is not None], 1.0)
opt.step()
moved = [n for n, p in ipa_model.named_parameters() if not torch.equal(p, snapshot[n])]
assert moved and not set(moved) & set(upper_names)
print(
    f"after one AdamW step: {len(moved)} tensors moved, all in the embedding and blocks 1..{LAYER}; upper blocks bit-identical"
)
del ipa_model, logits_l, h, opt

# %% [markdown]
# ### Exercise 5.2 · The phase switch
#
# Write `phase_by_hand(step, method, inter_steps)`: Eq. 5.3 as the trainer sees it, `"internal"`
# or `"full"` for a 1-based step; GRPO (`method="grpo"`) is always `"full"`.
#
# **Difficulty** ●○○ · **importance** ●●○ · **about 5 min** · **1 point**
#
# <details><summary>Hint</summary>
#
# Steps count from 1: BuPO's steps $1..s_	ext{inter}$ are internal (`step <= inter_steps`), every
# later step and every GRPO step is full.
#
# </details>


# %%
def phase_by_hand(step, method, inter_steps):
    """Eq. 5.3: 'internal' for BuPO's steps 1..s_inter, else 'full'."""
    # BEGIN SOLUTION
    return "internal" if method == "bupo" and step <= inter_steps else "full"
    # END SOLUTION


check_phase_switch(phase_by_hand)

# %% [markdown]
# ## 3. GRPO vs BuPO on the embedded model
#
# Both runs start from the same weights and see the same prompts in the same order (same seed). BuPO
# runs IPA on layer `LAYER` for `INTER_STEPS` steps, then GRPO. Each step writes a line to
# `runs/nb05-*/metrics.jsonl`. A callback checks, during BuPO's internal phase, that the upper blocks
# and the final norm have not changed by a single bit.

# %%
from bupo_core.trainer import TrainConfig, Trainer

common = dict(
    model=MODEL,
    task=TASK,
    task_kwargs={**TASK_KWARGS, "split": "train"},
    task_size=TRAIN_POOL,
    template=TEMPLATE,
    steps=STEPS,
    prompts_per_step=PROMPTS_PER_STEP,
    group_size=GROUP_SIZE,
    max_new_tokens=MAX_NEW_TOKENS,
    lr=LR,
    seed=SEED,
    num_mini_batches=2,
    precision=PRECISION,
)
runs = {}
for name, extra in [
    ("GRPO", dict(method="grpo")),
    (f"BuPO (layer {LAYER}, s_inter={INTER_STEPS})", dict(method="bupo", layer=LAYER, inter_steps=INTER_STEPS)),
]:
    cfg = TrainConfig(**common, **extra, out_dir=f"runs/nb05-{extra['method']}")
    shutil.rmtree(cfg.out_dir, ignore_errors=True)
    run_model = copy.deepcopy(model)
    run_adapter = ArchitectureAdapter(run_model)
    frozen = {
        n: p.detach().clone()
        for n, p in run_model.named_parameters()
        if id(p) in {id(q) for q in run_adapter.upper_parameters(LAYER)}
    }

    def check_upper(row, run_model=run_model, frozen=frozen):
        if row["phase"] == "internal":
            params = dict(run_model.named_parameters())
            # the Trainer keeps float32 master weights (a bf16 model is cast up, exactly): compare in its dtype
            assert all(torch.equal(params[n], v.to(params[n].dtype)) for n, v in frozen.items()), (
                "upper blocks moved during IPA"
            )

    t0 = time.time()
    result = Trainer(cfg, model=run_model, tokenizer=tokenizer, task=task).train(progress=True, callback=check_upper)
    runs[name] = result.metrics
    print(f"{name}: {time.time() - t0:.0f} s, last checkpoint {result.last_checkpoint}")
    del run_model

# %%
from bupo_core.reporting.training_plots import plot_training_curves

plot_training_curves(
    runs,
    window=4,
    title=f"{MODEL}, {TASK} (2 one-digit terms), {PROMPTS_PER_STEP} prompts x {GROUP_SIZE} samples per step",
)
plt.show()

# %%
bupo_rows = runs[list(runs)[1]]
assert [r["phase"] for r in bupo_rows] == ["internal"] * INTER_STEPS + ["full"] * (STEPS - INTER_STEPS)
phase_fn = yours_or_library(phase_by_hand, check_phase_switch)  # the library's if 5.2 is unfinished
assert [r["phase"] for r in bupo_rows] == [phase_fn(r["step"], "bupo", INTER_STEPS) for r in bupo_rows]
assert all(r["internal_entropy"] is not None for r in bupo_rows[:INTER_STEPS])
k = max(1, STEPS // 3)
print(
    f"{'run':40s} {'reward, first ' + str(k):>16s} {'reward, last ' + str(k):>15s} {'entropy first->last':>22s} {'length first->last':>20s} {'s/step':>7s}"
)
for name, rows in runs.items():
    first, last = rows[:k], rows[-k:]
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    step_s = sum(r["time_generate"] + r["time_score"] + r["time_update"] for r in rows) / len(rows)
    print(
        f"{name:40s} {mean(first, 'reward_mean'):16.3f} {mean(last, 'reward_mean'):15.3f} "
        f"{mean(first, 'entropy'):10.3f} -> {mean(last, 'entropy'):.3f} {mean(first, 'response_length_mean'):10.1f} -> {mean(last, 'response_length_mean'):.1f} {step_s:7.1f}"
    )
internal = [r for r in bupo_rows if r["phase"] == "internal"]
full_grpo = runs["GRPO"]
print(
    f"update seconds per step: BuPO internal phase {sum(r['time_update'] for r in internal) / len(internal):.1f} "
    f"vs GRPO {sum(r['time_update'] for r in full_grpo) / len(full_grpo):.1f} (the internal phase runs blocks 1..{LAYER} only; "
    "the full policy's entropy comes from the sampler's logits)"
)

# %% [markdown]
# ## 4. A real run on one GPU
#
# The cell below picks a **recipe sized to the card** (`bupo_core.recipes`): Qwen3-0.6B on MATH-style
# data with the paper's prompt (`\boxed{}` answers, thinking off, checked with `math-verify`), G = 8,
# lr 1e-6, s_inter = 30 of 300 steps, with the response length, generation batch, micro-batch and
# policy-head chunk chosen so that the corrected memory estimate fits the card:
#
# | recipe | cards | precision | prompts x G | response tokens | estimated peak |
# | --- | --- | --- | --- | --- | --- |
# | `t4-16gb` | T4 (Colab free tier) | fp16 + loss scaling | 8 x 8 | 512 | <= 13 GiB |
# | `24gb` | L4, A10 | bf16 | 16 x 8 | 768 | ~16 GiB |
# | `40-80gb` | A100, H100 | bf16 | 32 x 8 | 1,024 | ~17 GiB |
#
# The printed line gives the recipe's estimated seconds per step and how many steps fit one
# 90-minute Colab session (a few dozen: 300 steps take several sessions). Checkpoints are written
# every ~15 minutes and only the last one or two are kept (each is ~7 GB: float32 weights and AdamW);
# mount Google Drive first (`from google.colab import drive; drive.mount("/content/drive")`) and the
# run folder is on Drive, so a disconnected session resumes there: run the cell again and it
# continues from the newest checkpoint. It does not run here (no GPU, no hub); on Colab with a GPU
# set `RUN_ON_GPU = True`. The same run from a shell (T4 sizes):
#
#     bupo train --model Qwen/Qwen3-0.6B --task deepmath --task-size 5000 --template qwen3-boxed --method bupo --layer 6 \
#         --inter-steps 30 --steps 300 --prompts-per-step 8 --group-size 8 --max-new-tokens 512 --generation-batch-size 16 \
#         --lr 1e-6 --num-mini-batches 4 --micro-batch-size 4 --logprob-chunk-size 128 --gradient-checkpointing \
#         --precision auto --save-every 13 --keep-checkpoints 2 --out runs/qwen3-bupo    # add --resume to continue
#
# Pick `--layer` from `bupo entropy --model Qwen/Qwen3-0.6B` (notebook 02 / 03); the paper's layer 6
# is for the 36-layer Qwen3-4B/8B. `docs/training.md` explains the memory estimate part by part.

# %%
from pathlib import Path

from bupo_core.recipes import build_recipe, detect_recipe

RUN_ON_GPU = False
recipe = detect_recipe()  # the visible card's recipe; None without CUDA
if recipe is None:
    recipe = build_recipe("t4-16gb")  # no GPU here: show Colab's free-tier recipe
print(recipe.describe())
gpu_config = recipe.train_config()
gpu_config.validate()
if RUN_ON_GPU:
    resume = (Path(gpu_config.out_dir) / "config.json").exists()  # a run started in an earlier session continues
    Trainer(gpu_config, resume=resume).train(progress=True)
else:
    print(
        {
            k: v
            for k, v in gpu_config.to_dict().items()
            if k
            in (
                "model",
                "task",
                "method",
                "layer",
                "inter_steps",
                "steps",
                "prompts_per_step",
                "group_size",
                "max_new_tokens",
                "lr",
                "precision",
            )
        }
    )

# %% [markdown]
# ## 5. What this small run shows, and what it does not
#
# **It shows** the mechanics, each verified: the layer choice from the FFN entropy change; IPA's
# log-probs of $\pi^l$ computed from blocks 1..l only and equal to the by-hand version; the upper blocks
# and final norm bit-identical through the internal phase (checked at every internal step); the
# abrupt switch to GRPO; and the per-step curves of reward, entropy (full policy, and $\pi^l$ during the
# internal phase) and response length, all from `metrics.jsonl`. (On SmolLM2 the raw lower-layer states have large norms,
# so $\pi^l$ is sharply peaked - its entropy is low, see the value printed in section 2 - and the
# paper's remark that without the norm entropy mostly tracks the vector's norm applies, see notebook 02.)
#
# **It does not show** whether BuPO beats GRPO. The cell below puts the two runs' late rewards next to
# the sampling noise of one step's mean reward.

# %%
grpo_rows, bupo_late = runs["GRPO"], bupo_rows
late = lambda rows: sum(r["reward_mean"] for r in rows[-k:]) / k  # noqa: E731
p_hat = (late(grpo_rows) + late(bupo_late)) / 2
se_step = (p_hat * (1 - p_hat) / (PROMPTS_PER_STEP * GROUP_SIZE)) ** 0.5
print(
    f"mean training reward of the last {k} steps: GRPO {late(grpo_rows):.3f}, BuPO {late(bupo_late):.3f} "
    f"(difference {late(bupo_late) - late(grpo_rows):+.3f})"
)
print(
    f"one step's mean reward over {PROMPTS_PER_STEP} prompts x {GROUP_SIZE} samples at p = {p_hat:.2f} has a sampling standard error of "
    f"at least {se_step:.3f} (samples of one prompt are correlated, so more), about {se_step / k**0.5:.3f} for a mean of {k} steps"
)
print(
    f"{STEPS} steps of {PROMPTS_PER_STEP} x {GROUP_SIZE} samples at lr {LR}, one training seed ({SEED}); "
    f"the paper: 300 steps of 128 x 8 samples at lr 1e-06 on 4B-8B models"
)

# %% [markdown]
# - **One training seed cannot separate the methods.** Whatever the two late rewards above are (level,
#   or apart by a few sampling standard errors), another seed reorders the prompts and redraws every
#   sample, and at this size that can change the ordering. The multi-seed comparison, with paired
#   differences over training seeds and a sign-flip test, is `bupo sweep results/specs/main.yaml`
#   (docs/experiments.md); its results are on the results page, `docs/results.md`, generated by
#   `bupo report`. Notebook 07 evaluates a run like this one on held-out questions.
# - The paper's claim (e.g. Qwen3-4B: GRPO 55.08 -> BuPO 58.51 average accuracy) rests on 300 steps of
#   128 x 8 samples on 4B-8B models, evaluated with Avg@K on held-out benchmarks.
# - The learning rate here is far above the paper's (see the line above), so each internal step moves
#   the embedding and blocks 1..l a lot, which the full model then has to absorb after the switch. The
#   paper's own ablation shows a too-long internal phase collapses the model ($s_{inter}$ = 70 -> 9.89
#   average), so watch the reward right after the switch. (SmolLM2 ties its input and output
#   embeddings, so IPA moves both; but Qwen3-4B, where the paper finds BuPO's gain, is tied too, so
#   tying is at most an untested hypothesis for a difference here, not an explanation.)
#
# To test the claim at scale, run the GPU configuration above for both methods and compare with
# `bupo eval`, or run the sweep.

# %% [markdown]
# ## Summary
#
# * IPA optimises $\pi^l$ (Eq. 5.1) with GRPO's objective; its log-probs need only blocks $1..l$,
#   and the blocks above $l$ and the final norm stay bit-identical (asserted above).
# * BuPO is IPA for $s_{inter}$ steps, then GRPO (Eq. 5.3); the per-step metrics mark the switch.
# * A run this small demonstrates the mechanics, not the paper's accuracy claim (section 5).
#
# **Open questions.** Ablate $s_{inter}$ (0, a few, many steps): where does the reward right after
# the switch start to suffer? Does a target layer chosen with the logit-lens rule (notebook 02,
# `norm="final"`) behave differently from one chosen with the raw rule? With tied embeddings, how
# much of IPA's effect comes from moving the shared embedding?
#
# Next: [06 · feature refinement](06_feature_refinement.ipynb).
