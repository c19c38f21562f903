"""Prompts, prompt+response token sequences, and the positions whose prediction is a response token.

Conventions (shared by the lens statistics and the trainer):

* A prompt is either raw text or a list of chat messages. Messages go through the tokenizer's chat
  template with the generation prompt; raw text is tokenized as is (with the tokenizer's special
  tokens, e.g. a BOS token).
* A response is tokenized on its own, with no special tokens added, and appended to the prompt ids.
* The logits at position ``t`` predict token ``t + 1``. The *response positions* of a sequence are
  exactly the positions ``t`` with ``t + 1`` a response token: ``P - 1 .. P + R - 2`` for a prompt of
  ``P`` tokens and a response of ``R`` tokens. (The authors' entropy script is off by one here: it
  uses ``P .. P + R - 1``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputFormatError

Messages = list[dict[str, str]]
Prompt = str | Messages


def encode_prompt(tokenizer: Any, prompt: Prompt, *, chat_template_kwargs: dict | None = None) -> list[int]:
    """Token ids of a prompt: chat template (with generation prompt) for messages, plain text otherwise.

    Args:
        tokenizer: a Hugging Face tokenizer.
        prompt: raw text, or a list of ``{"role": ..., "content": ...}`` messages.
        chat_template_kwargs: extra template variables, e.g. ``{"enable_thinking": False}`` for Qwen3.
    """
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if not isinstance(prompt, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        raise InputFormatError("a prompt must be a string or a list of {'role': ..., 'content': ...} messages")
    if getattr(tokenizer, "chat_template", None) is None:
        # Base models (e.g. Gemma-3-270M base) have no template: use a plain transcript.
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in prompt) + "Assistant:"
        return list(tokenizer(text, add_special_tokens=True)["input_ids"])
    ids = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, **(chat_template_kwargs or {})
    )
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def encode_response(tokenizer: Any, response: str) -> list[int]:
    """Token ids of a response text on its own, with no special tokens."""
    return list(tokenizer(response, add_special_tokens=False)["input_ids"])


@dataclass
class PackedBatch:
    """Left-padded prompt+response sequences with the masks every consumer needs.

    Attributes:
        input_ids: [B, T] token ids, left-padded.
        attention_mask: [B, T] 1 for real tokens.
        response_mask: [B, T] 1 where the *token* is a response token.
        prediction_mask: [B, T] 1 at positions whose next-token prediction is a response token
            (``response_mask`` shifted left by one).
        targets: [B, T] the next token at each position (``input_ids`` shifted left; last column
            is padding and always masked out).
        prompt_lengths: [B] real prompt tokens per row.
        response_lengths: [B] response tokens per row.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prediction_mask: torch.Tensor
    targets: torch.Tensor
    prompt_lengths: torch.Tensor
    response_lengths: torch.Tensor

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(**{k: v.to(device) for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, rows: torch.Tensor | Sequence[int]) -> PackedBatch:
        """Rows ``rows`` (trimmed so no column is all padding)."""
        idx = torch.as_tensor(rows, dtype=torch.long)
        sub = {k: v[idx] for k, v in self.__dict__.items()}
        keep = sub["attention_mask"].any(0).nonzero()
        start = int(keep.min()) if len(keep) else 0
        return PackedBatch(**{k: (v[:, start:] if v.ndim == 2 else v) for k, v in sub.items()})


def pack_sequences(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    *,
    max_length: int | None = None,
) -> PackedBatch:
    """Concatenate prompts and responses, left-pad, and build the masks.

    Args:
        prompt_ids: B lists of prompt token ids.
        response_ids: B lists of response token ids (each non-empty).
        pad_token_id: the id used for padding (masked out everywhere).
        max_length: the model's context length; longer sequences raise :class:`InputFormatError`.

    >>> b = pack_sequences([[5, 6], [7]], [[8], [9, 10]], pad_token_id=0)
    >>> b.input_ids.tolist()
    [[5, 6, 8], [7, 9, 10]]
    >>> b.prediction_mask.tolist()
    [[0, 1, 0], [1, 1, 0]]
    """
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if not len(prompt_ids):
        raise InputFormatError("no sequences to pack")
    rows = []
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        if len(r) == 0:
            raise InputFormatError(f"sequence {i}: the response is empty (it has no tokens to analyse or train on)")
        if len(p) == 0:
            raise InputFormatError(f"sequence {i}: the prompt is empty")
        if max_length is not None and len(p) + len(r) > max_length:
            raise InputFormatError(
                f"sequence {i} has {len(p)} prompt + {len(r)} response = {len(p) + len(r)} tokens, more "
                f"than the model's context of {max_length}; shorten the prompt or the response "
                f"(e.g. lower --max-new-tokens)"
            )
        rows.append((list(p), list(r)))
    T = max(len(p) + len(r) for p, r in rows)
    B = len(rows)
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    resp = torch.zeros((B, T), dtype=torch.long)
    for b, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        input_ids[b, T - n :] = torch.tensor(p + r)
        attn[b, T - n :] = 1
        resp[b, T - len(r) :] = 1
    pred = torch.zeros_like(resp)
    pred[:, :-1] = resp[:, 1:]
    targets = torch.full_like(input_ids, pad_token_id)
    targets[:, :-1] = input_ids[:, 1:]
    return PackedBatch(
        input_ids=input_ids,
        attention_mask=attn,
        response_mask=resp,
        prediction_mask=pred,
        targets=targets,
        prompt_lengths=torch.tensor([len(p) for p, _ in rows]),
        response_lengths=torch.tensor([len(r) for _, r in rows]),
    )


def context_length(model: Any) -> int | None:
    """The model's maximum sequence length, if its config states one."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None
