"""Tests of the task interface: reasoning-gym generators, JSONL files (errors with line numbers), hub datasets offline, templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bupo_core.errors import InputFormatError, ModelNotAvailableError
from bupo_core.tasks import PAPER_SYSTEM_PROMPT, TEMPLATES, get_template, known_tasks, load_task


@pytest.mark.parametrize("name", ["chain_sum", "basic_arithmetic", "simple_equations", "gsm_symbolic"])
def test_reasoning_gym_tasks_build_and_grade(name):
    task = load_task(name, size=5, seed=3)
    assert len(task) == 5 and task.scorer == "reasoning_gym"
    e = task.examples[0]
    assert e.question and e.answer
    msgs = task.prompt(e)
    assert msgs[-1]["content"].endswith("Reply with just the number.")
    assert e.dataset.score_answer(e.answer, e.entry) == 1.0


def test_task_config_kwargs_are_applied():
    task = load_task("chain_sum", size=20, seed=0, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    for e in task.examples:
        nums = [t for t in e.question.split("problem:")[-1].replace("=", "").split() if t.strip("-").isdigit()]
        assert len(nums) == 2 and all(len(n.strip("-")) == 1 for n in nums)


def test_bad_task_kwargs_and_unknown_task():
    with pytest.raises(InputFormatError, match="bad settings"):
        load_task("chain_sum", size=2, no_such_option=3)
    with pytest.raises(InputFormatError, match="unknown task 'nonsense'.*chain_sum.*gsm8k"):
        load_task("nonsense")


def test_serving_order_is_seeded_and_covers_every_example():
    task = load_task("chain_sum", size=10, seed=5)
    first = [task.index_at(i) for i in range(10)]
    assert sorted(first) == list(range(10))
    assert [task.index_at(i) for i in range(10, 20)] != first  # reshuffled next epoch
    again = load_task("chain_sum", size=10, seed=5)
    assert [e.question for e in again.batch(3, 4)] == [e.question for e in task.batch(3, 4)]


def test_jsonl_task(tmp_path):
    p = tmp_path / "qa.jsonl"
    p.write_text('{"question": "2+2?", "answer": 4}\n\n{"question": "1+2?", "answer": "3"}\n')
    task = load_task(str(p))
    assert [e.answer for e in task.examples] == ["4", "3"]
    assert task.scorer == "last_number"
    assert load_task(str(p), template="boxed").scorer == "boxed_math"


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"question": "a", "answer": 1}\n{"question": "b", "answer": 2\n', r"qa\.jsonl:2: not valid JSON"),
        ('{"question": "a", "answer": 1}\n\n{"question": "b"}\n', r"qa\.jsonl:3: missing key\(s\) answer"),
        ("[1, 2]\n", r"qa\.jsonl:1: expected a JSON object"),
        ('{"question": "", "answer": 1}\n', r"qa\.jsonl:1: \"question\" must be a non-empty string"),
        ('{"question": "q", "answer": [1]}\n', r"qa\.jsonl:1: \"answer\" must be a string or a number"),
        ("\n\n", "holds no examples"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path, content, match):
    p = tmp_path / "qa.jsonl"
    p.write_text(content)
    with pytest.raises(InputFormatError, match=match):
        load_task(str(p))


def test_missing_jsonl_file(tmp_path):
    with pytest.raises(InputFormatError, match="does not exist"):
        load_task(str(tmp_path / "none.jsonl"))


def test_hub_task_offline_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="not reachable.*reasoning-gym task"):
        load_task("gsm8k", size=3)


def test_templates():
    assert TEMPLATES["boxed"].messages("Q")[0] == {"role": "system", "content": PAPER_SYSTEM_PROMPT}
    assert TEMPLATES["qwen3-boxed"].chat_template_kwargs == {"enable_thinking": False}
    assert TEMPLATES["short"].messages("1+1 =") == [{"role": "user", "content": "1+1 = Reply with just the number."}]
    with pytest.raises(InputFormatError, match="short"):
        get_template("fancy")
    assert "chain_sum" in known_tasks() and "math500" in known_tasks()


def test_hub_tasks_name_their_splits_and_roles():
    from bupo_core.tasks import HUB_TASKS, check_training_task, is_test_set

    assert HUB_TASKS["gsm8k"].split == "train" and HUB_TASKS["gsm8k-test"].split == "test"
    assert {n for n, t in HUB_TASKS.items() if t.role == "train"} == {"gsm8k", "deepmath", "math-train"}
    assert {n for n, t in HUB_TASKS.items() if t.role == "test"} == {
        "math500",
        "aime24",
        "aime25",
        "amc23",
        "gsm8k-test",
    }
    for name, t in HUB_TASKS.items():
        assert t.role in ("train", "test") and (t.role == "train") == (t.train_instead is None)
        assert is_test_set(name) == (t.role == "test")
    assert not is_test_set("chain_sum") and not is_test_set("x.jsonl")
    with pytest.raises(InputFormatError, match=r"'math500' is a test set.*Train on deepmath"):
        check_training_task("math500")
    check_training_task("math500", allow_test_set_training=True)
    check_training_task("gsm8k")
    check_training_task("chain_sum")


def test_train_config_refuses_test_sets():
    from bupo_core.trainer import TrainConfig

    with pytest.raises(InputFormatError, match="allow_test_set_training=True"):
        TrainConfig(task="aime25").validate()
    TrainConfig(task="aime25", allow_test_set_training=True).validate()
    TrainConfig(task="deepmath").validate()


# ----------------------------------------------------------------------------- held-out split
def test_held_out_split_is_disjoint_by_question():
    from bupo_core.tasks import HELD_OUT_CHAIN_SUM, question_key, question_split

    # the full sizes the sweeps use: training pools of 1000 per seed, evaluation sets drawn at seed 10_000
    train_keys = set()
    for seed in range(5):
        task = load_task("chain_sum", size=1000, seed=seed, split="train", **HELD_OUT_CHAIN_SUM)
        assert len(task) == 1000 and task.split == "train"
        train_keys |= {question_key(e) for e in task.examples}
    ev = load_task("chain_sum", size=200, seed=10_000, split="eval", **HELD_OUT_CHAIN_SUM)
    eval_keys = {question_key(e) for e in ev.examples}
    assert len(ev) == 200 and all(question_split(e) == "eval" for e in ev.examples)
    assert not (train_keys & eval_keys)
    assert not (
        {e.question for e in ev.examples}
        & {
            q
            for s in range(5)
            for q in (
                e.question
                for e in load_task("chain_sum", size=1000, seed=s, split="train", **HELD_OUT_CHAIN_SUM).examples
            )
        }
    )
    # reasoning-gym seeds row i with seed + i, so seeds 0..4 share most rows; keys are coarser than questions
    assert len(train_keys) > 400 and len({e.question for e in ev.examples}) == 200  # a split holds distinct questions


def test_question_key_groups_commuted_forms_and_split_is_stable():
    from bupo_core.tasks import Example, question_key, question_split

    a = Example("State the final answer: 12 + 7 =", "19", entry={"metadata": {"expression": "12 + 7"}})
    b = Example("State the final answer: 7 + 12 =", "19", entry={"metadata": {"expression": "7 + 12"}})
    c = Example("State the final answer: 7 - 12 =", "-5", entry={"metadata": {"expression": "7 - 12"}})
    assert question_key(a) == question_key(b) != question_key(c)
    assert question_split(a) == question_split(b)
    # the partition does not depend on the seed: the same question lands on the same side
    t0 = load_task("chain_sum", size=300, seed=0, min_terms=2, max_terms=2, min_digits=1, max_digits=2)
    t1 = load_task("chain_sum", size=300, seed=0, split="train", min_terms=2, max_terms=2, min_digits=1, max_digits=2)
    assert {e.question for e in t1.examples} <= {e.question for e in t0.examples} | {e.question for e in t1.examples}
    share_eval = sum(question_split(e) == "eval" for e in t0.examples) / len(t0)
    assert 0.1 < share_eval < 0.3


def test_split_errors_and_jsonl(tmp_path):
    with pytest.raises(InputFormatError, match="split must be"):
        load_task("chain_sum", size=3, split="test")
    p = tmp_path / "qa.jsonl"
    p.write_text("".join(json.dumps({"question": f"{i} + {i} =", "answer": 2 * i}) + "\n" for i in range(200)))
    tr, ev = load_task(str(p), split="train"), load_task(str(p), split="eval")
    assert len(tr) + len(ev) == 200 and not ({e.question for e in tr.examples} & {e.question for e in ev.examples})
    with pytest.raises(InputFormatError, match="'eval' split"):
        # 200 draws of a 1-term single-digit chain_sum: far fewer distinct questions than asked for
        load_task("chain_sum", size=50, split="eval", min_terms=1, max_terms=1, min_digits=1, max_digits=1)


def test_held_out_setting_is_the_measured_choice():
    from pathlib import Path

    from bupo_core.tasks import HELD_OUT_CHAIN_SUM

    data = json.loads((Path(__file__).parent.parent / "bench" / "results" / "task_pass_rate.json").read_text())
    assert data["candidates"][data["chosen"]]["task_kwargs"] == HELD_OUT_CHAIN_SUM


# ----------------------------------------------------------------------------- issue 20: pools that match
def test_distinct_loader_reaches_the_documented_eval_size():
    from bupo_core.tasks import HELD_OUT_CHAIN_SUM, chain_sum_split_counts, question_split

    n_eval = sum(chain_sum_split_counts(HELD_OUT_CHAIN_SUM)["eval"].values())
    assert n_eval == 743  # the number docs/results.md and tasks.py state, by exact enumeration
    for size in (600, n_eval):
        task = load_task("chain_sum", size=size, seed=10_000, split="eval", **HELD_OUT_CHAIN_SUM)
        assert len(task) == size == len({e.question for e in task.examples})
        assert all(question_split(e) == "eval" for e in task.examples)
    with pytest.raises(
        InputFormatError, match=r"only 743 distinct questions in the 'eval' split .*lower size to at most 743"
    ):
        load_task("chain_sum", size=744, seed=10_000, split="eval", **HELD_OUT_CHAIN_SUM)


def test_first_pool_keeps_the_earlier_draw_order():
    """The default pool is what the earlier sweeps trained and evaluated on: the first distinct questions in draw order."""
    from bupo_core.tasks import HELD_OUT_CHAIN_SUM, kind_mix, question_split, reasoning_gym_dataset

    task = load_task("chain_sum", size=32, seed=10_000, split="eval", **HELD_OUT_CHAIN_SUM)
    ds = reasoning_gym_dataset("chain_sum", size=2000, seed=10_000, **HELD_OUT_CHAIN_SUM)
    first, seen = [], set()
    for i in range(2000):
        e = ds[i]
        ex = type(task.examples[0])(e["question"], str(e["answer"]), entry=e)
        if e["question"] not in seen and question_split(ex) == "eval":
            first.append(e["question"])
        seen.add(e["question"])
        if len(first) == 32:
            break
    assert [e.question for e in task.examples] == first
    assert kind_mix(task.examples)["2 terms"] == pytest.approx(13 / 32)  # issue 20: 41% two-term in the 32 problems


def test_uniform_pools_have_the_splits_mix_of_question_kinds():
    """Training pool, evaluation set and benchmark prompts (pool: uniform) draw the same mix of question kinds."""
    from bupo_core.tasks import HELD_OUT_CHAIN_SUM, chain_sum_split_counts, kind_mix

    counts = chain_sum_split_counts(HELD_OUT_CHAIN_SUM)
    share = {s: c["2 terms"] / sum(c.values()) for s, c in counts.items()}  # 154/3457 and 46/743
    train = load_task("chain_sum", size=1000, seed=0, split="train", pool="uniform", **HELD_OUT_CHAIN_SUM)
    ev = load_task("chain_sum", size=743, seed=10_000, split="eval", pool="uniform", **HELD_OUT_CHAIN_SUM)
    bench = load_task("chain_sum", size=0, seed=0, split="train", pool="uniform", **HELD_OUT_CHAIN_SUM)
    assert len(bench) == sum(counts["train"].values()) == 3457  # size 0: the whole split
    assert kind_mix(ev.examples)["2 terms"] == pytest.approx(share["eval"])  # the whole eval split
    # a uniform sample of 1000 of 3457: hypergeometric SD of the two-term share is about 0.0055
    assert abs(kind_mix(train.examples)["2 terms"] - share["train"]) < 4 * 0.0055
    assert abs(share["train"] - share["eval"]) < 0.02  # the hash partition keeps the splits' mixes close
    # first-drawn pools do not: the 1000-question training pool was 15% two-term
    first = load_task("chain_sum", size=1000, seed=0, split="train", **HELD_OUT_CHAIN_SUM)
    assert kind_mix(first.examples)["2 terms"] > 0.14
    assert (
        load_task("chain_sum", size=5, seed=1, split="train", pool="uniform", **HELD_OUT_CHAIN_SUM).examples[0].question
        != load_task("chain_sum", size=5, seed=2, split="train", pool="uniform", **HELD_OUT_CHAIN_SUM)
        .examples[0]
        .question
    )


def test_pool_errors():
    with pytest.raises(InputFormatError, match="pool must be one of first, uniform"):
        load_task("chain_sum", size=3, split="train", pool="random")
    with pytest.raises(InputFormatError, match="needs|give split"):
        load_task("chain_sum", size=3, pool="uniform")


def test_benchmark_draws_its_prompts_like_the_sweeps():
    text = (Path(__file__).parent.parent / "bench" / "task_pass_rate.py").read_text()
    assert 'split="train", pool="uniform"' in text
