"""The policy head: the one place where vectors become a policy and a policy becomes statistics.

Every policy in ``bupo_core`` (the model's own, the paper's internal layer/module policies, the
logit lens) is the same computation::

    x [P, d] --(final norm, or not)--> --(x E_u^T + b)--> --(Gemma soft-cap, with the final norm)--> z [P, N]
    z --(per-chunk reducers)--> per-row statistics (entropy, log-prob of a token, top-k, KL, ...)

This module writes it once:

* :class:`PolicyHead` holds E_u (and bias), the optional final norm and soft-cap, and projects
  a chunk of vectors to float32 logits with autocast *disabled*, so a bf16 autocast region never
  computes logits or softmaxes in bf16.
* :class:`PolicyChunk` is one [chunk, N] block of logits with its softmax computed lazily and
  shared by the reducers; :data:`REDUCERS` is the registry of per-row statistics. A new statistic
  is one :func:`register_reducer` call (see ``docs/adding-a-statistic.md``).
* :func:`reduce_policy` runs the reducers chunk by chunk: at most one chunk's [chunk, N] logits
  and probabilities exist at a time, so memory does not grow with the number of vectors.
* :func:`chunked_logprob_entropy` is the differentiable path (GRPO/IPA): log p(target) and
  entropy with a custom backward that recomputes each chunk's logits, so neither direction ever
  holds a [tokens, N] tensor; :func:`token_logprobs` applies it at the masked positions of a
  [B, T] batch and :func:`policy_logprobs` runs a model to the full or an internal policy first.
* :func:`head_parts` is the one place of the norm / soft-cap rule: ``"none"`` = the raw vector
  times E_u^T, ``"final"`` = the final norm first and Gemma 2's logit soft-cap after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .adapter import ArchitectureAdapter
from .capture import base_model, forward_kwargs, forward_to_layer
from .errors import InputFormatError
from .sequences import PackedBatch

Norm = Literal["none", "final"]
NORMS: tuple[str, ...] = ("none", "final")


def check_norm(norm: str, what: str = "norm") -> str:
    """Validate an internal-policy convention and return it (the one place that checks ``norm``).

    ``what`` names the setting in the message (``"ipa_norm"`` for BuPO's internal phase).
    Raises :class:`~bupo_core.errors.InputFormatError` (a ``ValueError``) naming both choices.
    """
    if norm not in NORMS:
        raise InputFormatError(
            f"{what} must be 'none' (the paper's internal policy: raw vector x E_u^T) or 'final' "
            f"(logit lens: final norm first; paper Table 5 for IPA), got {norm!r}"
        )
    return norm


def head_parts(adapter: ArchitectureAdapter, norm: Norm) -> tuple[nn.Module | None, float | None]:
    """The norm / soft-cap rule, written once: ``(norm module or None, soft-cap or None)`` for ``norm``.

    ``"none"`` (the paper's internal policies): no norm, no soft-cap. ``"final"`` (the model's own
    head, the logit lens, IPA "with LN"): the final norm first and Gemma 2's final logit soft-cap
    (``None`` for models without one). ``adapter`` is an :class:`~bupo_core.adapter.ArchitectureAdapter`.
    """
    if check_norm(norm) == "final":
        return adapter.final_norm, adapter.logit_softcap
    return None, None


def project(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    norm: nn.Module | None = None,
) -> torch.Tensor:
    """float32 logits ``softcap(norm(x) W^T + b)`` of ``x`` [..., d] -> [..., N], autocast off.

    ``weight``/``bias`` are cast to float32 if they are not already (cast them once outside a
    loop with :meth:`PolicyHead.from_adapter` to avoid a cast per chunk).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        h = norm(x) if norm is not None else x
        w = weight if weight.dtype == torch.float32 else weight.float()
        b = None if bias is None else (bias if bias.dtype == torch.float32 else bias.float())
        z = torch.nn.functional.linear(h.float(), w, b)
        if softcap:
            z = torch.tanh(z / softcap) * softcap
    return z


@dataclass(frozen=True)
class PolicyHead:
    """E_u (float32), its bias, and what comes before and after it for one policy convention.

    Attributes:
        weight: [N, d] unembedding.
        bias: [N] or ``None``.
        norm: the final norm module applied first (``norm="final"``, logit lens / full policy), or
            ``None`` (the paper's internal policies: raw vector times E_u^T).
        softcap: Gemma 2's final logit soft-cap (only with the final norm), or ``None``.

    >>> from bupo_core.models import tiny_model
    >>> from bupo_core.adapter import ArchitectureAdapter
    >>> head = PolicyHead.from_adapter(ArchitectureAdapter(tiny_model("llama")))
    >>> tuple(head.logits(torch.randn(3, 64)).shape), head.vocab_size
    ((3, 128), 128)
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    norm: nn.Module | None = None
    softcap: float | None = None

    @classmethod
    def from_adapter(cls, adapter, norm: Norm = "none", *, detach: bool = True) -> PolicyHead:
        """The head of ``adapter``'s model for ``norm`` (``detach=False`` keeps E_u in the graph)."""
        w, b = adapter.unembed_weight, adapter.unembed_bias
        if detach:
            w = w.detach()
            b = None if b is None else b.detach()
            w = w if w.dtype == torch.float32 else w.float()
            b = None if b is None else b.float()
        return cls(w, b, *head_parts(adapter, norm))

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d] -> [..., N] float32 logits (hold these only for a few vectors at a time)."""
        return project(x, self.weight, self.bias, self.softcap, self.norm)

    def chunk(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> PolicyChunk:
        """The policy of a few vectors ``x`` [c, d] (one chunk), ready for reducers."""
        return PolicyChunk(self.logits(x), targets, vectors=x)


# --------------------------------------------------------------------------- reducers
class PolicyChunk:
    """One chunk's policy: logits [c, N] float32, with probabilities/log-probs computed on demand.

    Reducers share the cached tensors, so a chunk's softmax is computed once whatever the number of
    statistics. ``targets`` ([c] token ids) is set when log-probs of given tokens are wanted;
    ``vectors`` ([c, d]) are the raw projected vectors, ``top_k`` the columns of top-k statistics.
    """

    def __init__(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor | None = None,
        top_k: int = 0,
        vectors: torch.Tensor | None = None,
    ) -> None:
        self.logits: torch.Tensor | None = logits
        self.targets = targets
        self.vectors = vectors
        self.top_k = top_k
        self._probs: torch.Tensor | None = None
        self._log_probs: torch.Tensor | None = None
        self._top: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def probs(self) -> torch.Tensor:
        """[c, N] softmax of the logits."""
        if self._probs is None:
            self._probs = torch.softmax(self.logits, dim=-1)  # type: ignore[arg-type]
        return self._probs

    @property
    def log_probs(self) -> torch.Tensor:
        """[c, N] log-softmax of the logits."""
        if self._log_probs is None:
            self._log_probs = torch.log_softmax(self.logits, dim=-1)  # type: ignore[arg-type]
        return self._log_probs

    def top(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probs [c, k], ids [c, k])`` of the ``k`` most likely tokens (cached for the largest k)."""
        if self._top is None or self._top[0].shape[-1] < k:
            t = self.probs.topk(k, dim=-1)
            self._top = (t.values, t.indices)
        return self._top[0][:, :k], self._top[1][:, :k]

    def log_normalizer(self) -> torch.Tensor:
        """[c] log-sum-exp of the logits, from the most likely token: ``z_max - ln p_max`` (no extra pass)."""
        if self._log_probs is not None:
            return self.logits[:, 0] - self._log_probs[:, 0]  # type: ignore[index]
        p1, i1 = self.top(1)
        return self.logits.gather(-1, i1).squeeze(-1) - p1[:, 0].log()  # type: ignore[union-attr]

    def release(self) -> torch.Tensor:
        """Drop the logits and cached log-probs and hand over the probabilities (to reuse their memory)."""
        p = self.probs
        self.logits = self._log_probs = self._probs = None
        return p


@dataclass(frozen=True)
class Reducer:
    """A per-row statistic of a policy chunk.

    Attributes:
        fn: ``fn(chunk) -> [c]`` (or ``[c, k]`` for ``per_token_k``).
        needs_targets: only computed when targets are given.
        per_token_k: the result has ``top_k`` columns (top-k ids/probs).
        dtype: result dtype.
        consumes: the reducer may overwrite the chunk's probabilities (it runs last).
        description: one line for docs and plots.
    """

    fn: Callable[[PolicyChunk], torch.Tensor]
    needs_targets: bool = False
    per_token_k: bool = False
    dtype: torch.dtype = torch.float32
    consumes: bool = False
    description: str = ""


REDUCERS: dict[str, Reducer] = {}


def register_reducer(name: str, reducer: Reducer) -> None:
    """Add (or replace) a statistic; :func:`reduce_policy` and the lens can then compute it by name."""
    REDUCERS[name] = reducer


def entropy_of_probs_(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) -sum p ln p over the last dimension, *overwriting* ``p`` (the one entropy formula).

    ``entr(p) = -p ln p`` with ``entr(0) = 0``, so zero probabilities (``-inf`` logits) are fine.
    When ``p`` needs a gradient it is left intact (in-place ops cannot be differentiated).
    """
    if p.requires_grad and torch.is_grad_enabled():
        return torch.special.entr(p).sum(-1)
    return torch.special.entr(p, out=p).sum(-1)


def _entropy(c: PolicyChunk) -> torch.Tensor:
    return entropy_of_probs_(c.release())  # p's own memory is reused: it is not needed afterwards


def _logprob(c: PolicyChunk) -> torch.Tensor:
    picked = c.logits.gather(-1, c.targets.unsqueeze(-1)).squeeze(-1)  # type: ignore[union-attr]
    return picked - c.log_normalizer()


register_reducer("entropy", Reducer(_entropy, consumes=True, description="entropy of the policy (nats)"))
register_reducer("logprob", Reducer(_logprob, needs_targets=True, description="log-probability of the target token"))
register_reducer(
    "vector_norm", Reducer(lambda c: c.vectors.float().norm(dim=-1), description="L2 norm of the raw vector")
)  # type: ignore[union-attr]
register_reducer(
    "topk_ids",
    Reducer(lambda c: c.top(c.top_k)[1], per_token_k=True, dtype=torch.long, description="most likely token ids"),
)
register_reducer(
    "topk_probs", Reducer(lambda c: c.top(c.top_k)[0], per_token_k=True, description="their probabilities")
)


def kl_divergence(p: PolicyChunk, q: PolicyChunk) -> torch.Tensor:
    """[c] KL(p || q) = sum_v p(v) (log p(v) - log q(v)) between two chunks of the same rows.

    The direction matters: this is the divergence *from* ``p`` *to* ``q`` (expectation under ``p``).
    """
    return (p.probs * (p.log_probs - q.log_probs)).sum(-1)


def reduce_policy(
    head: PolicyHead,
    vectors: torch.Tensor,
    statistics: Iterable[str] = ("entropy",),
    *,
    targets: torch.Tensor | None = None,
    top_k: int = 0,
    chunk_size: int = 1024,
    project_fn: Callable[[PolicyHead, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-row statistics of the policies of ``vectors`` [P, d], chunk by chunk, without grad.

    Args:
        head: the :class:`PolicyHead`.
        vectors: [P, d].
        statistics: names in :data:`REDUCERS` (those needing targets are skipped without them;
            ``topk_*`` are skipped when ``top_k == 0``).
        targets: [P] token ids for ``logprob``.
        top_k: columns of the ``topk_*`` statistics.
        chunk_size: rows per [chunk, N] block.
        project_fn: replaces ``head.logits`` (tests use it to observe chunk sizes).

    Returns:
        ``{name: [P] or [P, top_k]}`` on the vectors' device.

    >>> head = PolicyHead(torch.eye(4))
    >>> out = reduce_policy(head, torch.zeros(3, 4), ("entropy",), chunk_size=2)
    >>> [round(v, 4) for v in out["entropy"].tolist()]
    [1.3863, 1.3863, 1.3863]
    """
    P = vectors.shape[0]
    k = min(int(top_k), head.vocab_size)
    names = [n for n in statistics if not (REDUCERS[n].needs_targets and targets is None)]
    names = [n for n in names if not (REDUCERS[n].per_token_k and k == 0)]
    names.sort(key=lambda n: REDUCERS[n].consumes)  # consuming reducers last
    if targets is not None and targets.reshape(-1).shape[0] != P:
        raise ValueError(f"{P} vectors but {targets.reshape(-1).shape[0]} targets")
    out = {
        n: torch.empty((P, k) if REDUCERS[n].per_token_k else (P,), dtype=REDUCERS[n].dtype, device=vectors.device)
        for n in names
    }
    proj = project_fn or (lambda h, x: h.logits(x))
    with torch.no_grad():
        for s in range(0, P, chunk_size):
            t = None if targets is None else targets.reshape(-1)[s : s + chunk_size].to(vectors.device)
            x = vectors[s : s + chunk_size]
            chunk = PolicyChunk(proj(head, x), t, k, x)
            if k and any(REDUCERS[n].per_token_k for n in names):
                chunk.top(k)  # one top-k pass serves top-k and the log-normaliser
            for n in names:
                out[n][s : s + chunk_size] = REDUCERS[n].fn(chunk)
            del chunk
    return out


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    """Slices of ``range(n)`` of at most ``size`` rows."""
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def default_chunk_size(vocab_size: int, chunk_mib: float = 16.0) -> int:
    """Rows per chunk so that one chunk's float32 [chunk, N] logits take about ``chunk_mib`` MiB.

    >>> default_chunk_size(49152)
    85
    """
    return max(1, int(chunk_mib * 2**20 // (4 * vocab_size)))


# --------------------------------------------------------------------------- differentiable path
class _ChunkedLogProbEntropy(torch.autograd.Function):
    """log p(target) and entropy of softmax(softcap(h W^T + b)) per row, chunked in forward and backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, softcap):  # type: ignore[override]
        w, b = weight.float(), None if bias is None else bias.float()  # cast once, not per chunk
        n = hidden.shape[0]
        logp = hidden.new_empty(n, dtype=torch.float32)
        ent = hidden.new_empty(n, dtype=torch.float32)
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            for s in range(0, n, chunk_size):
                lp = torch.log_softmax(project(hidden[s : s + chunk_size], w, b, softcap), -1)
                logp[s : s + chunk_size] = lp.gather(1, targets[s : s + chunk_size, None]).squeeze(1)
                ent[s : s + chunk_size] = entropy_of_probs_(lp.exp())
        ctx.save_for_backward(hidden, weight, bias, targets, ent)
        ctx.chunk_size, ctx.softcap = chunk_size, softcap
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):  # type: ignore[override]
        hidden, weight, bias, targets, ent = ctx.saved_tensors
        cs, softcap = ctx.chunk_size, ctx.softcap
        w, b = weight.float(), None if bias is None else bias.float()
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        g_h = torch.zeros_like(hidden) if need_h else None
        g_w = torch.zeros_like(w) if need_w else None
        g_b = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device) if (need_b and bias is not None) else None
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            for s in range(0, hidden.shape[0], cs):
                h = hidden[s : s + cs]
                z = project(h, w, b, softcap)
                lp = torch.log_softmax(z, -1)
                p = lp.exp()
                # d logp_t / dz = onehot(t) - p ;  d H / dz = -p (log p + H)
                gz = -p * g_logp[s : s + cs, None].float()
                gz.scatter_add_(1, targets[s : s + cs, None], g_logp[s : s + cs, None].float())
                if g_ent is not None:
                    gz = gz - p * (lp + ent[s : s + cs, None]) * g_ent[s : s + cs, None].float()
                if softcap:
                    gz = gz * (1 - (z / softcap) ** 2)
                if g_h is not None:
                    g_h[s : s + cs] = (gz @ w).to(hidden.dtype)
                if g_w is not None:
                    g_w += gz.T @ h.float()
                if g_b is not None:
                    g_b += gz.sum(0)
        return (
            g_h,
            g_w.to(weight.dtype) if g_w is not None else None,
            g_b.to(bias.dtype) if g_b is not None else None,
            None,
            None,
            None,
        )


def chunked_logprob_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable ``(log p(targets) [n], entropy [n])`` of softmax(softcap(hidden W^T + b)), float32.

    Args:
        hidden: [n, d] (already normed for the full policy; raw H^l for an internal one).
        weight: [N, d] E_u; gradients reach ``hidden``, ``weight`` and ``bias``.
        targets: [n] token ids.

    Peak extra memory in forward and backward is one [chunk_size, N] float32 block.
    """
    return _ChunkedLogProbEntropy.apply(hidden, weight, bias, targets.long(), int(chunk_size), softcap)


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability and entropy of the policy softmax(hidden E_u^T) at the masked positions.

    Only positions with ``mask`` set are projected, ``chunk_size`` tokens at a time, in float32,
    also inside a bf16 autocast region (autocast is disabled around the projection: in bf16 the
    logits of raw deep-layer states, whose norm reaches ~10^3, would be off by whole nats).
    The backward recomputes each chunk's logits, so memory beyond the inputs is one
    [chunk_size x N] float32 block in both directions. Gradients reach ``hidden`` and ``weight``.

    Args:
        hidden: [B, T, d] vectors fed to the unembedding (the normed final state for the full
            policy; the raw H^l for the internal layer policy).
        weight: E_u, [N, d].
        targets: [B, T] the token whose probability is wanted at each position (the next token).
        mask: [B, T] 0/1: positions to compute (the prediction mask of the response).
        bias: optional [N] unembedding bias.
        softcap: Gemma 2's final logit soft-capping value (with the final norm only), or ``None``.
        chunk_size: tokens per chunk.

    Returns:
        ``(logp, entropy)``, each [B, T] float32, 0 where ``mask`` is 0. Entropy in nats.

    >>> h, w = torch.randn(2, 3, 4), torch.randn(7, 4)
    >>> t, m = torch.randint(0, 7, (2, 3)), torch.ones(2, 3)
    >>> lp, ent = token_logprobs(h, w, t, m, chunk_size=2)
    >>> ref = torch.log_softmax(h @ w.T, -1).gather(-1, t[..., None]).squeeze(-1)
    >>> torch.allclose(lp, ref, atol=1e-5)
    True
    """
    sel = mask.bool()
    lp, ent = chunked_logprob_entropy(
        hidden[sel], weight, targets[sel].long(), bias=bias, softcap=softcap, chunk_size=chunk_size
    )
    out_lp = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device).masked_scatter(sel, lp)
    out_ent = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device).masked_scatter(sel, ent)
    return out_lp, out_ent


def policy_logprobs(
    model: nn.Module,
    batch: PackedBatch,
    *,
    layer: int | None = None,
    adapter: ArchitectureAdapter | None = None,
    chunk_size: int = 1024,
    mask: torch.Tensor | None = None,
    norm: Norm = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies of the sampled tokens under the full or an internal policy (IPA's core).

    Args:
        model: the causal LM.
        batch: a :class:`~bupo_core.sequences.PackedBatch` of prompt+response rows ([B, T]).
        layer: ``None`` for the full policy softmax(LN_final(H^L) E_u^T) (with Gemma 2's soft-cap);
            ``l`` (paper numbering) for the internal layer policy softmax(H^l E_u^T), computed by
            running only the embedding and blocks 1..l.
        adapter: the model's :class:`~bupo_core.adapter.ArchitectureAdapter` (built when ``None``).
        chunk_size: tokens per log-softmax chunk.
        mask: [B, T] positions to compute (default ``batch.prediction_mask``).
        norm: for an internal policy, ``"none"`` (the paper's raw H^l) or ``"final"`` (the final
            norm first, and Gemma 2's soft-cap: softmax(LN_final(H^l) E_u^T)); see :func:`head_parts`.

    Returns:
        ``(logp, entropy)``: [B, T] float32, 0 outside the mask. Gradients flow if enabled.
    """
    adapter = adapter or ArchitectureAdapter(model)
    mask = batch.prediction_mask if mask is None else mask
    if layer is None:  # the model's own head: its final norm already ran inside the base model
        out = base_model(model)(input_ids=batch.input_ids, use_cache=False, **forward_kwargs(batch.attention_mask))
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        softcap = head_parts(adapter, "final")[1]
    else:
        hidden = forward_to_layer(model, batch.input_ids, layer, batch.attention_mask, adapter=adapter)
        norm_module, softcap = head_parts(adapter, norm)
        if norm_module is not None:
            hidden = norm_module(hidden)
    return token_logprobs(
        hidden,
        adapter.unembed_weight,
        batch.targets,
        mask,
        bias=adapter.unembed_bias,
        softcap=softcap,
        chunk_size=chunk_size,
    )
