"""Internal policies (layer, attention, FFN) and their per-token statistics in bounded memory.

An internal policy is the distribution you get by pushing one vector of the residual stream
through the unembedding E_u (``method.md`` section 2):

* layer policy      pi^l_Layer = softmax(H^l E_u^T)           (l = 0..L)
* attention policy  pi^l_ATTN  = softmax(A^l E_u^T)           (l = 1..L)
* FFN policy        pi^l_FFN   = softmax(F^l E_u^T)           (l = 1..L)
* module inputs     softmax(LN1(H^{l-1}) E_u^T), softmax(LN2(H^{l-1} + A^l) E_u^T), needed for the
  attention and FFN entropy change.

``norm="none"`` (the default) is the paper's choice: the raw vector times E_u^T. ``norm="final"``
applies the model's final norm (and Gemma 2's logit soft-cap) first, i.e. the classic logit lens;
with it, the layer-L policy *is* the model's own output distribution. The same ``norm`` applies to
every projected vector.

Memory design. Logits for every layer, module and token at once would be
(5L+1) x tokens x N floats (tens of GB). :func:`internal_policy_statistics` instead computes the
statistics *during* the forward pass: a hook on each module gathers that module's vectors at the
chosen positions ([positions, d], small), reduces them chunk by chunk of tokens to per-token
scalars (entropy, log-prob of the target, top-k, norm) and drops them. At any time at most one
chunk's [chunk, N] float32 logits (plus its log-softmax) exist, and the model's own lm_head is never
run over the sequence. Memory therefore does not grow with layers x tokens x vocabulary; the
benchmark ``bench/lens_memory.py`` measures it against the authors' approach.

Layers use the paper's numbering throughout: 0 = embedding output, l in 1..L = block l.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Sequence

import torch
from torch import nn

from .adapter import ArchitectureAdapter, Norm, first_tensor
from .capture import ResidualCapture, hooks, position_ids_from_mask
from .entropy import (
    attn_entropy_change,
    ffn_entropy_change,
    layer_entropy_change,
)
from .errors import InputFormatError

Kind = Literal["layer", "attn_input", "attn", "ffn_input", "ffn"]
#: The five kinds of projected vectors, in the order a block computes them.
KINDS: tuple[Kind, ...] = ("layer", "attn_input", "attn", "ffn_input", "ffn")
#: What each kind is, in the paper's notation (used in plots and docs).
KIND_LABELS: dict[str, str] = {
    "layer": "H^l (residual stream)",
    "attn_input": "LN1(H^{l-1}) (attention input)",
    "attn": "A^l (attention write)",
    "ffn_input": "LN2(H^{l-1}+A^l) (FFN input)",
    "ffn": "F^l (FFN write)",
}


def _adapter(model_or_adapter: nn.Module | ArchitectureAdapter) -> ArchitectureAdapter:
    if isinstance(model_or_adapter, ArchitectureAdapter):
        return model_or_adapter
    return ArchitectureAdapter(model_or_adapter)


def _check_norm(norm: str) -> None:
    if norm not in ("none", "final"):
        raise ValueError(
            f"norm must be 'none' (the paper's internal policy: raw vector x E_u^T) or 'final' "
            f"(logit lens: final norm first), got {norm!r}"
        )


# --------------------------------------------------------------------------- policies
def internal_policy_logits(
    model_or_adapter: nn.Module | ArchitectureAdapter, vectors: torch.Tensor, norm: Norm = "none"
) -> torch.Tensor:
    """Logits X E_u^T (after the final norm when ``norm="final"``), in float32.

    Args:
        vectors: [..., d] any residual-stream vectors (H^l, A^l, F^l, module inputs).
        norm: ``"none"`` (paper) or ``"final"`` (logit lens).

    Returns:
        [..., N] float32 logits. Hold these only for a few tokens at a time (N is large).
    """
    _check_norm(norm)
    return _adapter(model_or_adapter).logits(vectors, norm=norm, dtype=torch.float32)


def internal_policy(
    model_or_adapter: nn.Module | ArchitectureAdapter, vectors: torch.Tensor, norm: Norm = "none"
) -> torch.Tensor:
    """The internal policy softmax(X E_u^T) of any vectors: [..., d] -> [..., N] float32 probabilities."""
    return torch.softmax(internal_policy_logits(model_or_adapter, vectors, norm), dim=-1)


def internal_layer_policy(
    model_or_adapter: nn.Module | ArchitectureAdapter, capture: ResidualCapture, layer: int, norm: Norm = "none"
) -> torch.Tensor:
    """pi^l_Layer = softmax(H^l E_u^T) for a captured forward pass.

    Args:
        capture: from :func:`bupo_core.capture.capture_residuals` (keep few positions: the result
            is [batch, positions, N]).
        layer: paper numbering, 0..L (0 = embedding output).

    Returns:
        [batch, positions, N] float32 probabilities.
    """
    adapter = _adapter(model_or_adapter)
    adapter.check_layer(layer, allow_embedding=True)
    return internal_policy(adapter, capture.resid(layer), norm)


def internal_attention_policy(
    model_or_adapter: nn.Module | ArchitectureAdapter, capture: ResidualCapture, layer: int, norm: Norm = "none"
) -> torch.Tensor:
    """pi^l_ATTN = softmax(A^l E_u^T); ``layer`` in 1..L. Returns [batch, positions, N]."""
    adapter = _adapter(model_or_adapter)
    adapter.check_layer(layer, allow_embedding=False)
    return internal_policy(adapter, capture.attn_out(layer), norm)


def internal_ffn_policy(
    model_or_adapter: nn.Module | ArchitectureAdapter, capture: ResidualCapture, layer: int, norm: Norm = "none"
) -> torch.Tensor:
    """pi^l_FFN = softmax(F^l E_u^T); ``layer`` in 1..L. Returns [batch, positions, N]."""
    adapter = _adapter(model_or_adapter)
    adapter.check_layer(layer, allow_embedding=False)
    return internal_policy(adapter, capture.ffn_out(layer), norm)


def captured_vectors(capture: ResidualCapture, kind: Kind, layer: int) -> torch.Tensor:
    """The captured vector of ``kind`` at paper layer ``layer`` ([batch, positions, d])."""
    getters: dict[str, Callable[[int], torch.Tensor]] = {
        "layer": capture.resid,
        "attn_input": capture.attn_in,
        "attn": capture.attn_out,
        "ffn_input": capture.ffn_in,
        "ffn": capture.ffn_out,
    }
    if kind not in getters:
        raise ValueError(f"unknown kind {kind!r}; use one of {KINDS}")
    return getters[kind](layer)


# --------------------------------------------------------------------------- chunked statistics
def _float32_unembedding(adapter: ArchitectureAdapter) -> tuple[torch.Tensor, torch.Tensor | None]:
    """E_u (and bias) in float32, cast once per call site (bf16 models would otherwise cast per chunk)."""
    w = adapter.unembed_weight.detach()
    b = adapter.unembed_bias
    return (w if w.dtype == torch.float32 else w.float()), (None if b is None else b.detach().float())


def _project(
    adapter: ArchitectureAdapter, x: torch.Tensor, norm: Norm, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """float32 logits of ``x`` [c, d]; the same maths as ``ArchitectureAdapter.logits`` with a pre-cast E_u.

    Autocast is disabled here, so the projection stays float32 inside a bf16 autocast region.
    """
    with torch.autocast(x.device.type, enabled=False):
        h = adapter.apply_norm(x, norm).float()
        out = torch.nn.functional.linear(h, weight.float(), None if bias is None else bias.float())
        cap = adapter.logit_softcap
        if norm == "final" and cap:
            out = torch.tanh(out / cap) * cap
    return out


@dataclass
class VectorStatistics:
    """Per-token statistics of the internal policy of P vectors.

    Attributes:
        entropy: [P] float32 entropies (nats).
        vector_norm: [P] float32 L2 norms of the *raw* vectors (before any final norm).
        logprob: [P] float32 log-probability of the given target tokens, or ``None``.
        topk_ids: [P, k] most likely token ids (k = 0 gives [P, 0]).
        topk_probs: [P, k] their probabilities.
    """

    entropy: torch.Tensor
    vector_norm: torch.Tensor
    logprob: torch.Tensor | None
    topk_ids: torch.Tensor
    topk_probs: torch.Tensor


def default_chunk_size(vocab_size: int, chunk_mib: float = 16.0) -> int:
    """Tokens per chunk so that one chunk's float32 [chunk, N] logits take about ``chunk_mib`` MiB.

    >>> default_chunk_size(49152)
    85
    """
    return max(1, int(chunk_mib * 2**20 // (4 * vocab_size)))


@torch.no_grad()
def policy_statistics(
    model_or_adapter: nn.Module | ArchitectureAdapter,
    vectors: torch.Tensor,
    *,
    norm: Norm = "none",
    targets: torch.Tensor | None = None,
    top_k: int = 0,
    chunk_size: int | None = None,
    unembedding: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> VectorStatistics:
    """Entropy, target log-prob, top-k and vector norm of the internal policy of P vectors, chunk by chunk.

    Only one chunk's [chunk, N] float32 logits (and their log-softmax) exist at a time.

    Args:
        vectors: [P, d] (or [..., d], flattened) vectors in any dtype.
        norm: ``"none"`` (paper) or ``"final"`` (logit lens).
        targets: optional [P] token ids whose log-probability to report.
        top_k: how many most likely tokens to keep per vector (0 = none).
        chunk_size: tokens per chunk (default: :func:`default_chunk_size` of the vocabulary).
        unembedding: a pre-cast float32 ``(E_u, bias)`` to reuse across calls (internal).

    Returns:
        :class:`VectorStatistics` with tensors on the vectors' device.
    """
    _check_norm(norm)
    adapter = _adapter(model_or_adapter)
    x = vectors.reshape(-1, vectors.shape[-1])
    P = x.shape[0]
    if targets is not None:
        targets = targets.reshape(-1)
        if targets.shape[0] != P:
            raise ValueError(f"{P} vectors but {targets.shape[0]} targets")
    chunk = chunk_size or default_chunk_size(adapter.vocab_size)
    weight, bias = unembedding if unembedding is not None else _float32_unembedding(adapter)
    k = min(int(top_k), adapter.vocab_size)
    ent = torch.empty(P, dtype=torch.float32, device=x.device)
    lp = torch.empty(P, dtype=torch.float32, device=x.device) if targets is not None else None
    ids = torch.empty((P, k), dtype=torch.long, device=x.device)
    probs = torch.empty((P, k), dtype=torch.float32, device=x.device)
    for s in range(0, P, chunk):
        # Few passes over [chunk, N] (they are memory-bound): softmax, then entr(p) = -p ln p in place.
        logits = _project(adapter, x[s : s + chunk], norm, weight, bias)
        p = torch.softmax(logits, dim=-1)
        if k or lp is not None:
            top = p.topk(max(k, 1), dim=-1)
            if k:
                ids[s : s + chunk] = top.indices[:, :k]
                probs[s : s + chunk] = top.values[:, :k]
            if lp is not None:
                # log-sum-exp from the most likely token: lse = x_max - ln p_max (p_max >= 1/N, no underflow)
                lse = logits.gather(-1, top.indices[:, :1]).squeeze(-1) - top.values[:, 0].log()
                picked = logits.gather(-1, targets[s : s + chunk].to(x.device).unsqueeze(-1)).squeeze(-1)
                lp[s : s + chunk] = picked - lse
        del logits
        ent[s : s + chunk] = torch.special.entr(p, out=p).sum(-1)
        del p
    return VectorStatistics(
        entropy=ent, vector_norm=x.float().norm(dim=-1), logprob=lp, topk_ids=ids, topk_probs=probs
    )


@dataclass
class LensConfig:
    """How :func:`internal_policy_statistics` computes statistics.

    Attributes:
        norm: ``"none"`` (the paper's internal policies, the default) or ``"final"`` (logit lens:
            the final norm is applied to every projected vector).
        chunk_size: tokens per chunk of [chunk, N] logits; ``None`` picks the largest chunk whose
            float32 logits fit in ``chunk_mib``.
        chunk_mib: memory budget (MiB) for one chunk's logits when ``chunk_size`` is ``None``.
        top_k: most likely tokens to keep per vector (0 = none; top-k for every layer and module
            costs [5L+1, P, k] integers).
        with_logprobs: also record the log-probability of each position's target token under
            every internal policy.
        kinds: which vectors to analyse (subset of :data:`KINDS`).
    """

    norm: Norm = "none"
    chunk_size: int | None = None
    chunk_mib: float = 16.0
    top_k: int = 0
    with_logprobs: bool = True
    kinds: tuple[Kind, ...] = KINDS

    def __post_init__(self) -> None:
        _check_norm(self.norm)
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise ValueError(f"unknown kinds {bad}; use a subset of {KINDS}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclass
class InternalPolicyStatistics:
    """Per-token statistics of every internal policy at P chosen positions.

    For each kind (:data:`KINDS`), tensors have one row per layer: ``"layer"`` has L+1 rows
    (H^0..H^L, row = paper layer); the module kinds have L rows (row ``i`` = layer ``i + 1``).

    Attributes:
        num_layers: L.
        vocab_size: N.
        norm: the projection used (``"none"`` or ``"final"``).
        entropy: kind -> [rows, P] float32 entropies (nats).
        vector_norm: kind -> [rows, P] L2 norms of the raw vectors.
        logprob: kind -> [rows, P] log-prob of ``targets`` (empty dict when not requested).
        topk_ids: kind -> [rows, P, k] (empty dict when ``top_k == 0``).
        topk_probs: kind -> [rows, P, k].
        positions: [P, 2] (row, column) of each position in the input batch.
        targets: [P] the next token at each position (the token the position predicts), or ``None``.
        sequence_index: [P] which sequence (across concatenated batches) each position belongs to.
    """

    num_layers: int
    vocab_size: int
    norm: str
    entropy: dict[str, torch.Tensor]
    vector_norm: dict[str, torch.Tensor]
    logprob: dict[str, torch.Tensor] = field(default_factory=dict)
    topk_ids: dict[str, torch.Tensor] = field(default_factory=dict)
    topk_probs: dict[str, torch.Tensor] = field(default_factory=dict)
    positions: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    sequence_index: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        """P, the number of positions analysed."""
        first = next(iter(self.entropy.values()))
        return int(first.shape[-1])

    def _need(self, *kinds: str) -> None:
        missing = [k for k in kinds if k not in self.entropy]
        if missing:
            raise ValueError(f"statistics for {missing} were not computed; include them in LensConfig.kinds")

    # per-token entropy changes: [L, P]
    def layer_entropy_change(self) -> torch.Tensor:
        """[L, P] dH^l per token (row ``i`` = layer ``i + 1``)."""
        self._need("layer")
        return layer_entropy_change(self.entropy["layer"])

    def attn_entropy_change(self) -> torch.Tensor:
        """[L, P] dH^l_ATTN = H(A^l) - H(LN1(H^{l-1})) per token."""
        self._need("attn", "attn_input")
        return attn_entropy_change(self.entropy["attn"], self.entropy["attn_input"])

    def ffn_entropy_change(self) -> torch.Tensor:
        """[L, P] dH^l_FFN = H(F^l) - H(LN2(H^{l-1} + A^l)) per token."""
        self._need("ffn", "ffn_input")
        return ffn_entropy_change(self.entropy["ffn"], self.entropy["ffn_input"])

    def mean_entropy(self, kind: str) -> torch.Tensor:
        """Token-weighted mean entropy per layer for one kind: [rows]."""
        self._need(kind)
        return self.entropy[kind].mean(-1)

    @staticmethod
    def concatenate(parts: Sequence["InternalPolicyStatistics"]) -> "InternalPolicyStatistics":
        """Pool the positions of several batches (token-weighted means then weigh every token once)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]

        def cat(attr: str) -> dict[str, torch.Tensor]:
            dicts = [getattr(p, attr) for p in parts]
            return {k: torch.cat([d[k] for d in dicts], dim=1) for k in dicts[0]}

        seq = []
        offset = 0
        for p in parts:
            idx = p.sequence_index if p.sequence_index is not None else torch.zeros(p.num_tokens, dtype=torch.long)
            seq.append(idx + offset)
            offset += int(idx.max()) + 1 if len(idx) else 0
        return InternalPolicyStatistics(
            num_layers=first.num_layers,
            vocab_size=first.vocab_size,
            norm=first.norm,
            entropy=cat("entropy"),
            vector_norm=cat("vector_norm"),
            logprob=cat("logprob"),
            topk_ids=cat("topk_ids"),
            topk_probs=cat("topk_probs"),
            positions=torch.cat([p.positions for p in parts]) if all(p.positions is not None for p in parts) else None,
            targets=torch.cat([p.targets for p in parts]) if all(p.targets is not None for p in parts) else None,
            sequence_index=torch.cat(seq),
        )


def _positions_mask(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor | None
) -> torch.Tensor:
    if positions is None:
        mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    else:
        if positions.shape != input_ids.shape:
            raise InputFormatError(
                f"positions must be a [batch, seq] 0/1 mask like input_ids {tuple(input_ids.shape)}, got "
                f"{tuple(positions.shape)}; use PackedBatch.prediction_mask for response tokens"
            )
        mask = positions.bool()
        if attention_mask is not None and bool((mask & ~attention_mask.bool()).any()):
            raise InputFormatError("positions select padding tokens; use PackedBatch.prediction_mask")
    if not bool(mask.any()):
        raise InputFormatError("no position selected: every response is empty, so there is nothing to analyse")
    return mask


@torch.no_grad()
def internal_policy_statistics(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    positions: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    config: LensConfig | None = None,
    adapter: ArchitectureAdapter | None = None,
) -> InternalPolicyStatistics:
    """Statistics of every layer and module policy at the chosen positions, in one bounded-memory forward.

    Hooks reduce each module's vectors to per-token scalars as the forward runs (see the module
    docstring); the model's own lm_head is not run.

    Args:
        model: a supported ``*ForCausalLM``.
        input_ids: [B, T] token ids (left padding allowed).
        attention_mask: [B, T] 0/1.
        positions: [B, T] 0/1 mask of the positions to analyse; use ``PackedBatch.prediction_mask``
            (positions whose next-token prediction is a response token). Default: every real token.
        targets: [B, T] token each position predicts (``PackedBatch.targets``), for log-probs.
        config: a :class:`LensConfig`.
        adapter: reuse an adapter.

    Returns:
        :class:`InternalPolicyStatistics` on the CPU.

    >>> from bupo_core.models import tiny_model
    >>> stats = internal_policy_statistics(tiny_model("llama"), torch.tensor([[1, 2, 3, 4]]))
    >>> tuple(stats.entropy["layer"].shape), tuple(stats.entropy["ffn"].shape)
    ((3, 4), (2, 4))
    """
    cfg = config or LensConfig()
    adapter = adapter or ArchitectureAdapter(model)
    L = adapter.num_layers
    device = input_ids.device
    mask = _positions_mask(input_ids, attention_mask, positions).to(device)
    pos = mask.nonzero().cpu()
    tgt = targets.to(device)[mask] if targets is not None else None
    want_lp = cfg.with_logprobs and tgt is not None
    rows = {k: (L + 1 if k == "layer" else L) for k in cfg.kinds}
    P = int(mask.sum())
    out: dict[str, dict[str, torch.Tensor]] = {
        "entropy": {k: torch.full((r, P), float("nan")) for k, r in rows.items()},
        "vector_norm": {k: torch.full((r, P), float("nan")) for k, r in rows.items()},
        "logprob": {k: torch.full((r, P), float("nan")) for k, r in rows.items()} if want_lp else {},
        "topk_ids": {k: torch.zeros((r, P, cfg.top_k), dtype=torch.long) for k, r in rows.items()} if cfg.top_k else {},
        "topk_probs": {k: torch.zeros((r, P, cfg.top_k)) for k, r in rows.items()} if cfg.top_k else {},
    }
    filled: set[tuple[str, int]] = set()
    unembedding = _float32_unembedding(adapter)

    def record(kind: str, row: int, tensor: torch.Tensor) -> None:
        vec = tensor[mask]  # [P, d]
        st = policy_statistics(
            adapter, vec, norm=cfg.norm, targets=tgt if want_lp else None, top_k=cfg.top_k,
            chunk_size=cfg.chunk_size or default_chunk_size(adapter.vocab_size, cfg.chunk_mib), unembedding=unembedding,
        )
        out["entropy"][kind][row] = st.entropy.cpu()
        out["vector_norm"][kind][row] = st.vector_norm.cpu()
        if want_lp:
            out["logprob"][kind][row] = st.logprob.cpu()  # type: ignore[union-attr]
        if cfg.top_k:
            out["topk_ids"][kind][row] = st.topk_ids.cpu()
            out["topk_probs"][kind][row] = st.topk_probs.cpu()
        filled.add((kind, row))

    regs: list[tuple[nn.Module, str, Callable]] = []
    if "layer" in rows:

        def pre_first(module: nn.Module, args: tuple, kwargs: dict) -> None:
            h = first_tensor(args[0]) if args else kwargs["hidden_states"]
            record("layer", 0, h)

        regs.append((adapter.blocks[0], "pre", pre_first))
    role_of = {"attn_input": "ln1", "attn": "attn_write", "ffn_input": "ln2", "ffn": "ffn_write"}
    for i, block in enumerate(adapter.blocks):
        if "layer" in rows:

            def out_hook(module: nn.Module, args: tuple, output: object, i: int = i) -> None:
                record("layer", i + 1, first_tensor(output))

            regs.append((block, "forward", out_hook))
        for kind, role in role_of.items():
            if kind not in rows:
                continue

            def role_hook(module: nn.Module, args: tuple, output: object, i: int = i, kind: str = kind) -> None:
                record(kind, i, first_tensor(output))

            regs.append((getattr(block, getattr(adapter.family, role)), "forward", role_hook))

    kwargs: dict = {}
    if attention_mask is not None:
        am = attention_mask.to(device)
        kwargs = dict(attention_mask=am, position_ids=position_ids_from_mask(am))
    base = model.base_model if hasattr(model, "base_model") else model
    with hooks(regs):
        base(input_ids=input_ids, use_cache=False, **kwargs)
    expected = sum(rows.values())
    if len(filled) != expected:
        raise RuntimeError(
            f"only {len(filled)} of {expected} hooks fired: the adapter entry for {adapter.family.name} is wrong"
        )
    return InternalPolicyStatistics(
        num_layers=L,
        vocab_size=adapter.vocab_size,
        norm=cfg.norm,
        positions=pos,
        targets=tgt.cpu() if tgt is not None else None,
        sequence_index=pos[:, 0].clone(),
        **out,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- convenience
@torch.no_grad()
def top_tokens(
    model_or_adapter: nn.Module | ArchitectureAdapter,
    vector: torch.Tensor,
    tokenizer,
    *,
    k: int = 10,
    norm: Norm = "none",
) -> list[tuple[str, float]]:
    """The ``k`` most likely tokens of the internal policy of one vector, as ``(text, probability)``.

    Args:
        vector: [d] one residual-stream vector.
    """
    st = policy_statistics(model_or_adapter, vector.reshape(1, -1), norm=norm, top_k=k)
    return [
        (tokenizer.decode([int(i)]), float(p)) for i, p in zip(st.topk_ids[0].tolist(), st.topk_probs[0].tolist())
    ]


def iter_kinds(kinds: Iterable[str] = KINDS) -> list[str]:
    """Validate and list kinds (helper for callers that take a user's choice)."""
    out = list(kinds)
    bad = [k for k in out if k not in KINDS]
    if bad:
        raise ValueError(f"unknown kinds {bad}; use a subset of {KINDS}")
    return out
