"""Sampling responses from the full policy: batched, left-padded, seeded, G samples per prompt.

Used both by the entropy analysis (the model answers with its own sampled responses) and by the
trainer (rollouts). Generation runs under ``torch.no_grad`` with the model in eval mode.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from .entropy import entropy_from_logits
from .errors import InputFormatError
from .sampling import SamplingFields, check_sampling  # noqa: F401  (check_sampling re-exported for callers)
from .sequences import PackedBatch, Prompt, context_length, encode_prompt, pack_sequences


@dataclass
class SamplingConfig(SamplingFields):
    """How responses are sampled (``max_new_tokens``, ``temperature``, ``top_p``: :class:`~bupo_core.sampling.SamplingFields`).

    Attributes:
        top_k: keep only the k most likely tokens (0 = off).
        batch_size: sequences generated per ``generate`` call (prompts x samples are split into
            batches of this many rows).
        share_prefill: run the prompt through the model once per prompt rather than once per
            sample, and give its key/value cache to all G samples (the G rows of a group share the
            prompt). Same samples up to float rounding; the prompt is most of a short rollout's
            compute. Applies to batches made of whole groups.
    """

    top_k: int = 0
    batch_size: int = 64
    share_prefill: bool = True

    def __post_init__(self) -> None:
        self.check_sampling_fields(batch_size=self.batch_size)
        if self.top_k < 0:
            raise InputFormatError(f"top_k must be >= 0 (0 = off), got {self.top_k}")


@dataclass
class Rollout:
    """Sampled responses, one row per (prompt, sample).

    Attributes:
        prompt_index: [n] which prompt each row answers (rows of one prompt are contiguous).
        prompt_ids: n lists of prompt token ids.
        response_ids: n lists of response token ids (EOS included when the model stopped).
        texts: n decoded responses (special tokens removed).
        finished: n flags: True when the response ended with EOS rather than the length limit.
        group_size: samples per prompt (G).
    """

    prompt_index: list[int]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    texts: list[str]
    finished: list[bool]
    group_size: int
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def pack(self, pad_token_id: int, max_length: int | None = None) -> PackedBatch:
        """Left-padded prompt+response batch with response and prediction masks."""
        return pack_sequences(self.prompt_ids, self.response_ids, pad_token_id, max_length=max_length)

    @property
    def response_lengths(self) -> list[int]:
        return [len(r) for r in self.response_ids]


def concat_groups(rollouts: Sequence[Rollout], picks: Sequence[tuple[int, int]]) -> Rollout:
    """The groups ``picks`` = ``[(rollout index, prompt index), ...]`` of ``rollouts``, in that order.

    Every rollout must have the same ``group_size`` G; group ``g`` of a rollout is its rows
    ``g*G .. g*G + G - 1``. The result's ``prompt_index`` counts the picked groups 0, 1, ...;
    ``extras`` lists (such as ``"entropy"``) are picked along.
    """
    G = rollouts[0].group_size
    if any(r.group_size != G for r in rollouts):
        raise ValueError("concat_groups needs rollouts with the same group_size")
    rows = [(r, g * G + i) for r, g in picks for i in range(G)]
    take = lambda name: [getattr(rollouts[r], name)[i] for r, i in rows]  # noqa: E731
    extras = {k: [rollouts[r].extras[k][i] for r, i in rows] for k in rollouts[0].extras}
    return Rollout(
        prompt_index=[j for j in range(len(picks)) for _ in range(G)],
        prompt_ids=take("prompt_ids"),
        response_ids=take("response_ids"),
        texts=take("texts"),
        finished=take("finished"),
        group_size=G,
        extras=extras,
    )


def check_fits_context(prompt_tokens: int, max_new_tokens: int, limit: int | None, where: str, fix: str) -> None:
    """Refuse a prompt of ``prompt_tokens`` tokens that leaves no room for ``max_new_tokens`` (the one context check).

    ``where`` names the prompt (``"qa.jsonl:3"``, ``"prompt 0"``), ``fix`` the remedy besides
    lowering ``max_new_tokens``. ``limit`` is the model's context (``None`` = unknown, no check).
    """
    if limit is not None and prompt_tokens + max_new_tokens > limit:
        raise InputFormatError(
            f"{where}: the prompt has {prompt_tokens} tokens; with max_new_tokens={max_new_tokens} that exceeds "
            f"the model's context of {limit} tokens. {fix}, or lower max_new_tokens."
        )


def _eos_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for src in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if src is None:
            continue
        ids.extend(src if isinstance(src, (list, tuple)) else [src])
    return sorted(set(int(i) for i in ids))


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    group_size: int = 1,
    config: SamplingConfig | None = None,
    seed: int = 0,
    chat_template_kwargs: dict | None = None,
    progress: bool = False,
    record_entropy: bool = False,
) -> Rollout:
    """Sample ``group_size`` responses to each prompt from the full policy.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (left padding is used whatever its setting).
        prompts: raw texts or chat message lists.
        group_size: G, samples per prompt.
        config: sampling settings.
        seed: seeds torch's generator; the same seed, model and prompts give the same responses on CPU.
        chat_template_kwargs: e.g. ``{"enable_thinking": False}`` for Qwen3.
        progress: show a tqdm bar over generation batches.
        record_entropy: also record, for every response token, the entropy (nats, float32) of the
            full policy softmax(logits) it was sampled from, read from the sampler's own raw
            logits (before temperature / top-p), in ``rollout.extras["entropy"]`` (n lists).
            Costs one softmax per decoding step instead of a second forward pass.

    Returns:
        A :class:`Rollout` with ``len(prompts) * group_size`` rows, prompt-major.
    """
    cfg = config or SamplingConfig()
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    device = next(model.parameters()).device
    encoded = [encode_prompt(tokenizer, p, chat_template_kwargs=chat_template_kwargs) for p in prompts]
    limit = context_length(model)
    for i, ids in enumerate(encoded):
        check_fits_context(len(ids), cfg.max_new_tokens, limit, f"prompt {i}", "Shorten the prompt")
    rows = [(i, ids) for i, ids in enumerate(encoded) for _ in range(group_size)]
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    was_training = model.training
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out_ids: list[list[int]] = []
    finished: list[bool] = []
    entropies: list[list[float]] = []
    batches = range(0, len(rows), cfg.batch_size)
    for start in tqdm(batches, desc="generate", disable=not progress, leave=False):
        chunk = rows[start : start + cfg.batch_size]
        width = max(len(ids) for _, ids in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for r, (_, ids) in enumerate(chunk):
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            mask[r, width - len(ids) :] = 1
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
        sample = cfg.temperature > 0
        kwargs: dict = dict(
            max_new_tokens=cfg.max_new_tokens,
            do_sample=sample,
            pad_token_id=pad,
            eos_token_id=eos,
        )
        if sample:
            # top_k=0 and top_p=1.0 switch those warpers off explicitly; None would fall back to the
            # model's generation_config (Qwen3 ships top_k=20), i.e. not the full policy
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if (
            cfg.share_prefill
            and group_size > 1
            and start % group_size == 0
            and len(chunk) % group_size == 0
            and width > 1
        ):
            cache = _shared_prompt_cache(
                model, input_ids[::group_size].to(device), mask[::group_size].to(device), group_size
            )
            if cache is not None:
                kwargs[_cache_kwarg(model)] = cache
        recorder = _EntropyRecorder() if record_entropy else None
        if recorder is not None:
            kwargs["logits_processor"] = LogitsProcessorList([recorder])
        seqs = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), **kwargs)
        new = seqs[:, width:].cpu().tolist()
        step_entropy = torch.stack(recorder.steps, 1).tolist() if recorder is not None and recorder.steps else None
        for r, toks in enumerate(new):
            resp: list[int] = []
            done = False
            for t in toks:
                resp.append(t)
                if t in eos:
                    done = True
                    break
            # a response that stopped at the limit may end in padding only if pad == eos; handled above
            out_ids.append(resp)
            finished.append(done)
            if step_entropy is not None:
                entropies.append(step_entropy[r][: len(resp)])
    if was_training:
        model.train()
    texts = [tokenizer.decode(r, skip_special_tokens=True) for r in out_ids]
    return Rollout(
        prompt_index=[i for i, _ in rows],
        prompt_ids=[list(ids) for _, ids in rows],
        response_ids=out_ids,
        texts=texts,
        finished=finished,
        group_size=group_size,
        extras={"entropy": entropies} if record_entropy else {},
    )


def _shared_prompt_cache(model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, repeats: int) -> Any:
    """Key/value cache of each prompt but its last token, computed once and repeated ``repeats`` times.

    Args:
        input_ids, mask: [P, W] left-padded unique prompts.

    Returns:
        A cache for the [P * repeats] rows (prompt-major), or ``None`` when the model's cache type
        cannot be repeated (then ``generate`` prefills every row as usual).
    """
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate() builds them
    # only the cache is used: logits_to_keep=1 computes the last position's logits, not a [P, W, vocab] block
    keep = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    out = model(
        input_ids=input_ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True, **keep
    )
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(repeats)
    return cache


def _accepts(model: nn.Module, name: str) -> bool:
    """True when ``model``'s forward takes the keyword ``name``."""
    return name in inspect.signature(type(model).forward).parameters


def _cache_kwarg(model: nn.Module) -> str:
    """``"cache"`` in transformers versions that renamed it, else ``"past_key_values"``."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


class _EntropyRecorder(LogitsProcessor):
    """A logits processor that records the entropy of each decoding step's raw scores, unchanged.

    ``generate`` applies custom processors before its temperature / top-k / top-p warpers, so the
    scores seen here are the model's own logits (float32): the full policy at temperature 1.
    """

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        self.steps.append(entropy_from_logits(scores).cpu())
        return scores
