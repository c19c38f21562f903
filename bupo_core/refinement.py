"""Feature refinement (paper section 4): what optimising internal policy l does to the layers above.

All measures are computed on a fixed *reference set* of (prompt, response) pairs, so every
checkpoint is measured on exactly the same tokens. The positions are the response positions of
:mod:`bupo_core.sequences` (the positions whose next-token prediction is a response token), and
every mean is token-weighted over all of them. Internal policies are the paper's (raw H through the
unembedding, ``norm="none"``) unless ``norm="final"`` is asked for.

For a target layer ``l`` (paper numbering) and every higher layer ``j`` in ``l+1..L``:

* ``cosine_to_higher[j]``: mean over tokens of ``cos(H^l_t, H^j_t)``. The paper reports that it
  rises during the internal phase: H^l learns features the upper layers would otherwise add.
* ``layer_entropy_change``: ``mean_t H(pi^l_t) - mean_t H(pi^{l-1}_t)`` (nats); the paper sees it
  turn negative during the internal phase.
* ``perplexity``: ``exp`` of the mean negative log-likelihood of the reference response tokens
  under the full policy (the model's own logits).
* ``kl_to_higher[j]``: mean over tokens of ``KL(pi^l_t || pi^j_t) = sum_v pi^l(v) (log pi^l(v) -
  log pi^j(v))``: the divergence *from* the lower layer's policy *to* the higher one's, i.e. how
  surprised layer j's policy is by samples from layer l's.

Memory: one sequence at a time, and at most two [chunk x vocabulary] float32 tensors alive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import models  # models.load_model is looked up when called: tests replace it
from .adapter import ArchitectureAdapter, Norm
from .capture import capture_residuals
from .policy_head import REDUCERS, PolicyChunk, PolicyHead, iter_chunks, kl_divergence
from .rollout import SamplingConfig, generate
from .runs import list_checkpoints as run_checkpoints
from .sampling import MAX_NEW_TOKENS_SHORT_ANALYSIS
from .sequences import pack_sequences


@dataclass
class ReferenceSet:
    """Fixed (prompt, response) token pairs on which checkpoints are compared.

    Attributes:
        prompt_ids: prompt token ids per pair.
        response_ids: response token ids per pair (non-empty).
        source: how it was made (model, task, seed), for the record.
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_tokens(self) -> int:
        return sum(len(r) for r in self.response_ids)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> ReferenceSet:
        return cls(**json.loads(Path(path).read_text()))


def build_reference_set(
    model: Any,
    tokenizer: Any,
    task: Any,
    *,
    num_prompts: int = 16,
    max_new_tokens: int = MAX_NEW_TOKENS_SHORT_ANALYSIS,
    seed: int = 1234,
) -> ReferenceSet:
    """Sample one response per prompt from ``model`` (temperature 1.0) on the first ``num_prompts`` problems.

    Empty responses are dropped (they have no tokens to measure).
    """
    examples = task.examples[:num_prompts]
    roll = generate(
        model,
        tokenizer,
        [task.prompt(e) for e in examples],
        group_size=1,
        config=SamplingConfig(max_new_tokens=max_new_tokens),
        seed=seed,
        chat_template_kwargs=task.chat_template_kwargs,
    )
    keep = [i for i, r in enumerate(roll.response_ids) if len(r) > 0]
    return ReferenceSet(
        prompt_ids=[roll.prompt_ids[i] for i in keep],
        response_ids=[roll.response_ids[i] for i in keep],
        source={
            "model": str(getattr(model.config, "name_or_path", "")),
            "task": task.name,
            "seed": seed,
            "max_new_tokens": max_new_tokens,
        },
    )


@dataclass
class RefinementPoint:
    """The feature-refinement measures of one model (checkpoint) at target layer ``layer``."""

    step: int
    layer: int
    num_tokens: int
    cosine_to_higher: dict[str, float]
    kl_to_higher: dict[str, float]
    layer_entropy: float
    previous_layer_entropy: float
    layer_entropy_change: float
    perplexity: float
    norm: str = "none"
    checkpoint: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def feature_refinement(
    model: Any,
    reference: ReferenceSet,
    layer: int,
    *,
    norm: Norm = "none",
    step: int = 0,
    chunk_tokens: int = 128,
    checkpoint: str = "",
) -> RefinementPoint:
    """Measure cosine similarity, entropy change, perplexity and KL at ``layer`` on ``reference``.

    Args:
        model: a supported causal LM.
        reference: the fixed token pairs.
        layer: target layer l, paper numbering 1..L-1 (there must be a higher layer).
        norm: internal-policy convention for the entropy and KL (``"none"`` = paper).
        step: the training step of this checkpoint (0 = base model).
        chunk_tokens: tokens per projected chunk (bounds the [chunk x vocabulary] tensors).

    Returns:
        A :class:`RefinementPoint`.
    """
    adapter = ArchitectureAdapter(model)
    adapter.check_layer(
        layer, allow_embedding=False, below_top=True, what="feature refinement needs a layer below the top one; layer"
    )
    L = adapter.num_layers
    head = PolicyHead.from_adapter(adapter, norm)
    device = next(model.parameters()).device
    uppers = list(range(layer + 1, L + 1))
    cos_sum = {j: 0.0 for j in uppers}
    kl_sum = {j: 0.0 for j in uppers}
    ent_l = ent_prev = nll = 0.0
    count = 0
    pad = 0
    was_training = model.training
    model.eval()
    for p_ids, r_ids in zip(reference.prompt_ids, reference.response_ids):
        batch = pack_sequences([p_ids], [r_ids], pad)
        cap = capture_residuals(
            model,
            batch.input_ids.to(device),
            positions=batch.prediction_mask[0].bool(),
            with_logits=True,
            adapter=adapter,
        )
        targets = batch.targets[0][batch.prediction_mask[0].bool()].to(device)
        h = {j: cap.resid(j)[0].float() for j in [layer - 1, layer, *uppers]}
        n = h[layer].shape[0]
        for sl in iter_chunks(n, chunk_tokens):
            pol_l = head.chunk(h[layer][sl])
            pol_prev = head.chunk(h[layer - 1][sl])
            ent_prev += float(REDUCERS["entropy"].fn(pol_prev).sum())
            del pol_prev
            for j in uppers:
                cos_sum[j] += float(F.cosine_similarity(h[layer][sl], h[j][sl], dim=-1).sum())
                kl_sum[j] += float(kl_divergence(pol_l, head.chunk(h[j][sl])).sum())
            ent_l += float(REDUCERS["entropy"].fn(pol_l).sum())
            full = PolicyChunk(cap.logits[0][sl].float(), targets[sl])
            nll += float(-REDUCERS["logprob"].fn(full).sum())
        count += n
    if was_training:
        model.train()
    if count == 0:
        raise ValueError("the reference set has no response tokens")
    return RefinementPoint(
        step=step,
        layer=layer,
        num_tokens=count,
        cosine_to_higher={str(j): cos_sum[j] / count for j in uppers},
        kl_to_higher={str(j): kl_sum[j] / count for j in uppers},
        layer_entropy=ent_l / count,
        previous_layer_entropy=ent_prev / count,
        layer_entropy_change=(ent_l - ent_prev) / count,
        perplexity=math.exp(nll / count),
        norm=norm,
        checkpoint=checkpoint,
    )


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoints/checkpoint-<step>`` of a training run, sorted by step."""
    return [
        (int(p.name.removeprefix("checkpoint-")), p)
        for p in run_checkpoints(Path(run_dir) / "checkpoints", need="weights")
    ]


def refinement_over_run(
    run_dir: str | Path,
    reference: ReferenceSet,
    layer: int,
    *,
    base_model: str | None = None,
    norm: Norm = "none",
    device: str | None = None,
    progress: bool = True,
) -> list[RefinementPoint]:
    """Measure every checkpoint of a run (and the base model at step 0) on the same reference set.

    Args:
        run_dir: a ``bupo train`` output folder (its ``config.json`` names the base model).
        base_model: override the base model (step 0); ``None`` reads it from ``config.json``.
    """
    run = Path(run_dir)
    if base_model is None and (run / "config.json").exists():
        base_model = json.loads((run / "config.json").read_text()).get("model")
    items: list[tuple[int, str]] = ([(0, base_model)] if base_model else []) + [
        (s, str(p)) for s, p in list_checkpoints(run)
    ]
    if not items:
        raise FileNotFoundError(
            f"no checkpoints under {run / 'checkpoints'} and no base model: train with --save-every first"
        )
    points = []
    for step, src in tqdm(items, desc="checkpoints", disable=not progress, leave=False):
        model, _ = models.load_model(src, device=device, dtype="float32")
        points.append(feature_refinement(model, reference, layer, norm=norm, step=step, checkpoint=src))
        del model
    return points


def summarise(points: Sequence[RefinementPoint]) -> dict[str, Any]:
    """First-vs-last changes of each measure (mean over higher layers for cosine and KL)."""
    if not points:
        return {}
    a, b = points[0], points[-1]

    def mean(d: dict[str, float]) -> float:
        return sum(d.values()) / len(d)

    return {
        "steps": [a.step, b.step],
        "mean_cosine_to_higher": [mean(a.cosine_to_higher), mean(b.cosine_to_higher)],
        "layer_entropy_change": [a.layer_entropy_change, b.layer_entropy_change],
        "perplexity": [a.perplexity, b.perplexity],
        "mean_kl_to_higher": [mean(a.kl_to_higher), mean(b.kl_to_higher)],
    }
