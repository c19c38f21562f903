"""The entropy-analysis pipeline: prompts -> responses -> per-layer internal-policy statistics.

This is the paper's measurement (its entropy analysis of internal policies) as one function:

1. Prompts come from a reasoning-gym task (:func:`task_prompts`) or a pairs file
   (:func:`load_pairs`), or are passed in directly.
2. Responses are the model's own samples (seeded, temperature 1.0 by default, through
   :func:`bupo_core.rollout.generate`) or are given.
3. One teacher-forced forward per batch computes, at exactly the positions whose next-token
   prediction is a response token, the entropy (and norm, log-prob of the response token) of every
   layer and module policy (:func:`bupo_core.lens.internal_policy_statistics`, bounded memory).
4. Per-layer values are token-weighted means over all response tokens of all samples; entropy
   changes and the boundary layer follow (:mod:`bupo_core.entropy`).

The result is an :class:`EntropyReport` (``.to_json()``, ``.save(dir)``); its figures are drawn by
:mod:`bupo_core.reporting.entropy_plots` (``report_figures``, ``save_entropy_report``), which takes the report.

Prompt styles for task prompts (``AnalysisConfig.prompt_style``):

* ``"boxed"`` (default): the paper's system message, "Please reason step by step, and put your
  final answer within \\boxed{}.", then the question. It elicits longer reasoning-style responses,
  which is what the paper measures; correctness does not matter for the entropy analysis.
* ``"short"``: the question followed by " Reply with just the number." (what the 135M embedded model
  answers best; used for training in notebooks 04/05). Responses are short, so fewer tokens.
* ``"plain"``: the question alone as a user message.
"""

from __future__ import annotations

import difflib
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .adapter import ArchitectureAdapter, Norm
from .entropy import boundary_layer
from .errors import InputFormatError
from .lens import LENS_STATISTICS, InternalPolicyStatistics, LensConfig, internal_policy_statistics
from .policy_head import REDUCERS, check_norm
from .rollout import SamplingConfig, generate
from .runs import iter_jsonl
from .sampling import MAX_NEW_TOKENS_ANALYSIS, SamplingFields
from .sequences import Prompt, context_length, encode_prompt, encode_response, pack_sequences
from .tasks import PAPER_SYSTEM_PROMPT, SHORT_SUFFIX, TEMPLATES, reasoning_gym_entries  # noqa: F401  (re-exported)

#: The prompt styles are the task templates (one prompt system: :data:`bupo_core.tasks.TEMPLATES`).
PROMPT_STYLES = tuple(TEMPLATES)


# --------------------------------------------------------------------------- inputs
@dataclass
class PromptResponse:
    """One prompt, optionally with a given response.

    Attributes:
        prompt: raw text or a list of chat messages.
        response: the response text to analyse, or ``None`` to sample one from the model.
        line: 1-based line of the pairs file it came from (``None`` otherwise).
    """

    prompt: Prompt
    response: str | None = None
    line: int | None = None


def _check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise InputFormatError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputFormatError(
                f"{where}: message {j} must be an object with string 'role' and 'content', got {json.dumps(m)[:80]}"
            )
    return messages


def parse_pair(obj: Any, where: str = "pair") -> PromptResponse:
    """Validate one pairs-file object: ``{"messages": [...], "response": str}`` or ``{"prompt": str, "response": str}``."""
    example = 'e.g. {"prompt": "What is 2+3?", "response": "5"} or {"messages": [{"role": "user", "content": "..."}], "response": "..."}'
    if not isinstance(obj, dict):
        raise InputFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}; {example}")
    has_m, has_p = "messages" in obj, "prompt" in obj
    if has_m == has_p:
        raise InputFormatError(
            f"{where}: give exactly one of 'messages' or 'prompt' (found {'both' if has_m else 'neither'}); {example}"
        )
    if "response" not in obj:
        raise InputFormatError(f"{where}: missing 'response'; {example}")
    resp = obj["response"]
    if not isinstance(resp, str):
        raise InputFormatError(f"{where}: 'response' must be a string, got {type(resp).__name__}")
    if not resp.strip():
        raise InputFormatError(f"{where}: the response is empty; there are no response tokens to analyse")
    if has_m:
        prompt: Prompt = _check_messages(obj["messages"], where)
    else:
        if not isinstance(obj["prompt"], str) or not obj["prompt"]:
            raise InputFormatError(f"{where}: 'prompt' must be a non-empty string")
        prompt = obj["prompt"]
    return PromptResponse(prompt=prompt, response=resp)


def load_pairs(path: str | Path) -> list[PromptResponse]:
    """Read a pairs file: one JSON object per line (blank lines are skipped).

    Each line is ``{"messages": [chat messages], "response": "text"}`` or
    ``{"prompt": "raw text", "response": "text"}``. Errors name the file and the line.
    """
    p = Path(path)
    if not p.exists():
        raise InputFormatError(
            f"pairs file {p} does not exist; pass a JSONL file with one prompt/response object a line"
        )
    out: list[PromptResponse] = []
    for n, obj in iter_jsonl(p, what="pairs file"):
        item = parse_pair(obj, f"{p}:{n}")
        item.line = n
        out.append(item)
    if not out:
        raise InputFormatError(f"pairs file {p} has no pairs; write one JSON object a line")
    return out


def style_prompt(question: str, style: str = "boxed") -> list[dict[str, str]]:
    """Wrap a question as chat messages with the template ``style`` (:data:`bupo_core.tasks.TEMPLATES`).

    >>> style_prompt("1 + 2 =", "short")
    [{'role': 'user', 'content': '1 + 2 = Reply with just the number.'}]
    """
    if style not in TEMPLATES:
        raise InputFormatError(f"unknown prompt style {style!r}; use one of {', '.join(PROMPT_STYLES)}")
    return TEMPLATES[style].messages(question)


def task_prompts(
    task: str, n: int, *, seed: int = 0, style: str = "boxed", **task_kwargs: Any
) -> list[list[dict[str, str]]]:
    """``n`` prompts from a reasoning-gym task, as chat messages in ``style``.

    Args:
        task: a reasoning-gym dataset name (``"chain_sum"``, ``"basic_arithmetic"``, ...).
        n: number of prompts.
        seed: dataset seed (the same seed gives the same questions).
        style: see the module docstring.
        task_kwargs: passed to ``reasoning_gym.create_dataset`` (e.g. ``min_terms=2``).
    """
    from reasoning_gym.factory import DATASETS  # noqa: PLC0415  (optional: slow to import, absent on a bare GPU machine)

    if n < 1:
        raise InputFormatError(f"the number of prompts must be >= 1, got {n}")
    if task not in DATASETS:
        close = difflib.get_close_matches(task, list(DATASETS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise InputFormatError(
            f"unknown reasoning-gym task {task!r}.{hint} Examples: chain_sum, basic_arithmetic, simple_equations "
            f"({len(DATASETS)} tasks in all: python -c 'import reasoning_gym.factory as f; print(sorted(f.DATASETS))')"
        )

    style_prompt("", style)  # validate before building
    _, rows = reasoning_gym_entries(task, size=n, seed=seed, **task_kwargs)
    return [style_prompt(row["question"], style) for row in rows]


# --------------------------------------------------------------------------- configuration
@dataclass
class AnalysisConfig(SamplingFields):
    """Settings of :func:`analyse_entropy` (all recorded in the report). The sampling fields
    (``max_new_tokens``, ``temperature``, ``top_p``; used when the model answers its prompts) are
    :class:`~bupo_core.sampling.SamplingFields`.

    Attributes:
        norm: ``"none"`` (the paper's internal policies) or ``"final"`` (logit lens).
        samples_per_prompt: responses sampled per prompt.
        seed: seed for sampling (reproducible on CPU).
        batch_size: sequences per teacher-forced forward (and per generation call).
        chunk_mib: memory budget (MiB) of one chunk of [tokens, vocab] float32 logits.
        top_k: most likely tokens kept per token, layer and module (0 = none).
        statistics: lens statistics to compute (names in :data:`bupo_core.policy_head.REDUCERS`;
            ``entropy`` and ``vector_norm`` are required, the report is made of them); the
            per-layer means of the ones without a named report field go to ``EntropyReport.statistics``.
        keep_token_statistics: keep the per-token statistics in the report (for the token x layer
            heatmap; not written to JSON).
        chat_template_kwargs: extra chat-template variables (e.g. ``{"enable_thinking": False}``).
    """

    max_new_tokens: int = MAX_NEW_TOKENS_ANALYSIS
    norm: Norm = "none"
    samples_per_prompt: int = 1
    seed: int = 0
    batch_size: int = 4
    chunk_mib: float = 16.0
    top_k: int = 0
    statistics: tuple[str, ...] = LENS_STATISTICS
    keep_token_statistics: bool = True
    chat_template_kwargs: dict | None = None

    def __post_init__(self) -> None:
        check_norm(self.norm)
        if self.batch_size < 1 or self.samples_per_prompt < 1 or self.max_new_tokens < 1:
            raise InputFormatError("batch_size, samples_per_prompt and max_new_tokens must all be >= 1")
        self.check_sampling_fields(batch_size=self.batch_size)
        if not (self.chunk_mib > 0 and self.chunk_mib < float("inf")):
            raise InputFormatError(f"chunk_mib must be a positive number, got {self.chunk_mib}")
        if self.top_k < 0:
            raise InputFormatError(f"top_k must be >= 0, got {self.top_k}")
        unknown = [n for n in self.statistics if n not in REDUCERS]
        if unknown:
            raise InputFormatError(
                f"unknown statistics {unknown}: use names in {sorted(REDUCERS)} (a new one: policy_head.register_reducer)"
            )
        missing = [n for n in REPORTED_STATISTICS if n not in self.statistics]
        if missing:
            raise InputFormatError(
                f"statistics must include {missing}: the report's per-layer entropy and norm are made of them"
            )


# --------------------------------------------------------------------------- report
#: Lens statistics written as named per-layer fields of the report: statistic -> field suffix
#: (``"entropy"`` gives ``layer_entropy``, ``attn_entropy``, ...; ``"vector_norm"`` gives ``layer_norm``, ...).
REPORTED_STATISTICS: dict[str, str] = {"entropy": "entropy", "vector_norm": "norm"}


def _floats(t: torch.Tensor) -> list[float]:
    return [None if math.isnan(v) else round(float(v), 6) for v in t.tolist()]  # type: ignore[misc]


@dataclass
class EntropyReport:
    """Per-layer token-weighted statistics of the internal policies (paper numbering).

    Arrays named ``layer_*`` have L+1 entries (index = paper layer 0..L, 0 = embedding output);
    every other per-layer array has L entries for layers 1..L (entry ``i`` = layer ``i + 1``).

    Attributes:
        model: the model's name or path.
        num_layers: L.
        vocab_size: N (the maximum entropy is ln N).
        norm: ``"none"`` (paper) or ``"final"`` (logit lens).
        num_tokens: response tokens analysed (all samples pooled).
        num_sequences: prompt+response sequences analysed.
        layer_entropy: mean entropy of pi^l_Layer = softmax(H^l E_u^T), l = 0..L.
        attn_entropy: mean entropy of softmax(A^l E_u^T).
        ffn_entropy: mean entropy of softmax(F^l E_u^T).
        attn_input_entropy: mean entropy of softmax(LN1(H^{l-1}) E_u^T).
        ffn_input_entropy: mean entropy of softmax(LN2(H^{l-1} + A^l) E_u^T).
        layer_entropy_change: mean dH^l.
        attn_entropy_change: mean dH^l_ATTN.
        ffn_entropy_change: mean dH^l_FFN.
        boundary_layer: the paper's boundary layer (last of the first run with dH_FFN > 0), or None.
        boundary_reason: why that layer (or why none).
        boundary_run: ``[first, last]`` of that run, or None.
        layer_norm, attn_norm, ffn_norm, attn_input_norm, ffn_input_norm: mean L2 norms of the raw vectors.
        layer_logprob: mean log-prob of the response tokens under each layer policy (l = 0..L).
        statistics: per-layer token-weighted means of every other scalar statistic the lens
            computed (statistic -> kind -> values), e.g. ``statistics["logprob"]["ffn"]``; a
            statistic registered with :func:`bupo_core.policy_head.register_reducer` and named in
            ``LensConfig.statistics`` appears here without any change to the report.
        settings: the analysis settings (prompt source, sampling, seed, ...).
        samples: per sequence: prompt (text), response (text), number of response tokens.
        timing: seconds spent generating and analysing.
        environment: device, dtype, torch and platform versions.
        token_statistics: the per-token statistics (not serialised), for heatmaps and widgets.
    """

    model: str
    num_layers: int
    vocab_size: int
    norm: str
    num_tokens: int
    num_sequences: int
    layer_entropy: list[float]
    attn_entropy: list[float]
    ffn_entropy: list[float]
    attn_input_entropy: list[float]
    ffn_input_entropy: list[float]
    layer_entropy_change: list[float]
    attn_entropy_change: list[float]
    ffn_entropy_change: list[float]
    boundary_layer: int | None
    boundary_reason: str
    boundary_run: list[int] | None
    layer_norm: list[float]
    attn_norm: list[float]
    ffn_norm: list[float]
    attn_input_norm: list[float]
    ffn_input_norm: list[float]
    layer_logprob: list[float] | None = None
    statistics: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    token_statistics: InternalPolicyStatistics | None = field(default=None, repr=False, compare=False)
    response_tokens: list[list[str]] | None = field(default=None, repr=False, compare=False)

    @property
    def max_entropy(self) -> float:
        """ln N in nats."""
        return math.log(self.vocab_size)

    @classmethod
    def from_statistics(cls, stats: InternalPolicyStatistics, *, model: str, **extra: Any) -> EntropyReport:
        """Token-weighted per-layer means, entropy changes and the boundary layer from per-token statistics."""
        # named fields "<kind>_<suffix>" for the reported statistics; every other scalar one goes to `statistics`
        named = {
            f"{kind}_{suffix}": _floats(t.mean(-1))
            for stat, suffix in REPORTED_STATISTICS.items()
            for kind, t in stats[stat].items()
        }
        other = {
            stat: {kind: _floats(t.float().mean(-1)) for kind, t in by_kind.items()}
            for stat, by_kind in stats.values.items()
            if stat not in REPORTED_STATISTICS and not REDUCERS[stat].per_token_k
        }
        ffn_change = stats.ffn_entropy_change().mean(-1)
        b = boundary_layer(ffn_change)
        return cls(
            model=model,
            num_layers=stats.num_layers,
            vocab_size=stats.vocab_size,
            norm=stats.norm,
            num_tokens=stats.num_tokens,
            num_sequences=int(stats.sequence_index.max()) + 1 if stats.sequence_index is not None else 1,
            **named,  # type: ignore[arg-type]
            layer_entropy_change=_floats(stats.layer_entropy_change().mean(-1)),
            attn_entropy_change=_floats(stats.attn_entropy_change().mean(-1)),
            ffn_entropy_change=_floats(ffn_change),
            boundary_layer=b.layer,
            boundary_reason=b.reason,
            boundary_run=list(b.run) if b.run else None,
            layer_logprob=other.get("logprob", {}).get("layer"),
            statistics=other,
            token_statistics=stats,
            **extra,
        )

    def to_dict(self) -> dict:
        """Everything except the per-token statistics, JSON-ready."""
        skip = ("token_statistics", "response_tokens")
        d = json.loads(json.dumps({f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}))
        d["layer_numbering"] = (
            "paper: layer_* arrays index layers 0..L (0 = embedding output H^0); all other per-layer "
            "arrays are layers 1..L"
        )
        d["max_entropy"] = round(self.max_entropy, 6)
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """The report as a JSON string (the content of ``entropy.json``)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> EntropyReport:
        """Read a report back from ``entropy.json`` (path) or its text."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text_or_path)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise InputFormatError(f"cannot read entropy report {path}: {exc.strerror}") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"entropy report is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        d.pop("layer_numbering", None)
        d.pop("max_entropy", None)
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("model", "num_layers", "layer_entropy", "ffn_entropy_change") if k not in d]
        if missing:
            raise InputFormatError(f"entropy report lacks {missing}; was it written by `bupo entropy`?")
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``entropy.json`` into ``out_dir`` and return ``{"entropy": path}``.

        Figures are drawn by the plotting layer: :func:`bupo_core.reporting.entropy_plots.save_entropy_report`
        writes the JSON and the PNG figures together.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"entropy": out / "entropy.json"}
        paths["entropy"].write_text(self.to_json() + "\n", encoding="utf-8")
        return paths

    def summary(self) -> str:
        """A few lines for a terminal or notebook."""
        L = self.num_layers
        lines = [
            f"{self.model}: {L} layers, norm={self.norm!r}, {self.num_tokens} response tokens in {self.num_sequences} sequences",
            f"layer entropy H^0={self.layer_entropy[0]:.3f}, H^{L // 2}={self.layer_entropy[L // 2]:.3f}, "
            f"H^{L}={self.layer_entropy[L]:.3f} nats (max ln N = {self.max_entropy:.2f})",
            f"boundary layer: {self.boundary_layer} ({self.boundary_reason})",
        ]
        return "\n".join(lines)


# --------------------------------------------------------------------------- pipeline
def _prompt_text(tokenizer: Any, prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def analyse_entropy(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt | PromptResponse],
    responses: Sequence[str] | None = None,
    *,
    config: AnalysisConfig | None = None,
    model_name: str | None = None,
    progress: bool = True,
    settings: dict | None = None,
) -> EntropyReport:
    """Run the paper's entropy analysis on ``prompts`` and return an :class:`EntropyReport`.

    Args:
        model: a supported causal LM (any device; statistics are float32).
        tokenizer: its tokenizer.
        prompts: raw texts, message lists, or :class:`PromptResponse` items (whose responses, when
            present, are used instead of sampling).
        responses: optional response texts, one per prompt (overrides sampling).
        config: :class:`AnalysisConfig`.
        model_name: recorded in the report (default: ``config.name_or_path``).
        progress: tqdm bar over prompts.
        settings: extra entries recorded in ``report.settings`` (e.g. the task name).

    Raises:
        InputFormatError: empty response, sequence longer than the model's context, no prompts.
    """
    cfg = config or AnalysisConfig()
    items = [p if isinstance(p, PromptResponse) else PromptResponse(prompt=p) for p in prompts]
    if not items:
        raise InputFormatError("no prompts to analyse")
    if responses is not None:
        if len(responses) != len(items):
            raise InputFormatError(f"{len(items)} prompts but {len(responses)} responses; give one response per prompt")
        items = [PromptResponse(it.prompt, r, it.line) for it, r in zip(items, responses)]
    given = [it.response is not None for it in items]
    if any(given) and not all(given):
        raise InputFormatError("either every prompt has a response or none has (then responses are sampled)")
    sampling = not given[0]
    adapter = ArchitectureAdapter(model)
    device = next(model.parameters()).device
    limit = context_length(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lens_cfg = LensConfig(norm=cfg.norm, chunk_mib=cfg.chunk_mib, top_k=cfg.top_k, statistics=tuple(cfg.statistics))
    was_training = model.training
    model.eval()

    parts: list[InternalPolicyStatistics] = []
    samples: list[dict] = []
    response_tokens: list[list[str]] = []
    t_gen = t_lens = 0.0
    per_call = max(1, cfg.batch_size // cfg.samples_per_prompt) if sampling else cfg.batch_size
    bar = tqdm(total=len(items), desc="entropy", unit="prompt", disable=not progress)
    try:
        for start in range(0, len(items), per_call):
            group = items[start : start + per_call]
            if sampling:
                t0 = time.perf_counter()
                roll = generate(
                    model,
                    tokenizer,
                    [it.prompt for it in group],
                    group_size=cfg.samples_per_prompt,
                    config=SamplingConfig(
                        max_new_tokens=cfg.max_new_tokens,
                        temperature=cfg.temperature,
                        top_p=cfg.top_p,
                        batch_size=max(cfg.batch_size, 1),
                    ),
                    seed=cfg.seed + start,
                    chat_template_kwargs=cfg.chat_template_kwargs,
                )
                t_gen += time.perf_counter() - t0
                prompt_ids, resp_ids = roll.prompt_ids, roll.response_ids
                texts = roll.texts
                which = [group[i] for i in roll.prompt_index]
            else:
                prompt_ids, resp_ids, texts, which = [], [], [], []
                for k, it in enumerate(group):
                    where = f"line {it.line}" if it.line is not None else f"pair {start + k}"
                    ids = encode_response(tokenizer, it.response or "")
                    if not ids:
                        raise InputFormatError(f"{where}: the response has no tokens; give a non-empty response")
                    prompt_ids.append(
                        encode_prompt(tokenizer, it.prompt, chat_template_kwargs=cfg.chat_template_kwargs)
                    )
                    resp_ids.append(ids)
                    texts.append(it.response)
                    which.append(it)
            for k in range(len(prompt_ids)):
                if limit is not None and len(prompt_ids[k]) + len(resp_ids[k]) > limit:
                    it = which[k]
                    where = f"line {it.line}" if it.line is not None else f"sequence {len(samples) + k}"
                    raise InputFormatError(
                        f"{where}: {len(prompt_ids[k])} prompt + {len(resp_ids[k])} response tokens exceed the "
                        f"model's context of {limit}; shorten the prompt or response (or lower --max-new-tokens)"
                    )
            t0 = time.perf_counter()
            batch = pack_sequences(prompt_ids, resp_ids, pad, max_length=limit).to(device)
            stats = internal_policy_statistics(
                model,
                batch.input_ids,
                batch.attention_mask,
                positions=batch.prediction_mask,
                targets=batch.targets,
                config=lens_cfg,
                adapter=adapter,
            )
            t_lens += time.perf_counter() - t0
            parts.append(stats)
            for k in range(len(prompt_ids)):
                samples.append(
                    {
                        "prompt": _prompt_text(tokenizer, which[k].prompt),
                        "response": texts[k],
                        "num_tokens": len(resp_ids[k]),
                        **({"line": which[k].line} if which[k].line is not None else {}),
                    }
                )
                if cfg.keep_token_statistics and len(response_tokens) < 8:
                    response_tokens.append([tokenizer.decode([t]) for t in resp_ids[k]])
            bar.update(len(group))
    finally:
        bar.close()
        if was_training:
            model.train()
    stats = InternalPolicyStatistics.concatenate(parts)
    env = {
        "device": str(device),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    recorded = {
        "source": "sampled" if sampling else "given",
        "max_new_tokens": cfg.max_new_tokens if sampling else None,
        "temperature": cfg.temperature if sampling else None,
        "top_p": cfg.top_p if sampling else None,
        "samples_per_prompt": cfg.samples_per_prompt if sampling else 1,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "chunk_mib": cfg.chunk_mib,
        "num_prompts": len(items),
        "positions": "positions whose next-token prediction is a response token (P-1 .. P+R-2)",
        "average": "token-weighted mean over all response tokens of all samples",
        **(settings or {}),
    }
    report = EntropyReport.from_statistics(
        stats,
        model=model_name or str(getattr(model.config, "name_or_path", "") or type(model).__name__),
        settings=recorded,
        samples=samples,
        timing={"generate_s": round(t_gen, 3), "analyse_s": round(t_lens, 3)},
        environment=env,
        response_tokens=response_tokens if cfg.keep_token_statistics else None,
    )
    if not cfg.keep_token_statistics:
        report.token_statistics = None
    return report
