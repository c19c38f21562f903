"""The policy head: projection, reducers registry, chunking, float32 under autocast, KL direction."""

from __future__ import annotations

import pytest
import torch
from numerics import assert_topk_agrees

from bupo_core.adapter import ArchitectureAdapter
from bupo_core.errors import InputFormatError
from bupo_core.lens import LensConfig, internal_policy_statistics
from bupo_core.models import tiny_model
from bupo_core.policy_head import (
    REDUCERS,
    PolicyChunk,
    PolicyHead,
    Reducer,
    check_norm,
    chunked_logprob_entropy,
    kl_divergence,
    reduce_policy,
    register_reducer,
)


def test_reduce_policy_matches_dense_and_chunking_does_not_matter():
    torch.manual_seed(0)
    head = PolicyHead(torch.randn(50, 8), torch.randn(50))
    x, t = torch.randn(13, 8), torch.randint(0, 50, (13,))
    logp = torch.log_softmax(x @ head.weight.T + head.bias, -1)
    for chunk in (1, 4, 100):
        out = reduce_policy(
            head,
            x,
            ("entropy", "logprob", "topk_ids", "topk_probs", "vector_norm"),
            targets=t,
            top_k=3,
            chunk_size=chunk,
        )
        assert torch.allclose(out["entropy"], -(logp.exp() * logp).sum(-1), atol=1e-5)
        assert torch.allclose(out["logprob"], logp.gather(-1, t[:, None])[:, 0], atol=1e-5)
        assert_topk_agrees(out["topk_ids"], logp, atol=1e-5)  # chunked vs dense: near ties may swap
        assert torch.allclose(out["topk_probs"], logp.topk(3).values.exp(), atol=1e-6)
        assert torch.allclose(out["vector_norm"], x.norm(dim=-1))


def test_final_norm_and_softcap_belong_to_the_final_convention():
    adapter = ArchitectureAdapter(tiny_model("gemma2"))
    h = torch.randn(3, adapter.hidden_size) * 50
    raw = PolicyHead.from_adapter(adapter, "none")
    lens = PolicyHead.from_adapter(adapter, "final")
    assert raw.norm is None and raw.softcap is None
    assert lens.softcap == adapter.logit_softcap and lens.softcap
    assert torch.allclose(raw.logits(h), h @ adapter.unembed_weight.detach().float().T, atol=1e-4)
    z = adapter.final_norm(h) @ adapter.unembed_weight.T
    assert torch.allclose(lens.logits(h), torch.tanh(z / lens.softcap) * lens.softcap, atol=1e-4)


def test_logits_are_float32_inside_bf16_autocast():
    head = PolicyHead(torch.randn(40, 16))
    x = torch.randn(5, 16)
    ref = head.logits(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = head.logits(x)
        lp, ent = chunked_logprob_entropy(x, head.weight, torch.zeros(5, dtype=torch.long), chunk_size=2)
    assert z.dtype == torch.float32 and torch.equal(z, ref)
    assert lp.dtype == torch.float32
    assert torch.allclose(lp, torch.log_softmax(ref, -1)[:, 0], atol=1e-6)


def test_kl_divergence_direction():
    p = PolicyChunk(torch.tensor([[2.0, 0.0, -1.0]]))
    q = PolicyChunk(torch.tensor([[0.0, 0.0, 0.0]]))
    lp, lq = torch.log_softmax(p.logits, -1), torch.log_softmax(q.logits, -1)
    assert torch.allclose(kl_divergence(p, q), (lp.exp() * (lp - lq)).sum(-1))
    assert not torch.allclose(kl_divergence(p, q), kl_divergence(q, p), atol=1e-3)


def test_a_registered_statistic_reaches_the_lens():
    """Adding a statistic is one register_reducer call; the lens computes it for every layer and kind."""
    register_reducer("max_prob", Reducer(lambda c: c.probs.max(-1).values, description="probability of the top token"))
    try:
        model = tiny_model("llama")
        ids = torch.tensor([[1, 2, 3, 4]])
        stats = internal_policy_statistics(model, ids, config=LensConfig(statistics=("max_prob", "entropy")))
        assert set(stats.values) == {"max_prob", "entropy"}
        E = model.get_output_embeddings().weight
        from bupo_core.capture import capture_residuals

        h = capture_residuals(model, ids).resid(1)[0]
        assert torch.allclose(stats["max_prob"]["layer"][1], torch.softmax(h @ E.T, -1).max(-1).values, atol=1e-5)
    finally:
        REDUCERS.pop("max_prob")
    with pytest.raises(ValueError, match="unknown statistics"):
        LensConfig(statistics=("max_prob",))


def test_one_norm_check():
    assert check_norm("final") == "final"
    with pytest.raises(InputFormatError, match="norm must be"):
        check_norm("first")


def test_a_registered_statistic_reaches_the_report_and_its_plot(tiny_llm):
    import matplotlib

    matplotlib.use("Agg")
    from bupo_core.analysis import AnalysisConfig, PromptResponse, analyse_entropy
    from bupo_core.lens import LENS_STATISTICS
    from bupo_core.reporting import entropy_plots as plots

    register_reducer("max_prob", Reducer(lambda c: c.probs.max(-1).values, description="probability of the top token"))
    try:
        model, tok = tiny_llm
        cfg = AnalysisConfig(statistics=LENS_STATISTICS + ("max_prob",))
        report = analyse_entropy(model, tok, [PromptResponse("Hi", "Hello there.")], config=cfg, progress=False)
        stats = report.token_statistics
        assert report.statistics["max_prob"]["ffn"] == pytest.approx(
            stats["max_prob"]["ffn"].mean(-1).tolist(), abs=1e-6
        )
        assert report.layer_logprob == report.statistics["logprob"]["layer"]
        ax = plots.plot_statistic(report, "max_prob").axes[0]
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert list(lines["layer"].get_xdata()) == list(range(report.num_layers + 1))
        assert list(lines["ffn"].get_ydata()) == report.statistics["max_prob"]["ffn"]
        assert '"max_prob"' in report.to_json()
    finally:
        REDUCERS.pop("max_prob")
