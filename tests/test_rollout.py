"""Sampling: shared prompt prefill gives the same samples; the sampler's entropy is the policy's."""

from __future__ import annotations

import pytest
import torch

from bupo_core.models import TINY_FAMILIES, load_model
from bupo_core.rollout import SamplingConfig, generate
from bupo_core.trainer import policy_logprobs


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_shared_prefill_gives_the_same_samples(family):
    model, tok = load_model(f"tiny-random-{family}", device="cpu")
    prompts = ["hello there", "two plus two is", "x"]
    runs = [
        generate(
            model,
            tok,
            prompts,
            group_size=4,
            config=SamplingConfig(max_new_tokens=8, share_prefill=share, batch_size=8),
            seed=5,
            record_entropy=True,
        )
        for share in (True, False)
    ]
    assert runs[0].response_ids == runs[1].response_ids
    flat = [[x for row in r.extras["entropy"] for x in row] for r in runs]
    assert flat[0] == pytest.approx(flat[1], abs=1e-4)


def test_sampler_entropy_matches_a_scoring_forward():
    model, tok = load_model("tiny-random-llama", device="cpu")
    rollout = generate(
        model,
        tok,
        ["hello there", "two plus two"],
        group_size=3,
        config=SamplingConfig(max_new_tokens=5),
        seed=3,
        record_entropy=True,
    )
    batch = rollout.pack(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    with torch.no_grad():
        _, ent = policy_logprobs(model, batch)
    m = batch.prediction_mask.bool()
    scored = [row[mask].tolist() for row, mask in zip(ent, m)]
    assert sum(len(a) for a in scored) == m.sum()
    for a, b in zip(rollout.extras["entropy"], scored):
        assert len(a) == len(b) and a == pytest.approx(b, abs=1e-4)
    # temperature does not change the recorded (temperature-1) policy entropy's definition
    hot = generate(
        model,
        tok,
        ["hello there"],
        group_size=2,
        config=SamplingConfig(max_new_tokens=1, temperature=3.0),
        seed=3,
        record_entropy=True,
    )
    cold = generate(
        model,
        tok,
        ["hello there"],
        group_size=2,
        config=SamplingConfig(max_new_tokens=1, temperature=0.5),
        seed=3,
        record_entropy=True,
    )
    assert hot.extras["entropy"][0][0] == pytest.approx(cold.extras["entropy"][0][0], abs=1e-5)
