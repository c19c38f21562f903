"""Internal policies (layer, attention, FFN) and their per-token statistics in bounded memory.

An internal policy is the distribution you get by pushing one vector of the residual stream
through the unembedding E_u (the paper's internal layer and modular policies):

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .adapter import ArchitectureAdapter, Norm
from .capture import (
    KIND_LABELS,  # noqa: F401  (re-exported: widgets and docs use bupo_core.lens.KIND_LABELS)
    KINDS,
    Kind,
    ResidualCapture,
    base_model,
    check_kinds,
    forward_kwargs,
    hooks,
    kind_rows,
    residual_hooks,
)
from .entropy import (
    attn_entropy_change,
    ffn_entropy_change,
    layer_entropy_change,
)
from .errors import InputFormatError
from .policy_head import REDUCERS, PolicyHead, check_norm, default_chunk_size, reduce_policy


def _adapter(model_or_adapter: nn.Module | ArchitectureAdapter) -> ArchitectureAdapter:
    if isinstance(model_or_adapter, ArchitectureAdapter):
        return model_or_adapter
    return ArchitectureAdapter(model_or_adapter)


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
    return PolicyHead.from_adapter(_adapter(model_or_adapter), check_norm(norm), detach=False).logits(vectors)


def internal_policy(
    model_or_adapter: nn.Module | ArchitectureAdapter, vectors: torch.Tensor, norm: Norm = "none"
) -> torch.Tensor:
    """The internal policy softmax(X E_u^T) of any vectors: [..., d] -> [..., N] float32 probabilities."""
    return torch.softmax(internal_policy_logits(model_or_adapter, vectors, norm), dim=-1)


def captured_policy(
    model_or_adapter: nn.Module | ArchitectureAdapter,
    capture: ResidualCapture,
    kind: Kind,
    layer: int,
    norm: Norm = "none",
) -> torch.Tensor:
    """softmax(X E_u^T) of the captured vector X of ``kind`` at paper layer ``layer``: [batch, positions, N].

    Keep few positions in the capture: the result holds N probabilities per position.
    """
    return internal_policy(model_or_adapter, captured_vectors(capture, kind, layer), norm)


def internal_layer_policy(
    model_or_adapter: nn.Module | ArchitectureAdapter, capture: ResidualCapture, layer: int, norm: Norm = "none"
) -> torch.Tensor:
    """pi^l_Layer = softmax(H^l E_u^T), ``layer`` in 0..L (0 = embedding output); [batch, positions, N] float32."""
    return captured_policy(model_or_adapter, capture, "layer", layer, norm)


def internal_attention_policy(
    model_or_adapter: nn.Module | ArchitectureAdapter, capture: ResidualCapture, layer: int, norm: Norm = "none"
) -> torch.Tensor:
    """pi^l_ATTN = softmax(A^l E_u^T); ``layer`` in 1..L. Returns [batch, positions, N]."""
    return captured_policy(model_or_adapter, capture, "attn", layer, norm)


def internal_ffn_policy(
    model_or_adapter: nn.Module | ArchitectureAdapter, capture: ResidualCapture, layer: int, norm: Norm = "none"
) -> torch.Tensor:
    """pi^l_FFN = softmax(F^l E_u^T); ``layer`` in 1..L. Returns [batch, positions, N]."""
    return captured_policy(model_or_adapter, capture, "ffn", layer, norm)


def captured_vectors(capture: ResidualCapture, kind: Kind, layer: int) -> torch.Tensor:
    """The captured vector of ``kind`` at paper layer ``layer`` ([batch, positions, d])."""
    getters = {
        "layer": capture.resid,
        "attn_input": capture.attn_in,
        "attn": capture.attn_out,
        "ffn_input": capture.ffn_in,
        "ffn": capture.ffn_out,
    }
    check_kinds([kind])
    return getters[kind](layer)


# --------------------------------------------------------------------------- chunked statistics
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


@torch.no_grad()
def policy_statistics(
    model_or_adapter: nn.Module | ArchitectureAdapter,
    vectors: torch.Tensor,
    *,
    norm: Norm = "none",
    targets: torch.Tensor | None = None,
    top_k: int = 0,
    chunk_size: int | None = None,
    unembedding: PolicyHead | None = None,
) -> VectorStatistics:
    """Entropy, target log-prob, top-k and vector norm of the internal policy of P vectors, chunk by chunk.

    Only one chunk's [chunk, N] float32 logits (and their log-softmax) exist at a time.

    Args:
        vectors: [P, d] (or [..., d], flattened) vectors in any dtype.
        norm: ``"none"`` (paper) or ``"final"`` (logit lens).
        targets: optional [P] token ids whose log-probability to report.
        top_k: how many most likely tokens to keep per vector (0 = none).
        chunk_size: tokens per chunk (default: :func:`default_chunk_size` of the vocabulary).
        unembedding: a :class:`~bupo_core.policy_head.PolicyHead` to reuse across calls (its ``norm`` wins).

    Returns:
        :class:`VectorStatistics` with tensors on the vectors' device.
    """
    adapter = _adapter(model_or_adapter)
    head = unembedding if unembedding is not None else PolicyHead.from_adapter(adapter, check_norm(norm))
    x = vectors.reshape(-1, vectors.shape[-1])
    if targets is not None and targets.reshape(-1).shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} vectors but {targets.reshape(-1).shape[0]} targets")
    k = min(int(top_k), adapter.vocab_size)
    out = reduce_policy(
        head,
        x,
        ("topk_ids", "topk_probs", "logprob", "vector_norm", "entropy"),
        targets=targets,
        top_k=k,
        chunk_size=chunk_size or default_chunk_size(adapter.vocab_size),
    )
    empty = torch.empty((x.shape[0], 0), device=x.device)
    return VectorStatistics(
        entropy=out["entropy"],
        vector_norm=out["vector_norm"],
        logprob=out.get("logprob"),
        topk_ids=out.get("topk_ids", empty.long()),
        topk_probs=out.get("topk_probs", empty),
    )


#: The statistics the lens computes by default (names in :data:`bupo_core.policy_head.REDUCERS`).
LENS_STATISTICS: tuple[str, ...] = ("topk_ids", "topk_probs", "logprob", "vector_norm", "entropy")


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
        statistics: which reducers of :data:`bupo_core.policy_head.REDUCERS` to run (a registered
            statistic is computed for every layer and kind by naming it here).
    """

    norm: Norm = "none"
    chunk_size: int | None = None
    chunk_mib: float = 16.0
    top_k: int = 0
    with_logprobs: bool = True
    kinds: tuple[Kind, ...] = KINDS
    statistics: tuple[str, ...] = LENS_STATISTICS

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_kinds(self.kinds)
        unknown = [n for n in self.statistics if n not in REDUCERS]
        if unknown:
            raise ValueError(f"unknown statistics {unknown}; registered: {sorted(REDUCERS)}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclass
class InternalPolicyStatistics:
    """Per-token statistics of every internal policy at P chosen positions.

    ``values[statistic][kind]`` is a tensor with one row per layer: ``"layer"`` has L+1 rows
    (H^0..H^L, row = paper layer); the module kinds have L rows (row ``i`` = layer ``i + 1``).
    ``entropy``, ``vector_norm``, ``logprob``, ``topk_ids`` and ``topk_probs`` are shortcuts
    for ``values[name]`` (an empty dict when not computed); ``stats[name]`` works for any
    registered statistic.

    Attributes:
        num_layers: L.
        vocab_size: N.
        norm: the projection used (``"none"`` or ``"final"``).
        values: statistic -> kind -> [rows, P] (or [rows, P, k] for top-k) tensors.
        positions: [P, 2] (row, column) of each position in the input batch.
        targets: [P] the next token at each position (the token the position predicts), or ``None``.
        sequence_index: [P] which sequence (across concatenated batches) each position belongs to.
    """

    num_layers: int
    vocab_size: int
    norm: str
    values: dict[str, dict[str, torch.Tensor]]
    positions: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    sequence_index: torch.Tensor | None = None

    def __getitem__(self, statistic: str) -> dict[str, torch.Tensor]:
        return self.values.get(statistic, {})

    entropy = property(lambda self: self["entropy"], doc="kind -> [rows, P] float32 entropies (nats).")
    vector_norm = property(lambda self: self["vector_norm"], doc="kind -> [rows, P] L2 norms of the raw vectors.")
    logprob = property(lambda self: self["logprob"], doc="kind -> [rows, P] log-prob of the targets.")
    topk_ids = property(lambda self: self["topk_ids"], doc="kind -> [rows, P, k] most likely token ids.")
    topk_probs = property(lambda self: self["topk_probs"], doc="kind -> [rows, P, k] their probabilities.")

    @property
    def num_tokens(self) -> int:
        """P, the number of positions analysed."""
        first = next(iter(next(iter(self.values.values())).values()))
        return int(first.shape[1])

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
    def concatenate(parts: Sequence[InternalPolicyStatistics]) -> InternalPolicyStatistics:
        """Pool the positions of several batches (token-weighted means then weigh every token once)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        values = {
            name: {k: torch.cat([p.values[name][k] for p in parts], dim=1) for k in kinds}
            for name, kinds in first.values.items()
        }
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
            values=values,
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

    The hook engine (:func:`bupo_core.capture.residual_hooks`) visits each named point as the
    forward runs; the policy head (:func:`bupo_core.policy_head.reduce_policy`) reduces its
    vectors at the chosen positions to per-token scalars. The model's own lm_head is not run.

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
    names = [
        n
        for n in cfg.statistics
        if not (REDUCERS[n].needs_targets and not want_lp) and not (REDUCERS[n].per_token_k and not cfg.top_k)
    ]
    rows = {k: kind_rows(k, L) for k in cfg.kinds}
    P = int(mask.sum())

    def blank(name: str, r: int) -> torch.Tensor:
        red = REDUCERS[name]
        shape = (r, P, cfg.top_k) if red.per_token_k else (r, P)
        return (
            torch.zeros(shape, dtype=red.dtype) if red.per_token_k else torch.full(shape, float("nan"), dtype=red.dtype)
        )

    values = {n: {k: blank(n, r) for k, r in rows.items()} for n in names}
    filled: set[tuple[str, int]] = set()
    head = PolicyHead.from_adapter(adapter, cfg.norm)
    chunk = cfg.chunk_size or default_chunk_size(adapter.vocab_size, cfg.chunk_mib)

    def record(kind: str, row: int, tensor: torch.Tensor) -> None:
        out = reduce_policy(
            head, tensor[mask], names, targets=tgt if want_lp else None, top_k=cfg.top_k, chunk_size=chunk
        )
        for n in names:
            values[n][kind][row] = out[n].cpu()
        filled.add((kind, row))

    am = attention_mask.to(device) if attention_mask is not None else None
    with hooks(residual_hooks(adapter, record, cfg.kinds)):
        base_model(model)(input_ids=input_ids, use_cache=False, **forward_kwargs(am))
    expected = sum(rows.values())
    if len(filled) != expected:
        raise RuntimeError(
            f"only {len(filled)} of {expected} hooks fired: the adapter entry for {adapter.family.name} is wrong"
        )
    return InternalPolicyStatistics(
        num_layers=L,
        vocab_size=adapter.vocab_size,
        norm=cfg.norm,
        values=values,
        positions=pos,
        targets=tgt.cpu() if tgt is not None else None,
        sequence_index=pos[:, 0].clone(),
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
    return [(tokenizer.decode([int(i)]), float(p)) for i, p in zip(st.topk_ids[0].tolist(), st.topk_probs[0].tolist())]


def iter_kinds(kinds: Iterable[str] = KINDS) -> list[str]:
    """Validate and list kinds (helper for callers that take a user's choice)."""
    return check_kinds(kinds)
