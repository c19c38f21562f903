"""Avg@K / Pass@k estimators against hand-computed cases, bootstrap, and the evaluator end to end."""

from __future__ import annotations

import json
import math
from math import comb

import pytest

from bupo_core.evaluate import (
    EvalConfig,
    avg_at_k,
    bootstrap_interval,
    compare,
    evaluate,
    has_answer,
    load_eval,
    pass_at_k,
    pass_at_k_curve,
)


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (5, 0, 1, 0.0),  # c = 0: never
        (5, 5, 3, 1.0),  # c = n: always
        (5, 2, 1, 2 / 5),  # pass@1 = c / n
        (5, 2, 2, 1 - comb(3, 2) / comb(5, 2)),  # 0.7
        (10, 3, 5, 1 - comb(7, 5) / comb(10, 5)),  # 0.91666...
        (300, 1, 256, 256 / 300),  # one correct in 300, budget 256
        (4, 3, 2, 1.0),  # n - c < k: any 2 of 4 include a correct one
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_n_below_k():
    with pytest.raises(ValueError, match="at least 4 samples"):
        pass_at_k(3, 1, 4)


@pytest.mark.parametrize("n,c,k", [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 1, 0)])
def test_pass_at_k_rejects_bad_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_curve_is_monotone_and_starts_at_avg():
    correct = [0, 1, 3, 8, 2]
    curve = pass_at_k_curve(correct, 8)
    assert curve[1] == pytest.approx(avg_at_k(correct, 8))
    vals = [curve[k] for k in range(1, 9)]
    assert all(b >= a - 1e-12 for a, b in zip(vals, vals[1:]))
    assert curve[8] == pytest.approx(4 / 5)  # problems with any correct sample


def test_bootstrap_interval_contains_mean_and_shrinks():
    small = bootstrap_interval([0, 1] * 5, seed=1)
    large = bootstrap_interval([0, 1] * 500, seed=1)
    assert small[0] <= 0.5 <= small[1]
    assert (large[1] - large[0]) < (small[1] - small[0])


def test_paired_compare():
    res = {"a": {"correct": [4, 4, 4, 4], "num_samples": 4}, "b": {"correct": [0, 0, 0, 0], "num_samples": 4}}
    out = compare(res)
    assert out["a - b"]["mean"] == 1.0 and out["a - b"]["ci95"] == [1.0, 1.0]


def test_has_answer():
    assert has_answer("the answer is 12", "last_number")
    assert not has_answer("no idea", "last_number")
    assert has_answer(r"so \boxed{3/4}", "boxed")
    assert not has_answer("so 3/4", "boxed")


def test_evaluate_end_to_end_on_tiny_model(tiny_llm, tmp_path):
    from bupo_core.tasks import load_task

    model, tok = tiny_llm
    task = load_task("chain_sum", size=6, seed=99, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    cfg = EvalConfig(num_problems=3, k=4, max_new_tokens=6, seed=0)
    res = evaluate(model, tok, task, cfg, progress=False)
    data = res.to_json()
    assert data["num_problems"] == 3 and data["num_samples"] == 4
    assert set(data["pass_at_k"]) == {"1", "2", "3", "4"}
    assert 0 <= data["avg_at_k"] <= 1 and 0 <= data["no_answer_rate"] <= 1
    assert data["avg_at_k"] == pytest.approx(data["pass_at_k"]["1"])
    res.save(tmp_path)
    loaded = load_eval(tmp_path)
    assert len(loaded["correct"]) == 3
    lines = (tmp_path / "per_problem.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    assert len(lines) == 3 and row["num_correct"] == res.problems[0].num_correct and row["num_samples"] == 4
    assert "responses" not in row and len(lines[0]) < 200  # small: committed per sweep cell
    texts = (tmp_path / "responses.jsonl").read_text().splitlines()
    assert len(texts) == 3 and len(json.loads(texts[0])["responses"]) == 4
    again = evaluate(model, tok, task, cfg, progress=False).to_json()
    assert again["pass_at_k"] == data["pass_at_k"]  # seeded


def test_evaluate_rejects_too_many_problems(tiny_llm):
    from bupo_core.tasks import load_task

    model, tok = tiny_llm
    task = load_task("chain_sum", size=2, seed=1)
    with pytest.raises(ValueError, match="fewer than num_problems"):
        evaluate(model, tok, task, EvalConfig(num_problems=5, k=2), progress=False)


def test_avg_at_k_of_empty_is_nan():
    assert math.isnan(avg_at_k([], 4))
