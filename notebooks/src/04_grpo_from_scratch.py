# %% [markdown]
# # 04 · GRPO from scratch: rewards, rollouts, group advantages, the clipped objective, one update
#
# BuPO (notebook 05) is GRPO with a twist in its first steps, so first we build GRPO itself, piece by
# piece, on the embedded SmolLM2-135M-Instruct. Each piece is written **by hand** in a few lines, then
# the `bupo_core` function that the trainer uses is shown to agree with it (`assert`).
#
# One GRPO step, in the paper's code (verl) conventions (see also [docs/training.md](../docs/training.md)):
#
# 1. **rollouts**: for each prompt $q$, sample $G$ responses $o_1..o_G$ from the current (full) policy;
# 2. **rewards**: a verifier scores each response,
#
# $$R_i = \mathbb{1}[\text{the final answer of } o_i \text{ is right}] \in \{0, 1\}; \tag{4.1}$$
#
# 3. **group advantages** (no value network: the group is the baseline), the same for every token of
#    response $i$, with the *unbiased* standard deviation, and 0 when all rewards of the group are equal:
#
# $$\hat A_i = \frac{R_i - \mathrm{mean}(R_1..R_G)}{\mathrm{std}(R_1..R_G) + 10^{-6}}; \tag{4.2; in paper Eq. 4}$$
#
# 4. **old log-probs**: $\log\pi_{old}(o_{i,t})$ of every sampled token, recomputed with the weights
#    before the update, and the importance ratio
#
# $$r_{i,t} = \exp\left(\log\pi_\theta(o_{i,t}) - \log\pi_{old}(o_{i,t})\right); \tag{4.3; in paper Eq. 4}$$
#
# 5. **clipped objective**, per token, with the "dual clip" $c = 10$ for negative advantages:
#
# $$\ell_{i,t} = \max\left(-\hat A_i r_{i,t},\ -\hat A_i\,\mathrm{clip}(r_{i,t}, 1-\varepsilon_{low}, 1+\varepsilon_{high})\right),\qquad
# \ell_{i,t} \leftarrow \min(\ell_{i,t}, -c \hat A_i)\ \text{if}\ \hat A_i < 0, \tag{4.4; paper Eq. 4 + dual clip}$$
#
#    aggregated over the response tokens either as the code does ("token-mean") or as the paper's
#    equation does ("sequence-mean"):
#
# $$\mathcal{L}_{tok} = \frac{\sum_{i,t} \ell_{i,t}}{\sum_i |o_i|},\qquad
# \mathcal{L}_{seq} = \frac{1}{G}\sum_i \frac{1}{|o_i|}\sum_t \ell_{i,t}; \tag{4.5; seq-mean: paper Eq. 4}$$
#
# 6. **updates**: a few AdamW mini-batch steps on that loss, grad-norm clipped to 1.0.
#
# The task is reasoning-gym's `chain_sum` at its easiest (two one-digit terms): the 135M model gets a
# small fraction right (the pass rate is printed after the rollouts below), so some groups of $G$
# have a mix of right and wrong answers, i.e. a learning signal.
#
# **Learning objectives.** After this chapter you can (1) write a verifier reward that never runs
# model text (Eq. 4.1); (2) compute group advantages (Eq. 4.2) and say which groups carry no signal;
# (3) compute the log-probs of sampled tokens at the right positions without a [batch x length x
# vocabulary] tensor; (4) implement the clipped objective with dual clip and both aggregations
# (Eqs. 4.3-4.5) and check its gradient; (5) make one update by hand and match the trainer's.
#
# **Prerequisites.** Notebooks 01-02 (positions, log-softmax); the idea of a policy gradient;
# PyTorch autograd and optimizers.
#
# **Time.** ~2 min to run on a 2-core CPU at the committed sizes (130 s recorded).
# **Working time.** about 50 min for the 3 exercises:
# 4.1 the reward, 4.2 group advantages, 4.3 the clipped objective.

# %%
# Config. Offline default: the embedded model. Online (Colab with a GPU) switch to e.g.
# MODEL = "Qwen/Qwen3-0.6B" (and TEMPLATE = "qwen3-boxed", TASK = "gsm8k" for MATH-style data).
MODEL = "smollm2-135m-instruct"
TASK, TASK_KWARGS, TEMPLATE = "chain_sum", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1), "short"
SEED = 0
PRECISION = "auto"  # compute precision: auto = bf16 on GPUs with compute capability >= 8.0, fp16 + loss scaling on older ones (T4), fp32 on CPU

from bupo_core.runtime import fast_mode, scaled

QUICK = fast_mode()  # True = the small CI sizes (same code, smaller numbers); BUPO_FAST=1 sets it too

NUM_PROMPTS = scaled(4, 2, QUICK)  # prompts in the hand-built batch
GROUP_SIZE = scaled(
    8, 8, QUICK
)  # G, samples per prompt (QUICK keeps 8: with 4, every group of the embedded model agrees)
MAX_NEW_TOKENS = scaled(24, 12, QUICK)
DEMO_STEPS = scaled(6, 2, QUICK)  # steps of the full trainer at the end

# %%
import copy
import re

import matplotlib.pyplot as plt
import torch

from bupo_core import load_model
from bupo_core.tasks import load_task
from bupo_core.teaching.exercises import check_clipped_loss, check_group_advantages, check_reward, yours_or_library
from bupo_core.tolerances import assert_close  # tolerance from the dtype in use

torch.manual_seed(SEED)
model, tokenizer = load_model(MODEL)
task = load_task(TASK, size=200, seed=SEED, template=TEMPLATE, **TASK_KWARGS)
examples = task.batch(0, NUM_PROMPTS)
for e in examples:
    print(repr(e.question), "->", e.answer)
print("prompt as the model sees it:", task.prompt(examples[0]))

# %% [markdown]
# ## 1. Rewards: a verifier that never runs model text
#
# The short template asks for "just the number", so the answer is the **last number** in the reply.
# By hand that is one regular expression and an exact comparison.

# ### Exercise 4.1 · The reward from a response
#
# Write `reward_by_hand(text, answer)`: Eq. 4.1 with the answer taken as the last integer in the
# text (an optional minus sign, then digits), compared exactly with `answer`.
#
# **Difficulty** ●○○ · **importance** ●●○ · **about 10 min** · **1 point**
#
# <details><summary>Hint</summary>
#
# `re.findall(r"-?\d+", text)` lists the integers in order; compare the last one with `answer` as
# strings (so `17` is not `7`), and return 0.0 when there is none.
#
# </details>


# %%
def reward_by_hand(text, answer):
    """Eq. 4.1: 1.0 if the last integer in text equals answer, else 0.0."""
    # BEGIN SOLUTION
    found = re.findall(r"-?\d+", text)
    return 1.0 if found and found[-1] == str(answer) else 0.0
    # END SOLUTION


check_reward(reward_by_hand)

# %%
reward_fn = yours_or_library(reward_by_hand, check_reward)  # the library's if 4.1 is unfinished
replies = ["The answer is 7.", "3 + 4 = 7", "It is seven", "12", "-4"]
print([reward_fn(r, "7") for r in replies])

# %% [markdown]
# `bupo_core.rewards` does the same with more care: decimals and thousands separators, `\boxed{}`
# extraction with balanced braces, symbolic equivalence through `math-verify` for maths answers
# (`\frac{1}{2}` = `0.5`), reasoning-gym's own scorer made binary, and - because model output is
# hostile input - a time limit per response (a worker process that is killed when a SymPy check runs
# away) and a size limit. Hostile outputs score 0 and are *counted*; they never stop training.

# %%
from bupo_core.rewards import Grader, extract_boxed, math_equivalent
from bupo_core.tasks import Example

grader = Grader(scorer="last_number")
ours = grader(replies, [Example("q", "7")] * len(replies))
assert ours.rewards == [reward_fn(r, "7") for r in replies]
print("rewards:", ours.rewards)
print(extract_boxed(r"so the answer is \boxed{\frac{1}{2}}"), math_equivalent(r"\frac{1}{2}", "0.5"))
hostile = ["9" * 100_000, r"\boxed{" * 2000, "__import__('os').system('ls') 7"]
res = Grader(scorer="boxed_math", timeout_s=1.0)(hostile, [Example("q", "7")] * 3)
print(f"hostile: rewards {res.rewards}, too long {res.too_long}, timeouts {res.timeouts}, errors {res.errors}")
assert res.rewards == [0.0, 0.0, 0.0]

# %% [markdown]
# ## 2. Rollouts: G samples per prompt from the full policy
#
# `bupo_core.rollout.generate` samples with temperature 1.0, left padding, stops each row at EOS,
# and is seeded. Rows are prompt-major: rows `g*G ... g*G+G-1` answer prompt `g`.

# %%
from bupo_core.rollout import SamplingConfig, generate

rollout = generate(
    model,
    tokenizer,
    [task.prompt(e) for e in examples],
    group_size=GROUP_SIZE,
    config=SamplingConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=1.0),
    seed=SEED,
    progress=True,
)
row_examples = [examples[i] for i in rollout.prompt_index]
rewards = torch.tensor([reward_fn(t, e.answer) for t, e in zip(rollout.texts, row_examples)])
for g in range(NUM_PROMPTS):
    print(f"prompt {g} ({examples[g].question.split(':')[-1].strip()} answer {examples[g].answer}):")
    for i in range(g * GROUP_SIZE, (g + 1) * GROUP_SIZE):
        print(f"   R={rewards[i]:.0f}  {rollout.texts[i][:70]!r}")
scored = Grader(scorer="reasoning_gym")(rollout.texts, row_examples)
assert scored.rewards == rewards.tolist()  # reasoning-gym's own scorer agrees with our hand reward
print(f"pass rate {rewards.mean():.2f} ({int(rewards.sum())} of {len(rewards)} responses right)")

# %% [markdown]
# ## 3. Group advantages
#
# Each response is compared with its own group only: above the group's mean reward means a positive
# advantage. A group whose responses all got the same reward has zero advantage - no signal at all,
# which is why an easy enough task matters so much for a small model.

# ### Exercise 4.2 · Group advantages
#
# Write `advantages_by_hand(rewards, group_size)`: Eq. 4.2 for prompt-major rewards (rows
# `g*G .. g*G+G-1` are prompt g's group), 0 for groups whose rewards are all equal.
#
# **Difficulty** ●○○ · **importance** ●●● · **about 10 min** · **2 points**
#
# <details><summary>Hint</summary>
#
# Loop over the groups `rewards[g * G:(g + 1) * G]`; leave all-equal groups at 0; otherwise
# `(r - r.mean()) / (r.std() + 1e-6)`, with the group's own (unbiased, `torch.std`'s default) std.
#
# </details>


# %%
def advantages_by_hand(rewards, group_size):
    """Eq. 4.2 per group of group_size consecutive responses: [n] -> [n]."""
    # BEGIN SOLUTION
    G = group_size
    out = torch.zeros(len(rewards))
    for g in range(len(rewards) // G):
        r = rewards[g * G : (g + 1) * G].float()
        if (r == r[0]).all():
            continue  # all equal: advantage 0
        out[g * G : (g + 1) * G] = (r - r.mean()) / (r.std() + 1e-6)  # torch.std is unbiased (Bessel)
    return out
    # END SOLUTION


check_group_advantages(advantages_by_hand)

# %%
G = GROUP_SIZE
by_hand = yours_or_library(advantages_by_hand, check_group_advantages)(rewards, G)  # the library's if 4.2 is unfinished

from bupo_core.grpo import group_advantages

adv, zero_groups = group_advantages(rewards, G)
assert_close(adv, by_hand, dtype=adv.dtype, what="group advantages", atol=1e-6)
print("advantages:", [round(a, 2) for a in adv.tolist()])
print(f"groups with zero advantage: {int(zero_groups.sum())} of {len(zero_groups)}")

fig, ax = plt.subplots(figsize=(9, 2.8))
ax.bar(range(len(adv)), adv, color=["tab:green" if r > 0 else "tab:red" for r in rewards])
for g in range(1, len(rewards) // G):
    ax.axvline(g * G - 0.5, color="grey", lw=0.8)
ax.set_xlabel("response index (groups separated by grey lines; green = reward 1)")
ax.set_ylabel("advantage A_i (unitless, Eq. 4.2)")
ax.set_title("GRPO advantages: each response against its own group")
plt.show()

# %% [markdown]
# ## 4. Log-probabilities of the sampled tokens
#
# Pack prompt + response into one left-padded batch; the logits at position t predict token t+1, so
# the positions that matter are those whose *next* token is a response token (`prediction_mask`).
# By hand: full logits, log-softmax, pick the sampled token.

# %%
batch = rollout.pack(tokenizer.pad_token_id)
print("batch:", tuple(batch.input_ids.shape), "response tokens:", int(batch.prediction_mask.sum()))
from bupo_core.capture import position_ids_from_mask

with torch.no_grad():
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids_from_mask(batch.attention_mask),
    ).logits.float()
    logp_by_hand = (
        torch.log_softmax(logits, -1).gather(-1, batch.targets[..., None]).squeeze(-1) * batch.prediction_mask
    )
print(f"the by-hand way holds a float32 [batch x length x vocab] tensor: {logits.numel() * 4 / 2**20:.0f} MiB")

# %% [markdown]
# That tensor is what makes GRPO run out of memory on large vocabularies (Qwen3's 151,936 tokens x
# 8 x 1,000 response tokens = 4.9 GB in float32, twice over with its gradient). `bupo_core` computes
# the log-probs and entropies of the sampled tokens only at the masked positions, a chunk of tokens
# at a time, with a custom backward that recomputes each chunk: at most one [chunk x vocab] block
# ever exists.

# %%
from bupo_core.policy_head import policy_logprobs
from bupo_core.tolerances import logit_rounding_atol

with torch.no_grad():
    logp, entropy = policy_logprobs(model, batch, chunk_size=64)
m = batch.prediction_mask.bool()
# a bf16/fp16 lm_head rounds each logit z to the dtype (relative error <= u, the unit roundoff), which
# moves a log-softmax by up to 2 u max|z|: ~0.23 nats at |z| ~ 30 in bf16; our head stays float32
atol = max(1e-4, logit_rounding_atol(model.dtype, logits[m]))
assert_close(logp[m], logp_by_hand[m], dtype=model.dtype, what="sampled-token log-probs", atol=atol, rtol=1e-5)
print(
    f"max |difference| = {(logp - logp_by_hand)[m].abs().max():.2e}; mean entropy of the sampled positions {entropy[m].mean():.2f} nats"
)
del logits

# %% [markdown]
# ## 5. The clipped objective
#
# The ratio (Eq. 4.3) is 1 before the first update and drifts during the mini-batch updates.
# Clipping stops the objective from rewarding moves beyond $1 \pm \varepsilon$; the dual clip caps how
# large the loss of a negative-advantage token can get when its ratio explodes (Eq. 4.4).
#
# ### Exercise 4.3 · The clipped objective with dual clip and both aggregations
#
# Write `policy_loss_by_hand(logp, old_logp, advantages, mask, *, eps_low, eps_high, dual_clip,
# aggregation)`: Eqs. 4.3-4.5 for [B, T] log-probs, [B] advantages and a [B, T] 0/1 mask of response
# positions (other positions hold garbage), with `dual_clip=None` meaning no cap and `aggregation`
# one of `"token-mean"`, `"sequence-mean"`. Clamp the log-ratio to [-20, 20] before `exp`. The
# checker also compares the gradient with respect to `logp`. Both the per-token clip (Eq. 4.4) and
# the aggregation (Eq. 4.5) are yours.
#
# **Difficulty** ●●● · **importance** ●●● · **about 30 min** · **3 points**
#
# <details><summary>Hint 1</summary>
#
# Per token: `torch.maximum(-A * r, -A * r.clamp(1 - eps_low, 1 + eps_high))`. The *maximum* of the
# two losses is PPO's pessimistic (smaller) objective; `eps_high` is the upper bound.
#
# </details>
# <details><summary>Hint 2</summary>
#
# Dual clip: where `A < 0`, cap that loss at `-c * A` (`torch.where(A < 0, torch.minimum(loss, -c * A),
# loss)`). Then multiply by the mask: token-mean divides by `mask.sum()`, sequence-mean averages each
# row by its own `mask.sum(1)` first.
#
# </details>


# %%
def clipped_loss_by_hand(ratio, A, eps_low=0.2, eps_high=0.2, c=10.0):
    """Eq. 4.4 per token (c=None: no dual clip): ratio [B, T], A [B, 1] -> per-token loss [B, T]."""
    # BEGIN SOLUTION
    unclipped = -A * ratio
    clipped = -A * ratio.clamp(1 - eps_low, 1 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    return loss if c is None else torch.where(A < 0, torch.minimum(loss, -c * A), loss)
    # END SOLUTION


def policy_loss_by_hand(
    logp, old_logp, advantages, mask, *, eps_low=0.2, eps_high=0.2, dual_clip=10.0, aggregation="token-mean"
):
    """Eqs. 4.3-4.5: the aggregated clipped loss (a scalar with gradient)."""
    # BEGIN SOLUTION
    ratio = torch.exp((logp - old_logp).clamp(-20, 20))  # Eq. 4.3
    per_token = clipped_loss_by_hand(ratio, advantages[:, None], eps_low, eps_high, dual_clip) * mask  # Eq. 4.4
    if aggregation == "token-mean":  # Eq. 4.5, left
        return per_token.sum() / mask.sum()
    rows = mask.sum(1) > 0  # Eq. 4.5, right: mean per response, then over responses
    return (per_token.sum(1)[rows] / mask.sum(1)[rows]).mean()
    # END SOLUTION


check_clipped_loss(policy_loss_by_hand)

# %%
from bupo_core.losses import clipped_policy_loss

r = torch.linspace(0.01, 13.0, 400)
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
for ax, A in zip(axes, (1.0, -1.0)):
    per_token = clipped_policy_loss(
        r.log()[:, None], torch.zeros(len(r), 1), torch.full((len(r),), A), torch.ones(len(r), 1)
    ).per_token[:, 0]
    ax.plot(r, -A * r, ls=":", label="unclipped -rA")
    ax.plot(r, per_token, lw=2, label="GRPO per-token loss")
    ax.axvspan(0.8, 1.2, alpha=0.15)
    ax.set_title(f"A = {A:+.0f}")
    ax.set_xlabel("ratio r = pi / pi_old (Eq. 4.3)")
    ax.set_ylim(-14, 14)
    ax.legend(fontsize=8)
for ax in axes:
    ax.set_ylabel("per-token loss (Eq. 4.4)")
plt.tight_layout()
plt.show()

# %%
policy_loss_fn = yours_or_library(policy_loss_by_hand, check_clipped_loss)  # the library's if 4.3 is unfinished
g = torch.Generator().manual_seed(0)
fake_logp = logp + 0.3 * torch.randn(logp.shape, generator=g) * batch.prediction_mask  # as if after some updates
ratio = torch.exp((fake_logp - logp).clamp(-20, 20))
loss_by_hand = policy_loss_fn(fake_logp, logp, adv, batch.prediction_mask)  # token-mean
out = clipped_policy_loss(fake_logp, logp, adv, batch.prediction_mask)
assert_close(out.loss, loss_by_hand, dtype=model.dtype, what="clipped loss", atol=1e-6)
print(
    f"loss {out.loss:.4f} (by hand {loss_by_hand:.4f}); clipped tokens {out.clip_frac:.1%}; approx KL {out.approx_kl:.4f}"
)

# %% [markdown]
# ## 6. One update
#
# By hand: old log-probs with the current weights (no grad), then the loss with grad (ratio = 1 at
# this first update, so the gradient is that of -A * logp), backward, clip the gradient norm to 1.0,
# one AdamW step (weight decay 0.01). The learning rate is higher than the paper's 1e-6 because the
# model is tiny and we want to see it move.

# %%
LR = 2e-5
if MODEL == "smollm2-135m-instruct":  # the sizes, QUICK ones included, were measured to give this model mixed groups
    assert (adv != 0).any(), "every group has equal rewards: no learning signal for the update below"
if (adv == 0).all():
    # another model or task where every group happened to agree: no signal to learn from; for the
    # demonstration of the update mechanics use made-up advantages instead
    print("every group has equal rewards in this batch; using illustrative advantages for the update demo")
    adv = torch.linspace(-1.0, 1.0, len(adv))
hand_model = copy.deepcopy(model).float().train()  # float32 master weights, as the Trainer keeps them
opt = torch.optim.AdamW(hand_model.parameters(), lr=LR, weight_decay=0.01, foreach=False)
with torch.no_grad():
    old_logp, _ = policy_logprobs(hand_model, batch)
new_logp, _ = policy_logprobs(hand_model, batch)
loss = policy_loss_fn(new_logp, old_logp, adv, batch.prediction_mask)  # token-mean, eps 0.2, dual clip 10
loss.backward()
grad_norm = torch.nn.utils.clip_grad_norm_(hand_model.parameters(), 1.0)
opt.step()
with torch.no_grad():
    after, _ = policy_logprobs(hand_model, batch)
delta = ((after - old_logp) * batch.prediction_mask).sum(1) / batch.prediction_mask.sum(1)
print(f"loss {loss:.4f}, grad norm before clipping {grad_norm:.2f}")
print(f"mean change of log p per response: A>0: {delta[adv > 0].mean():+.4f}   A<0: {delta[adv < 0].mean():+.4f}")
if (adv != 0).any():
    assert delta[adv > 0].mean() > delta[adv < 0].mean()  # right answers became more likely than wrong ones

# %% [markdown]
# The trainer's update phase (`bupo_core.step.update_policy`, with one mini-batch holding the whole batch) must produce
# the same weights. It skips the forward/backward of zero-advantage responses (their gradient is
# exactly zero) but still counts their tokens in the token-mean, so the result is the same up to
# float rounding.

# %%
from bupo_core.step import score_batch, update_policy
from bupo_core.trainer import TrainConfig, Trainer

trainer_model = copy.deepcopy(model)
cfg = TrainConfig(
    model=MODEL,
    task=TASK,
    task_kwargs=TASK_KWARGS,
    template=TEMPLATE,
    lr=LR,
    num_mini_batches=1,
    micro_batch_size=len(batch),
    prompts_per_step=NUM_PROMPTS,
    group_size=G,
    out_dir="runs/nb04-check",
    precision="fp32",
)  # float32 like the hand update, so both are compared at float32 precision
trainer = Trainer(cfg, model=trainer_model, tokenizer=tokenizer, task=task)
old, _ = score_batch(trainer, batch, None)
stats = update_policy(trainer, batch, adv, None, old_logp=old)
# compare the weight *changes*: Adam's first step is ~lr * sign(grad), so float rounding in
# near-zero gradient entries shows up as a tiny relative difference, not an exact match
diff = sum(((a - b) ** 2).sum() for a, b in zip(hand_model.parameters(), trainer_model.parameters())) ** 0.5
moved = sum(((a - o) ** 2).sum() for a, o in zip(hand_model.parameters(), model.parameters())) ** 0.5
print(
    f"trainer update: loss {stats['loss']:.6f} (by hand {loss.item():.6f}); "
    f"|difference of the two updates| / |update| = {diff / moved:.1e}"
)
assert_close(stats["loss"], loss.item(), dtype=torch.float32, what="trainer loss vs hand loss", atol=1e-5)
assert_close(diff / moved, 0.0, dtype=torch.float32, what="relative difference of the two updates", atol=1e-2)
del hand_model, trainer_model, trainer

# %% [markdown]
# ## 7. The whole loop
#
# `bupo_core.trainer.Trainer` repeats this: new prompts, G rollouts each, rewards, advantages, old
# log-probs, `num_mini_batches` AdamW updates, one line of metrics per step in `metrics.jsonl`, and
# checkpoints you can resume exactly. A few steps here only show the machinery; notebook 05 trains
# long enough to compare GRPO with BuPO. The same loop is the `bupo train` command.

# %%
from bupo_core.reporting.training_plots import plot_training_curves

cfg = TrainConfig(
    model=MODEL,
    task=TASK,
    task_kwargs=TASK_KWARGS,
    template=TEMPLATE,
    method="grpo",
    steps=DEMO_STEPS,
    prompts_per_step=NUM_PROMPTS,
    group_size=G,
    max_new_tokens=MAX_NEW_TOKENS,
    lr=LR,
    seed=SEED,
    precision=PRECISION,
    out_dir="runs/nb04-grpo",
)
import shutil

shutil.rmtree(cfg.out_dir, ignore_errors=True)
result = Trainer(cfg, model=copy.deepcopy(model), tokenizer=tokenizer, task=task).train(progress=True)
for row in result.metrics:
    print(
        {
            k: round(row[k], 3) if isinstance(row[k], float) else row[k]
            for k in (
                "step",
                "phase",
                "reward_mean",
                "loss",
                "zero_adv_group_frac",
                "clip_frac",
                "approx_kl",
                "entropy",
                "response_length_mean",
            )
        }
    )
assert [r["step"] for r in result.metrics] == list(range(1, DEMO_STEPS + 1))
plot_training_curves({"GRPO": result.metrics}, window=2)
plt.show()

# %% [markdown]
# **What this shows, and what it does not.** Every piece of the update agrees with its by-hand
# version, and one update moves probability towards right answers. A handful of steps on 4 prompts
# cannot show learning: rewards this noisy need tens of steps (notebook 05). To run the same loop on a
# GPU: `bupo train --model Qwen/Qwen3-0.6B --task gsm8k --template qwen3-boxed --method grpo --steps 300
# --prompts-per-step 32 --group-size 8 --max-new-tokens 1024 --lr 1e-6 --out runs/qwen3-grpo`.
#
# ## Summary
#
# * GRPO needs no value network: Eq. 4.2 compares each response with its own group, and groups
#   whose rewards are all equal carry no signal (counted as `zero_adv_group_frac`).
# * The clipped objective (Eqs. 4.3-4.5) is computed on the log-probs of the sampled tokens only,
#   at the positions that predict them, without a [batch x length x vocabulary] tensor.
# * One update by hand and the trainer's update agree (asserted above).
#
# **Open questions.** How does the fraction of zero-advantage groups change with $G$ and with the
# task's difficulty, and what does that cost in compute per useful gradient? When does
# "sequence-mean" differ noticeably from "token-mean" (try responses of very different lengths)?
# How often is the dual clip active in a real run (`dual_clip_frac` in `metrics.jsonl`)?
#
# Next: [05 · BuPO training](05_bupo_training.ipynb).
