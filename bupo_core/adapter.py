"""One architecture adapter: where each family keeps its blocks, norms, modules and unembedding.

Everything in ``bupo_core`` that needs to find a model's parts goes through
:class:`ArchitectureAdapter`; there is no ``if family == ...`` anywhere else.

A block ``l`` (paper numbering, 1..L) of every supported family computes::

    A^l = attn_write(Attn(LN1(H^{l-1})))
    F^l = ffn_write(FFN(LN2(H^{l-1} + A^l)))
    H^l = H^{l-1} + A^l + F^l

where ``attn_write`` / ``ffn_write`` are the identity for Llama-style blocks and the
post-attention / post-feed-forward norms for Gemma 2/3 ("sandwich" norms). The adapter names,
for each role, the module whose *output* is that vector, so hooks capture exactly what is added
to the residual stream.

Adding a family is one :func:`register_family` call with a :class:`FamilySpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from .errors import LayerOutOfRangeError, UnsupportedArchitectureError

Role = Literal["ln1", "attn", "attn_write", "ln2", "ffn", "ffn_write"]
ROLES: tuple[Role, ...] = ("ln1", "attn", "attn_write", "ln2", "ffn", "ffn_write")
Norm = Literal["none", "final"]


@dataclass(frozen=True)
class FamilySpec:
    """Where one model family keeps its parts.

    Attributes:
        name: short family name shown to users (``"llama"``).
        model_types: values of ``config.model_type`` that belong to the family.
        blocks: dotted paths (from the ``*ForCausalLM`` object) to the ``ModuleList`` of blocks;
            the first that exists is used.
        final_norm: dotted paths to the final norm, tried in order.
        ln1: attribute of a block: the norm whose output the attention module reads.
        attn: attribute of a block: the attention module.
        attn_write: attribute of a block whose output is the vector added to the stream by the
            attention sub-block (``attn`` itself, or a post-attention norm).
        ln2: attribute of a block: the norm whose output the FFN reads.
        ffn: attribute of a block: the feed-forward module.
        ffn_write: attribute whose output is the vector added to the stream by the FFN sub-block.
    """

    name: str
    model_types: tuple[str, ...]
    blocks: tuple[str, ...]
    final_norm: tuple[str, ...]
    ln1: str
    attn: str
    attn_write: str
    ln2: str
    ffn: str
    ffn_write: str
    notes: str = ""


_LLAMA_LIKE = dict(
    blocks=("model.layers",),
    final_norm=("model.norm",),
    ln1="input_layernorm",
    attn="self_attn",
    attn_write="self_attn",
    ln2="post_attention_layernorm",
    ffn="mlp",
    ffn_write="mlp",
)

FAMILIES: list[FamilySpec] = [
    FamilySpec(
        name="llama",
        model_types=("llama", "mistral", "olmo2"),
        notes="Llama 2/3, SmolLM2, Mistral: pre-norm RMSNorm blocks.",
        **_LLAMA_LIKE,
    ),
    FamilySpec(name="qwen2", model_types=("qwen2",), notes="Qwen2/2.5.", **_LLAMA_LIKE),
    FamilySpec(name="qwen3", model_types=("qwen3",), notes="Qwen3: q/k norms inside attention.", **_LLAMA_LIKE),
    FamilySpec(
        name="gemma",
        model_types=("gemma2", "gemma3_text", "gemma3"),
        blocks=("model.layers", "model.language_model.layers"),
        final_norm=("model.norm", "model.language_model.norm"),
        ln1="input_layernorm",
        attn="self_attn",
        attn_write="post_attention_layernorm",
        ln2="pre_feedforward_layernorm",
        ffn="mlp",
        ffn_write="post_feedforward_layernorm",
        notes="Gemma 2/3: sandwich norms; the written vectors are the post-module norms' outputs; "
        "embeddings are scaled by sqrt(d) inside the embedding module.",
    ),
    FamilySpec(
        name="gpt2",
        model_types=("gpt2",),
        blocks=("transformer.h",),
        final_norm=("transformer.ln_f",),
        ln1="ln_1",
        attn="attn",
        attn_write="attn",
        ln2="ln_2",
        ffn="mlp",
        ffn_write="mlp",
        notes="GPT-2: LayerNorm with bias, learned absolute positions added to H^0.",
    ),
]


def register_family(spec: FamilySpec) -> None:
    """Add (or replace) a family so every ``bupo_core`` function supports it.

    >>> register_family(FamilySpec(name="mine", model_types=("mine",), blocks=("model.layers",),
    ...     final_norm=("model.norm",), ln1="input_layernorm", attn="self_attn",
    ...     attn_write="self_attn", ln2="post_attention_layernorm", ffn="mlp", ffn_write="mlp"))
    >>> "mine" in supported_model_types()
    True
    >>> unregister_family("mine")
    """
    unregister_family(spec.name)
    FAMILIES.append(spec)


def unregister_family(name: str) -> None:
    """Remove the family called ``name`` if it is registered."""
    FAMILIES[:] = [f for f in FAMILIES if f.name != name]


def supported_model_types() -> list[str]:
    """All ``config.model_type`` values the adapter knows."""
    return sorted({t for f in FAMILIES for t in f.model_types})


def _get_path(root: nn.Module, dotted: str) -> nn.Module | None:
    obj: object = root
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def first_tensor(output: object) -> torch.Tensor:
    """The tensor a module returned (attention modules return ``(out, weights)``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"expected a tensor or a tuple starting with one, got {type(output).__name__}")


def _unsupported_message(model: nn.Module, detail: str) -> str:
    model_type = getattr(getattr(model, "config", None), "model_type", "?")
    return (
        f"{type(model).__name__} (config.model_type={model_type!r}) is not supported: {detail}. "
        f"Supported model types: {', '.join(supported_model_types())}. To add a family, call "
        "bupo_core.adapter.register_family(FamilySpec(...)) naming its blocks, final norm, the "
        "norms before attention and FFN, the attention and FFN modules and the modules whose "
        "outputs are added to the residual stream (see docs/adding-a-family.md)."
    )


def check_layer(
    layer: int, num_layers: int, *, allow_embedding: bool = True, below_top: bool = False, what: str | None = None
) -> int:
    """The one check of a paper-numbered layer: return it, or raise :class:`LayerOutOfRangeError`.

    Args:
        layer: 0 = embedding output H^0, 1..L = block outputs.
        num_layers: L.
        allow_embedding: accept layer 0 (internal layer policies exist for 0..L; modules for 1..L).
        below_top: accept at most L - 1 (BuPO and feature refinement need a layer above the target).
        what: how the message names the value (default: from the range).

    >>> check_layer(2, 4)
    2
    >>> check_layer(4, 4, allow_embedding=False, below_top=True)
    Traceback (most recent call last):
    ...
    bupo_core.errors.LayerOutOfRangeError: target layer 4 is out of range for this 4-layer model: use 1..3 (paper numbering; the authors' code uses k = layer - 1; layer 4 is the whole model).
    """  # noqa: E501 (a doctest's expected exception message: one line)
    low = 0 if allow_embedding else 1
    high = num_layers - 1 if below_top else num_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not low <= layer <= high:
        if what is None:
            what = (
                "target layer"
                if below_top
                else ("layer (0 = embedding, 1..L = block outputs)" if allow_embedding else "block layer")
            )
        top = f"; layer {num_layers} is the whole model" if below_top else ""
        raise LayerOutOfRangeError(
            f"{what} {layer!r} is out of range for this {num_layers}-layer model: use "
            f"{low}..{high} (paper numbering; the authors' code uses k = layer - 1{top})."
        )
    return layer


@dataclass
class ArchitectureAdapter:
    """Finds a causal LM's parts and projects vectors through its unembedding.

    Layers use the paper's numbering: layer 0 is the embedding output H^0, layer ``l`` in
    1..L is the output of the l-th block.

    >>> from bupo_core.models import tiny_model
    >>> adapter = ArchitectureAdapter(tiny_model("llama"))
    >>> adapter.family.name, adapter.num_layers
    ('llama', 2)
    >>> adapter.module(1, "ffn_write") is adapter.block(1).mlp
    True
    """

    model: nn.Module
    family: FamilySpec = field(init=False)
    blocks: nn.ModuleList = field(init=False)
    final_norm: nn.Module = field(init=False)

    def __post_init__(self) -> None:
        config = getattr(self.model, "config", None)
        model_type = getattr(config, "model_type", None)
        family = next((f for f in FAMILIES if model_type in f.model_types), None)
        if family is None:
            raise UnsupportedArchitectureError(_unsupported_message(self.model, "no adapter entry for this model type"))
        self.family = family
        blocks = next((b for p in family.blocks if (b := _get_path(self.model, p)) is not None), None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise UnsupportedArchitectureError(
                _unsupported_message(self.model, f"no block list at {' or '.join(family.blocks)}")
            )
        self.blocks = blocks
        norm = next((n for p in family.final_norm if (n := _get_path(self.model, p)) is not None), None)
        if norm is None:
            raise UnsupportedArchitectureError(
                _unsupported_message(self.model, f"no final norm at {' or '.join(family.final_norm)}")
            )
        self.final_norm = norm
        for role in ROLES:
            attr = getattr(family, role)
            if not hasattr(blocks[0], attr):
                raise UnsupportedArchitectureError(
                    _unsupported_message(self.model, f"block 1 has no module {attr!r} (role {role})")
                )
        if self.model.get_output_embeddings() is None:
            raise UnsupportedArchitectureError(_unsupported_message(self.model, "no output embedding"))

    # ----------------------------------------------------------------- structure
    @property
    def num_layers(self) -> int:
        """L, the number of blocks."""
        return len(self.blocks)

    @property
    def vocab_size(self) -> int:
        """N, the number of rows of the unembedding."""
        return int(self.unembed_weight.shape[0])

    @property
    def hidden_size(self) -> int:
        """d, the width of the residual stream."""
        return int(self.unembed_weight.shape[1])

    def check_layer(
        self, layer: int, *, allow_embedding: bool = True, below_top: bool = False, what: str | None = None
    ) -> int:
        """Validate a paper-numbered layer of this model and return it (see :func:`check_layer`)."""
        return check_layer(layer, self.num_layers, allow_embedding=allow_embedding, below_top=below_top, what=what)

    def block(self, layer: int) -> nn.Module:
        """Block ``layer`` (paper numbering, 1..L)."""
        return self.blocks[self.check_layer(layer, allow_embedding=False) - 1]

    def module(self, layer: int, role: Role) -> nn.Module:
        """The module playing ``role`` in block ``layer`` (1..L)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; use one of {ROLES}")
        return getattr(self.block(layer), getattr(self.family, role))

    @property
    def embedding(self) -> nn.Module:
        """The input embedding module."""
        return self.model.get_input_embeddings()

    @property
    def unembed_weight(self) -> torch.Tensor:
        """E_u, shape [N, d] (tied to the input embedding in some models)."""
        return self.model.get_output_embeddings().weight

    @property
    def unembed_bias(self) -> torch.Tensor | None:
        """The unembedding bias, shape [N], or ``None``."""
        return getattr(self.model.get_output_embeddings(), "bias", None)

    @property
    def tied_embeddings(self) -> bool:
        """True when E_u is the same tensor as the input embedding."""
        return self.unembed_weight.data_ptr() == self.embedding.weight.data_ptr()

    @property
    def logit_softcap(self) -> float | None:
        """Gemma 2's final logit soft-capping value, if the model uses one."""
        return getattr(self.model.config, "final_logit_softcapping", None)

    def upper_parameters(self, layer: int) -> list[nn.Parameter]:
        """Parameters that internal policy ``layer`` does not depend on: blocks above it + final norm.

        With tied embeddings E_u is excluded (it is the input embedding, which layer ``layer``
        depends on).
        """
        self.check_layer(layer, allow_embedding=True)
        params = [p for b in self.blocks[layer:] for p in b.parameters()]
        params += list(self.final_norm.parameters())
        return params

    # ----------------------------------------------------------------- projection
    def apply_norm(self, hidden: torch.Tensor, norm: Norm) -> torch.Tensor:
        """``hidden`` unchanged for ``norm="none"`` (the paper), LN_final(hidden) for ``"final"``."""
        from .policy_head import head_parts  # noqa: PLC0415  (cycle: policy_head imports adapter)

        norm_module = head_parts(self, norm)[0]
        return norm_module(hidden) if norm_module is not None else hidden

    def logits(
        self, hidden: torch.Tensor, norm: Norm = "none", *, dtype: torch.dtype | None = torch.float32
    ) -> torch.Tensor:
        """Project vectors through the unembedding (:class:`bupo_core.policy_head.PolicyHead`).

        Args:
            hidden: [..., d] vectors (residual states or module writes).
            norm: ``"none"`` (the paper's internal policies: raw vector times E_u^T) or
                ``"final"`` (logit lens: the model's own head, final norm and any logit soft-cap).
            dtype: dtype of the returned logits; they are always computed in float32 (autocast
                off); ``None`` returns the model's dtype.

        Returns:
            [..., N] logits.
        """
        from .policy_head import PolicyHead  # noqa: PLC0415  (cycle: policy_head imports adapter)

        out = PolicyHead.from_adapter(self, norm, detach=False).logits(hidden)
        target = dtype if dtype is not None else self.unembed_weight.dtype
        return out if target == torch.float32 else out.to(target)
