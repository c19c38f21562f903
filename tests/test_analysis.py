"""Tests for bupo_core.analysis: pairs files, task prompts, the entropy pipeline and its report."""

from __future__ import annotations

import json

import pytest
import torch

from bupo_core.analysis import (
    PAPER_SYSTEM_PROMPT,
    AnalysisConfig,
    EntropyReport,
    PromptResponse,
    analyse_entropy,
    load_pairs,
    style_prompt,
    task_prompts,
)
from bupo_core.entropy import boundary_layer
from bupo_core.errors import InputFormatError
from bupo_core.lens import InternalPolicyStatistics, internal_policy_statistics
from bupo_core.sequences import encode_prompt, encode_response, pack_sequences

PAIRS = [
    {"prompt": "What is 2 + 3?", "response": "The answer is 5."},
    {"messages": [{"role": "user", "content": "Add 4 and 4."}], "response": "4 + 4 = 8, so the answer is 8."},
    {
        "messages": [{"role": "system", "content": PAPER_SYSTEM_PROMPT}, {"role": "user", "content": "1+1?"}],
        "response": "\\boxed{2}",
    },
]


def _write(tmp_path, lines, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- pairs files
def test_load_pairs_reads_both_forms_and_skips_blank_lines(tmp_path):
    path = _write(tmp_path, [json.dumps(PAIRS[0]), "", json.dumps(PAIRS[1])])
    items = load_pairs(path)
    assert [it.line for it in items] == [1, 3]
    assert items[0].prompt == "What is 2 + 3?" and items[0].response == "The answer is 5."
    assert items[1].prompt[0]["role"] == "user"


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"prompt": "x", "response": "y"', "not valid JSON"),
        ('["prompt", "response"]', "expected a JSON object"),
        ('{"prompt": "x"}', "missing 'response'"),
        ('{"prompt": "x", "messages": [], "response": "y"}', "exactly one of 'messages' or 'prompt'"),
        ('{"response": "y"}', "found neither"),
        ('{"prompt": "x", "response": "   "}', "response is empty"),
        ('{"prompt": "x", "response": 5}', "'response' must be a string"),
        ('{"messages": [{"role": "user"}], "response": "y"}', "message 0"),
        ('{"messages": "hi", "response": "y"}', "non-empty list"),
        ('{"prompt": "", "response": "y"}', "non-empty string"),
    ],
)
def test_malformed_pairs_name_the_line(tmp_path, bad, message):
    path = _write(tmp_path, [json.dumps(PAIRS[0]), json.dumps(PAIRS[1]), bad])
    with pytest.raises(InputFormatError, match=message) as err:
        load_pairs(path)
    assert f"{path}:3" in str(err.value)


def test_missing_and_empty_pairs_files(tmp_path):
    with pytest.raises(InputFormatError, match="does not exist"):
        load_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(InputFormatError, match="no pairs"):
        load_pairs(_write(tmp_path, ["", "  "]))


# ---------------------------------------------------------------- task prompts
def test_task_prompts_styles_and_seed():
    boxed = task_prompts("chain_sum", 3, seed=1)
    assert len(boxed) == 3 and boxed[0][0] == {"role": "system", "content": PAPER_SYSTEM_PROMPT}
    assert boxed == task_prompts("chain_sum", 3, seed=1)
    assert boxed != task_prompts("chain_sum", 3, seed=2)
    short = task_prompts("chain_sum", 1, seed=1, style="short", min_terms=2, max_terms=2)
    assert short[0][0]["content"].endswith("Reply with just the number.")
    assert style_prompt("q", "plain") == [{"role": "user", "content": "q"}]


def test_task_prompt_errors():
    with pytest.raises(InputFormatError, match="Did you mean chain_sum"):
        task_prompts("chain_sun", 2)
    with pytest.raises(InputFormatError, match="unknown prompt style"):
        task_prompts("chain_sum", 2, style="fancy")
    with pytest.raises(InputFormatError, match=">= 1"):
        task_prompts("chain_sum", 0)
    with pytest.raises(InputFormatError, match="bad settings"):
        task_prompts("chain_sum", 2, no_such_setting=3)


# ---------------------------------------------------------------- pipeline
def test_given_responses_report(tiny_llm):
    model, tok = tiny_llm
    items = [PromptResponse(p.get("messages") or p["prompt"], p["response"]) for p in PAIRS]
    report = analyse_entropy(model, tok, items, config=AnalysisConfig(batch_size=2), progress=False, model_name="tiny")
    L = 2
    expected_tokens = sum(len(encode_response(tok, p["response"])) for p in PAIRS)
    assert report.num_tokens == expected_tokens and report.num_sequences == 3
    assert len(report.layer_entropy) == L + 1 and len(report.layer_norm) == L + 1
    for key in (
        "attn_entropy",
        "ffn_entropy",
        "attn_input_entropy",
        "ffn_input_entropy",
        "layer_entropy_change",
        "attn_entropy_change",
        "ffn_entropy_change",
    ):
        assert len(getattr(report, key)) == L, key
    # means of per-token changes = changes of means (same tokens everywhere)
    for l in range(L):
        assert report.layer_entropy_change[l] == pytest.approx(
            report.layer_entropy[l + 1] - report.layer_entropy[l], abs=1e-5
        )
        assert report.ffn_entropy_change[l] == pytest.approx(
            report.ffn_entropy[l] - report.ffn_input_entropy[l], abs=1e-5
        )
        assert report.attn_entropy_change[l] == pytest.approx(
            report.attn_entropy[l] - report.attn_input_entropy[l], abs=1e-5
        )
    assert report.boundary_layer == boundary_layer(report.ffn_entropy_change).layer
    assert report.boundary_reason
    assert report.settings["source"] == "given"


def test_token_weighted_mean_pools_all_tokens(tiny_llm):
    """The report's per-layer mean weighs every response token once (not every sequence)."""
    model, tok = tiny_llm
    items = [PromptResponse(p.get("messages") or p["prompt"], p["response"]) for p in PAIRS]
    report = analyse_entropy(model, tok, items, config=AnalysisConfig(batch_size=3), progress=False)
    parts = []
    for p in PAIRS:
        b = pack_sequences(
            [encode_prompt(tok, p.get("messages") or p["prompt"])],
            [encode_response(tok, p["response"])],
            tok.pad_token_id,
        )
        parts.append(internal_policy_statistics(model, b.input_ids, b.attention_mask, positions=b.prediction_mask))
    pooled = InternalPolicyStatistics.concatenate(parts)
    assert report.layer_entropy == pytest.approx(pooled.entropy["layer"].mean(-1).tolist(), abs=1e-4)
    assert report.layer_norm == pytest.approx(pooled.vector_norm["layer"].mean(-1).tolist(), rel=1e-4)
    # a per-sequence average (mean of sequence means) would differ: the sequences have unequal lengths
    per_sequence = torch.stack([s.vector_norm["layer"].mean(-1) for s in parts]).mean(0)
    assert not torch.allclose(per_sequence, torch.tensor(report.layer_norm), rtol=1e-4)


def test_sampled_responses_are_seeded(tiny_llm):
    model, tok = tiny_llm
    prompts = task_prompts("chain_sum", 2, seed=0, style="short")
    cfg = AnalysisConfig(max_new_tokens=5, seed=3, samples_per_prompt=2)
    a = analyse_entropy(model, tok, prompts, config=cfg, progress=False)
    b = analyse_entropy(model, tok, prompts, config=cfg, progress=False)
    assert a.num_sequences == 4 and a.settings["source"] == "sampled"
    assert [s["response"] for s in a.samples] == [s["response"] for s in b.samples]
    assert a.layer_entropy == b.layer_entropy
    c = analyse_entropy(
        model, tok, prompts, config=AnalysisConfig(max_new_tokens=5, seed=4, samples_per_prompt=2), progress=False
    )
    assert [s["response"] for s in a.samples] != [s["response"] for s in c.samples]


def test_norm_switch_changes_the_policies(tiny_llm):
    model, tok = tiny_llm
    items = [PromptResponse("What is 2 + 3?", "It is 5.")]
    none = analyse_entropy(model, tok, items, progress=False)
    final = analyse_entropy(model, tok, items, config=AnalysisConfig(norm="final"), progress=False)
    assert final.norm == "final" and none.norm == "none"
    assert none.layer_entropy != final.layer_entropy
    assert none.layer_norm == final.layer_norm  # norms are of the raw vectors either way


def test_report_json_roundtrip_and_save(tiny_llm, tmp_path):
    model, tok = tiny_llm
    report = analyse_entropy(model, tok, [PromptResponse("Hi", "Hello there.")], progress=False, model_name="tiny")
    d = json.loads(report.to_json())
    for key in (
        "model",
        "num_layers",
        "norm",
        "num_tokens",
        "layer_entropy",
        "attn_entropy",
        "ffn_entropy",
        "attn_input_entropy",
        "ffn_input_entropy",
        "layer_entropy_change",
        "attn_entropy_change",
        "ffn_entropy_change",
        "boundary_layer",
    ):
        assert key in d, key
    back = EntropyReport.from_json(report.to_json())
    assert back.layer_entropy == report.layer_entropy and back.token_statistics is None
    from bupo_core.reporting.entropy_plots import save_entropy_report

    paths = save_entropy_report(report, tmp_path / "out")
    assert {p.name for p in paths.values()} == {
        "entropy.json",
        "entropy_flow.png",
        "entropy_change.png",
        "norms.png",
        "token_heatmap.png",
    }
    assert EntropyReport.from_json(paths["entropy"]).num_tokens == report.num_tokens
    with pytest.raises(InputFormatError, match="not valid JSON"):
        EntropyReport.from_json("{broken")
    with pytest.raises(InputFormatError, match="lacks"):
        EntropyReport.from_json('{"model": "x"}')


def test_pipeline_bad_input(tiny_llm):
    model, tok = tiny_llm
    with pytest.raises(InputFormatError, match="no prompts"):
        analyse_entropy(model, tok, [], progress=False)
    with pytest.raises(InputFormatError, match="no tokens"):
        analyse_entropy(model, tok, ["Hi"], responses=[""], progress=False)
    with pytest.raises(InputFormatError, match="one response per prompt"):
        analyse_entropy(model, tok, ["Hi", "Yo"], responses=["a"], progress=False)
    long = " ".join(["word"] * 600)  # the tiny model's context is 512 tokens
    with pytest.raises(InputFormatError, match="context of 512"):
        analyse_entropy(model, tok, ["Hi"], responses=[long], progress=False)
    with pytest.raises(InputFormatError, match="norm must be"):
        AnalysisConfig(norm="ln_f")
