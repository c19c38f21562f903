"""Feature-refinement measures on tiny models: definitions checked against direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from bupo_core.capture import capture_residuals
from bupo_core.errors import LayerOutOfRangeError
from bupo_core.models import tiny_model
from bupo_core.refinement import ReferenceSet, feature_refinement, list_checkpoints, summarise


@pytest.fixture
def setup():
    model = tiny_model("llama", num_layers=4)
    ref = ReferenceSet(prompt_ids=[[1, 5, 9], [1, 7]], response_ids=[[11, 12, 13, 2], [20, 21]])
    return model, ref


def test_measures_match_direct_computation(setup):
    model, ref = setup
    pt = feature_refinement(model, ref, 2, chunk_tokens=2)
    assert pt.num_tokens == ref.num_tokens == 6
    # perplexity of the response tokens under the full policy, computed directly
    nll, cos3, n = 0.0, 0.0, 0
    for p, r in zip(ref.prompt_ids, ref.response_ids):
        ids = torch.tensor([p + r])
        cap = capture_residuals(model, ids, with_logits=True)
        pos = slice(len(p) - 1, len(p) + len(r) - 1)
        logp = torch.log_softmax(cap.logits[0, pos], -1)
        nll -= logp.gather(-1, torch.tensor(r)[:, None]).sum().item()
        cos3 += torch.nn.functional.cosine_similarity(cap.resid(2)[0, pos], cap.resid(3)[0, pos], dim=-1).sum().item()
        n += len(r)
    assert pt.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert pt.cosine_to_higher["3"] == pytest.approx(cos3 / n, rel=1e-5)
    assert set(pt.cosine_to_higher) == {"3", "4"}
    assert all(v >= -1e-6 for v in pt.kl_to_higher.values())
    assert pt.layer_entropy_change == pytest.approx(pt.layer_entropy - pt.previous_layer_entropy)


def test_chunking_does_not_change_results(setup):
    model, ref = setup
    a = feature_refinement(model, ref, 1, chunk_tokens=1).to_json()
    b = feature_refinement(model, ref, 1, chunk_tokens=1000).to_json()
    for key in ("perplexity", "layer_entropy_change"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-5)
    for j in a["kl_to_higher"]:
        assert a["kl_to_higher"][j] == pytest.approx(b["kl_to_higher"][j], rel=1e-4, abs=1e-6)


def test_top_layer_is_rejected(setup):
    model, ref = setup
    with pytest.raises(LayerOutOfRangeError, match="1..3"):
        feature_refinement(model, ref, 4)
    with pytest.raises(LayerOutOfRangeError):
        feature_refinement(model, ref, 0)


def test_reference_set_round_trip_and_checkpoint_listing(setup, tmp_path):
    model, ref = setup
    ref.save(tmp_path / "ref.json")
    assert ReferenceSet.load(tmp_path / "ref.json").response_ids == ref.response_ids
    for step in (10, 2):
        model.save_pretrained(tmp_path / "run" / "checkpoints" / f"checkpoint-{step}")
    (tmp_path / "run" / "checkpoints" / "checkpoint-x").mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2, 10]
    pts = [feature_refinement(model, ref, 1, step=s) for s in (0, 5)]
    summary = summarise(pts)
    assert summary["steps"] == [0, 5] and summary["perplexity"][0] == pytest.approx(summary["perplexity"][1])


def test_kl_is_from_the_target_layer_to_the_higher_one(setup):
    """KL(pi^l || pi^j), not KL(pi^j || pi^l): checked against both directions computed by hand."""
    model, ref = setup
    with torch.no_grad():  # sharpen the near-uniform policies of the random model so KL is large
        model.get_output_embeddings().weight.mul_(40.0)
    pt = feature_refinement(model, ref, 2)
    E = model.get_output_embeddings().weight.detach()
    forward = reverse = 0.0
    for p, r in zip(ref.prompt_ids, ref.response_ids):
        cap = capture_residuals(model, torch.tensor([p + r]))
        pos = slice(len(p) - 1, len(p) + len(r) - 1)
        lp_l = torch.log_softmax(cap.resid(2)[0, pos] @ E.T, -1)
        lp_j = torch.log_softmax(cap.resid(4)[0, pos] @ E.T, -1)
        forward += (lp_l.exp() * (lp_l - lp_j)).sum().item()
        reverse += (lp_j.exp() * (lp_j - lp_l)).sum().item()
    n = ref.num_tokens
    assert abs(forward - reverse) > 0.05 * max(forward, reverse)  # the two directions are distinguishable here
    assert pt.kl_to_higher["4"] == pytest.approx(forward / n, rel=1e-4)
    assert pt.kl_to_higher["4"] != pytest.approx(reverse / n, rel=1e-4)
