# %% [markdown]
# # 01 · The residual stream: an exact sum of module writes, and what you read from it
#
# A decoder-only Transformer keeps one vector per token, the **residual stream**, and every block
# *adds* to it: first what its attention module writes, then what its feed-forward module (FFN)
# writes. In the paper's notation (layer numbering used everywhere in this suite: layer 0 is the
# embedding output, layer l in 1..L is the output of block l):
#
# $$A^l = \mathrm{Attn}(\mathrm{LN1}(H^{l-1})),\qquad F^l = \mathrm{FFN}(\mathrm{LN2}(H^{l-1}+A^l)) \tag{1.1; paper Eq. 1}$$
# $$H^l = H^{l-1} + A^l + F^l \tag{1.2; paper Eq. 1}$$
#
# so, unrolled,
#
# $$H^L = H^0 + \sum_{l=1}^{L} \left(A^l + F^l\right) \quad\text{exactly.} \tag{1.3; paper Eq. 5}$$
#
# Multiplying any of these vectors by the
# unembedding matrix $E_u$ gives logits over the vocabulary: an **internal policy**.
#
# *Equation numbers.* Where one of our equations is also an equation of the paper (Tan et al., arXiv
# 2512.19673), its tag carries the paper's number as well, e.g. (1.3; paper Eq. 5); a tag without
# one is ours. The paper writes the stream after the attention write, $H^{l-1} + A^l$, as
# $H^{(2l-1)}$, and $H^l$ as $H^{(2l)}$.
#
# In this notebook you will
# 1. capture every vector with forward hooks written by hand (and see the trap that silently breaks a model),
# 2. check the additive decomposition numerically,
# 3. unembed a hidden state by hand: the paper's raw internal policy vs the classic *logit lens*,
# 4. prove that the logit lens at the last layer is exactly the model's own output.
#
# Each step is done by hand first, then shown to agree with the `bupo_core` function that the rest
# of the suite uses.
#
# **Learning objectives.** After this chapter you can (1) register forward hooks that read a model
# without changing it, and say why a hook must return `None`; (2) verify the residual stream's
# additive decomposition (Eq. 1.3) numerically and explain its float32 error; (3) project any hidden
# state to an internal policy, raw (the paper's, Eq. 1.4) or through the final norm (logit lens,
# Eq. 1.5); (4) show that the logit lens at layer L is the model itself.
#
# **Prerequisites.** Python and PyTorch tensors; softmax; the shape of a decoder-only Transformer
# block (attention, MLP, pre-norm). Notebook 00 for loading the model.
#
# **Time.** < 1 min to run on a 2-core CPU at the committed sizes (7 s recorded)
# (forward passes on one short prompt); a GPU is not needed.
# **Working time.** about 45 min for the 3 exercises
# (graded by `bupo_core.teaching.exercises`): 1.1 capture the stream with hooks, 1.2 the additive check,
# 1.3 the internal policy, raw and final-normed.

# %%
# Config: switch MODEL to a hub id such as "Qwen/Qwen3-0.6B" when you are online.
MODEL = "smollm2-135m-instruct"
DEVICE = None  # None = "cuda" if a GPU is visible, else "cpu"

from bupo_core.runtime import fast_mode, scaled

QUICK = fast_mode()  # True = the small CI sizes (same code, smaller numbers); BUPO_FAST=1 sets it too

PROMPT = "The capital of France is"
TOP_K = scaled(5, 3, QUICK)  # tokens shown per layer

# %%
import matplotlib.pyplot as plt
import torch

from bupo_core import ArchitectureAdapter, capture_residuals, load_model
from bupo_core.lens import internal_layer_policy
from bupo_core.teaching.exercises import (
    check_additive_decomposition,
    check_capture_residual_stream,
    check_internal_policy,
    yours_or_library,
)
from bupo_core.tolerances import assert_close, tolerance  # float32 on CPU; bf16 on GPU adds ~2^-8 relative per addition

torch.manual_seed(0)
model, tokenizer = load_model(MODEL, device=DEVICE)
adapter = ArchitectureAdapter(model)
L = adapter.num_layers
device = next(model.parameters()).device
ids = torch.tensor([tokenizer(PROMPT)["input_ids"]], device=device)
tokens = [tokenizer.decode([t]) for t in ids[0].tolist()]
print(f"{type(model).__name__}: {L} blocks, hidden size {adapter.hidden_size}, vocabulary {adapter.vocab_size}")
print("tokens:", tokens)

# %% [markdown]
# ## Where the vectors live
#
# The architecture adapter names, for each family, the module whose *output* is each vector. For
# Llama-style blocks (SmolLM2, Qwen, Mistral) the attention and MLP outputs are added to the stream
# directly; Gemma adds them after extra "sandwich" norms, so the adapter points at those norms
# instead (notebook 03).

# %%
block = adapter.block(1)
for role in ("ln1", "attn", "attn_write", "ln2", "ffn", "ffn_write"):
    print(f"{role:11s} -> block.{getattr(adapter.family, role):26s} {type(adapter.module(1, role)).__name__}")
print(
    "final norm  ->",
    type(adapter.final_norm).__name__,
    "| unembedding E_u:",
    tuple(adapter.unembed_weight.shape),
    "| tied to the input embedding:",
    adapter.tied_embeddings,
)

# %% [markdown]
# ## Hooks by hand, and the trap
#
# `module.register_forward_hook(fn)` calls `fn(module, inputs, output)` after the module runs.
# **If `fn` returns anything other than `None`, that value replaces the module's output.** A hook
# that returns a tuple where the block expects a tensor crashes loudly; a hook that returns a
# tensor rewires the model *silently*. See it happen, then write hooks that return `None`.

# %%
with torch.no_grad():
    clean = model(input_ids=ids).logits

store = {}


def careless(module, inputs, output):
    store["f5"] = output / output.norm(dim=-1, keepdim=True)  # keep a unit-norm copy for a plot...
    return store["f5"]  # ...and, by returning it, replace the FFN's output


bad = adapter.module(5, "ffn").register_forward_hook(careless)
with torch.no_grad():
    broken = model(input_ids=ids).logits
bad.remove()
print("max |logit change| caused by a hook that returns a value:", float((broken - clean).abs().max()))
assert not torch.allclose(broken, clean)

# %% [markdown]
# ### Exercise 1.1 · Capture the residual stream with hooks
#
# Write `capture_stream(model, input_ids)` returning a dict with `"H0"` (the input of block 1, i.e.
# the embedding output) and, for every layer $l = 1..L$, `"A{l}"`, `"F{l}"` and `"H{l}"` (Eqs.
# 1.1-1.2). Hook `adapter.module(l, "attn_write")` and `adapter.module(l, "ffn_write")` (the vectors
# *added* to the stream: for Gemma these are the post-norms, notebook 03), `adapter.block(l)` for
# $H^l$, and a forward **pre**-hook on block 1 for $H^0$. Hooks return `None` and are removed
# afterwards, even if the forward fails. The checker runs your function on tiny Llama and Gemma-3
# models.
#
# **Difficulty** ●●○ · **importance** ●●● · **about 25 min** · **3 points**
#
# <details><summary>Hint 1</summary>
#
# A forward hook receives `(module, inputs, output)`; attention modules return a tuple, so take
# `output[0]` when it is one. Keep each handle that `register_forward_hook` returns.
#
# </details>
# <details><summary>Hint 2</summary>
#
# $H^0$ is the *input* of block 1: `register_forward_pre_hook(fn, with_kwargs=True)` gives you
# `fn(module, args, kwargs)`; the hidden states are `args[0]` or `kwargs["hidden_states"]`. Remove
# every handle in a `finally:` block.
#
# </details>


# %%
def capture_stream(model, input_ids):
    """{"H0": [B, T, d], "A1": ..., "F1": ..., "H1": ..., ..., "H{L}": ...} captured with forward hooks."""
    adapter = ArchitectureAdapter(model)
    captured = {}

    # BEGIN SOLUTION
    def save_as(name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output  # attention returns (output, weights)
            captured[name] = out.detach()
            # no return statement: the hook returns None and the model is unchanged

        return hook

    def save_block_input(module, args, kwargs):
        captured["H0"] = (args[0] if args else kwargs["hidden_states"]).detach()

    handles = [adapter.block(1).register_forward_pre_hook(save_block_input, with_kwargs=True)]
    for l in range(1, adapter.num_layers + 1):
        handles.append(adapter.module(l, "attn_write").register_forward_hook(save_as(f"A{l}")))
        handles.append(adapter.module(l, "ffn_write").register_forward_hook(save_as(f"F{l}")))
        handles.append(adapter.block(l).register_forward_hook(save_as(f"H{l}")))
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        for h in handles:
            h.remove()
    # END SOLUTION
    return captured


check_capture_residual_stream(capture_stream)

# %%
captured = yours_or_library(capture_stream, check_capture_residual_stream)(
    model, ids
)  # the library's result if 1.1 is unfinished
with torch.no_grad():
    out = model(input_ids=ids, output_hidden_states=True)
assert torch.equal(out.logits, clean), "our hooks must not change the model"
print(f"captured {len(captured)} tensors, e.g. H0 {tuple(captured['H0'].shape)}, A1 {tuple(captured['A1'].shape)}")

# %% [markdown]
# ## The additive check
#
# Add the embedding and all 2L module writes (Eq. 1.3) and compare with the captured $H^L$. The
# stream's coordinates get large (the cell prints the largest), so float32 rounding leaves an
# absolute error far above $10^{-7}$: compare **relative** to the stream's size.
#
# ### Exercise 1.2 · The additive check
#
# Write `reconstruct_final(captured, num_layers)`: the right-hand side of Eq. 1.3, accumulated in
# float64. The checker also feeds it random dicts in which $H^L$ is *not* the sum.
#
# **Difficulty** ●○○ · **importance** ●●○ · **about 10 min** · **1 point**
#
# <details><summary>Hint</summary>
#
# Start from `captured["H0"].double()` and add `A{l}` and `F{l}` for `l` in `range(1, num_layers + 1)`:
# the last layer is included.
#
# </details>


# %%
def reconstruct_final(captured, num_layers):
    """H^0 + sum_{l=1..L} (A^l + F^l) in float64, [B, T, d]  (Eq. 1.3)."""
    # BEGIN SOLUTION
    total = captured["H0"].double()
    for l in range(1, num_layers + 1):
        total = total + captured[f"A{l}"].double() + captured[f"F{l}"].double()
    return total
    # END SOLUTION


check_additive_decomposition(reconstruct_final)

# %%
total = yours_or_library(reconstruct_final, check_additive_decomposition)(captured, L)
final = captured[f"H{L}"].double()
abs_err = float((final - total).abs().max())
rel_err = abs_err / float(final.abs().max())
print(f"max |H^L - (H^0 + sum(A + F))| = {abs_err:.2e}   relative to max|H^L| = {final.abs().max():.0f}: {rel_err:.2e}")
assert rel_err < tolerance(model.dtype, atol=1e-5).atol

# %%
norms = [float(captured["H0"].norm(dim=-1).mean())] + [
    float(captured[f"H{l}"].norm(dim=-1).mean()) for l in range(1, L + 1)
]
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(range(L + 1), norms, "-o", ms=3)
ax.set_yscale("log")
ax.set_xlabel("layer (paper numbering: 0 = embedding)")
ax.set_ylabel("mean L2 norm ||H^l|| (model units)")
ax.set_title(f"The residual stream's norm grows {norms[-1] / norms[0]:.0f}-fold from layer 0 to layer {L}")
plt.show()

# %% [markdown]
# The library does the same in one call, for every supported family: `capture_residuals` also keeps
# the normed inputs of each module (LN1 and LN2 outputs), which notebook 02 needs.

# %%
cap = capture_residuals(model, ids)
for l in (0, 1, L // 2, L):
    assert_close(
        cap.resid(l),
        captured[f"H{l}"],
        dtype=model.dtype,
        what=f"H^{l}, capture_residuals vs hand-written hooks",
        rtol=1e-6,
    )
assert_close(cap.attn_out(3), captured["A3"], dtype=model.dtype, what="A^3", rtol=1e-6)
assert_close(cap.ffn_out(L), captured[f"F{L}"], dtype=model.dtype, what=f"F^{L}", rtol=1e-6)
print("capture_residuals agrees with the hand-written hooks; decomposition error:", f"{cap.decomposition_error():.2e}")

# %% [markdown]
# **Second trap.** `output_hidden_states=True` returns L+1 states, but in current `transformers` the
# last one has already been through the final norm: it is not the raw $H^L$.

# %%
hs = out.hidden_states
print("len(hidden_states) =", len(hs), "| hidden_states[-1] == raw H^L?", torch.allclose(hs[-1], captured[f"H{L}"]))
print(
    "hidden_states[-1] == final_norm(raw H^L)?",
    torch.allclose(hs[-1], adapter.final_norm(captured[f"H{L}"]), atol=1e-4),
)
assert not torch.allclose(hs[-1], captured[f"H{L}"])

# %% [markdown]
# ## Unembedding a hidden state
#
# The model's own policy is
#
# $$\pi_\theta = \mathrm{softmax}\left(\mathrm{LN}_\text{final}(H^L)\, E_u^T\right). \tag{1.4a}$$
#
# The paper's **internal layer policy** drops the norm,
#
# $$\pi^l_\text{Layer} = \mathrm{softmax}\left(H^l E_u^T\right), \tag{1.4; paper Eq. 6}$$
#
# and the classic **logit lens** keeps it:
#
# $$\pi^l_\text{lens} = \mathrm{softmax}\left(\mathrm{LN}_\text{final}(H^l)\, E_u^T\right). \tag{1.5}$$
#
# ### Exercise 1.3 · The internal policy, raw and final-normed
#
# Write `internal_policy_by_hand(h, E_u, final_norm=None)`: Eq. 1.4 when `final_norm` is `None`,
# Eq. 1.5 when it is the model's final norm module. Work in float32 and take the softmax over the
# vocabulary (the last dimension). We then use it for the last position (the prediction of the token
# after "is"):
#
# **Difficulty** ●○○ · **importance** ●●● · **about 10 min** · **2 points**
#
# <details><summary>Hint</summary>
#
# `x = h if final_norm is None else final_norm(h)`, then a softmax of `x.float() @ E_u.float().T`
# over `dim=-1`.
#
# </details>


# %%
def internal_policy_by_hand(h, E_u, final_norm=None):
    """softmax(h E_u^T) (Eq. 1.4), or softmax(final_norm(h) E_u^T) (Eq. 1.5): [..., d] -> [..., N] float32."""
    # BEGIN SOLUTION
    x = h if final_norm is None else final_norm(h)
    return torch.softmax(x.float() @ E_u.float().T, dim=-1)
    # END SOLUTION


check_internal_policy(internal_policy_by_hand)

# %%
E_u = adapter.unembed_weight.float()  # [N, d]


policy_by_hand = yours_or_library(internal_policy_by_hand, check_internal_policy)  # the library's if 1.3 is unfinished


def top_tokens_by_hand(h, k=TOP_K):
    p = policy_by_hand(h, E_u)
    top = p.topk(k)
    return [(tokenizer.decode([int(i)]), round(float(v), 3)) for i, v in zip(top.indices, top.values)]


rows = []
with torch.no_grad():
    for l in sorted({0, 1, L // 4, L // 2, 3 * L // 4, L - 2, L}):
        h = captured["H0" if l == 0 else f"H{l}"][0, -1]
        rows.append((l, top_tokens_by_hand(h)[:TOP_K], top_tokens_by_hand(adapter.final_norm(h))[:TOP_K]))
for l, raw, lens in rows:
    print(f"layer {l:2d}  raw : {raw}")
    print(f"          lens: {lens}")

# %% [markdown]
# The two columns tell different stories. The logit lens shows the familiar picture: filler tokens in
# the middle, the answer at the end. The paper's raw projection, from layer 1 on, puts nearly all of
# its mass on a few odd tokens unrelated to the prompt. Two things drive this: the raw logits scale
# with $\|H^l\|$, which grows by orders of magnitude along the stream (the plot above; so raw policies get very peaked), and
# the stream is dominated by a few huge coordinates that the final RMSNorm re-weights (even flips):

# %%
h_mid = captured[f"H{L // 2}"][0, -1]
big = h_mid.abs().topk(2)
share = float((big.values**2).sum() / (h_mid**2).sum())
w = adapter.final_norm.weight.detach() if hasattr(adapter.final_norm, "weight") else None
print(f"layer {L // 2}, last position: coordinates {big.indices.tolist()} hold {share:.0%} of ||H||^2")
if w is not None:
    print(
        f"final-norm weights there: {[round(float(x), 3) for x in w[big.indices]]} "
        f"(median |weight| {float(w.abs().median()):.3f})"
    )

# %% [markdown]
# So `norm="none"` and `norm="final"` are genuinely different lenses, not a rescaling of each other.
# nnsight's documentation calls the un-normed projection "garbage"; it is nevertheless the paper's
# definition of an internal policy (and the paper found the normed one worse for BuPO). Notebook 02
# measures both and always shows the norms beside the entropies.
#
# `bupo_core.lens.internal_layer_policy` is the same computation (float32, any family, `norm` switch):

# %%
with torch.no_grad():
    for l in (1, L // 2, L):
        h = captured[f"H{l}"]
        assert_close(
            internal_layer_policy(model, cap, l, norm="none"),
            torch.softmax(h.float() @ E_u.T, -1),
            dtype=model.dtype,
            what=f"pi^{l} (norm='none')",
            atol=1e-6,
        )
        assert_close(
            internal_layer_policy(model, cap, l, norm="final"),
            torch.softmax(adapter.final_norm(h).float() @ E_u.T, -1),
            dtype=model.dtype,
            what=f"pi^{l} (norm='final')",
            atol=1e-6,
        )
print("internal_layer_policy agrees with the hand computation for norm='none' and norm='final'")

# %% [markdown]
# ## Parity: the logit lens at layer L *is* the model
#
# With the final norm, the layer-L internal policy must reproduce the model's logits exactly (the
# test suite checks this on every supported family, including Gemma 2's logit soft-capping).
# Without it, it is a different distribution.

# %%
with torch.no_grad():
    lens_L = adapter.logits(cap.resid(L), norm="final")
    raw_L = adapter.logits(cap.resid(L), norm="none")
print("max |lens logits - model logits| =", float((lens_L - clean).abs().max()))
print("max |raw logits  - model logits| =", float((raw_L - clean).abs().max()))
assert_close(lens_L, clean, dtype=model.dtype, what="logit lens at layer L vs the model's logits", atol=1e-4, rtol=1e-5)

# %% [markdown]
# ## How sure is each layer? Raw policy vs logit lens
#
# Track the probability of the model's final answer token and the top-1 probability at each layer,
# under both projections.

# %%
answer = int(clean[0, -1].argmax())
with torch.no_grad():
    raw = torch.stack([internal_layer_policy(model, cap, l, "none")[0, -1] for l in range(L + 1)])
    lens = torch.stack([internal_layer_policy(model, cap, l, "final")[0, -1] for l in range(L + 1)])
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
for name, P in (("raw H^l E_u^T (paper)", raw), ("final norm first (logit lens)", lens)):
    axes[0].plot(range(L + 1), P[:, answer], "-o", ms=3, label=name)
    axes[1].plot(range(L + 1), P.max(-1).values, "-o", ms=3, label=name)
axes[0].set_title(f"p({tokenizer.decode([answer])!r}) at the last position")
axes[1].set_title("top-1 probability")
axes[0].set_ylabel("probability of the answer token (0-1)")
axes[1].set_ylabel("largest probability (0-1)")
for ax in axes:
    ax.set_xlabel("layer (paper numbering: 0 = embedding)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
plt.show()
assert_close(
    lens[L], torch.softmax(clean[0, -1].float(), -1), dtype=model.dtype, what="lens policy at layer L", atol=1e-5
)

# %% [markdown]
# ## Summary
#
# * The stream is an exact sum, Eq. 1.3: the relative error printed above is float32 rounding
#   (the cell asserts it is below $10^{-5}$); the absolute error is larger because the stream's
#   coordinates are large.
# * Any captured vector becomes a policy through $E_u$; `norm="none"` is the paper's internal
#   policy, `norm="final"` the logit lens, and the lens at layer L is the model itself.
# * Hooks must return `None`, and `hidden_states[-1]` is normed.
#
# **Open questions.** Which coordinates dominate $H^l$ and from which layer on (look at the cell on
# the two largest coordinates)? Would subtracting the mean direction, or a per-layer norm, make
# Eq. 1.4 more informative without becoming Eq. 1.5? Does the decomposition error grow with the
# prompt length, and why would it in float16?
#
# Next, [02 · internal-policy entropy](02_internal_policy_entropy.ipynb) measures how uncertain each
# of these policies is, layer by layer and module by module, over the model's own answers.
