"""Tests of answer extraction, equivalence checks and the crash-proof, time-limited grader."""

from __future__ import annotations

import threading
import time

import pytest

from bupo_core.errors import InputFormatError
from bupo_core.rewards import (
    Grader,
    extract_boxed,
    extract_last_number,
    math_equivalent,
    numbers_equal,
    register_scorer,
)
from bupo_core.tasks import Example, load_task


def test_extract_boxed_nested_and_last():
    assert extract_boxed(r"first \boxed{2} then \boxed{\frac{1}{2}} end") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed {x^{2}}") == "x^{2}"
    assert extract_boxed(r"\boxed{unclosed") is None
    assert extract_boxed("nothing") is None
    assert extract_boxed(r"\fbox{7}") == "7"


def test_extract_last_number_variants():
    assert extract_last_number("4 + 5 = 9") == "9"
    assert extract_last_number("It is -12.") == "-12"
    assert extract_last_number("about 1,234.50 apples") == "1234.50"
    assert extract_last_number("no digits") is None
    assert numbers_equal("1234.50", "1234.5") and not numbers_equal("3", "-3")
    assert not numbers_equal(None, "3")


def test_math_verify_equivalence():
    assert math_equivalent(r"\frac{1}{2}", "0.5")
    assert math_equivalent("2x+1", "1+2x")
    assert not math_equivalent("3", "4")
    assert not math_equivalent(None, "4")


def test_grader_last_number_and_boxed():
    ex = [Example("2+2?", "4"), Example("2+3?", "5")]
    g = Grader(scorer="last_number")
    out = g(["The answer is 4", "6"], ex)
    assert out.rewards == [1.0, 0.0] and out.failed == 0
    gb = Grader(scorer="boxed_math")
    assert gb([r"so \boxed{4}", r"\boxed{10/2}"], ex).rewards == [1.0, 1.0]


def test_grader_reasoning_gym_binary_by_default():
    task = load_task("chain_sum", size=4, seed=1, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    e = task.examples[0]
    g = Grader(scorer="reasoning_gym")
    right = g([f"It is {e.answer}."], [e])
    wrong = g(["It is 12345."], [e])
    assert right.rewards == [1.0] and wrong.rewards == [0.0]


def test_hostile_outputs_score_zero_and_are_counted():
    ex = Example("q", "4")
    huge = "9" * 1_000_000
    g = Grader(scorer="last_number", max_chars=20_000)
    out = g([huge, "__import__('os').system('echo pwned') 4", "9" * 5000, "\\boxed{" * 2000], [ex] * 4)
    assert out.rewards == [0.0, 1.0, 0.0, 0.0]
    assert out.too_long == 1
    gb = Grader(scorer="boxed_math", timeout_s=1.0)
    out = gb(["\\boxed{" + "{" * 5000 + "}", "\\boxed{" + "(" * 2000 + "}", "\\boxed{10^{10^{10^{10}}}}"], [ex] * 3)
    assert out.rewards == [0.0, 0.0, 0.0]
    assert out.timeouts >= 1  # the power tower spends its time in C code: only the worker kill stops it


def test_slow_scorer_times_out_and_crashing_scorer_is_counted():
    def slow(text, example):
        while True:
            time.sleep(0.01)

    def boom(text, example):
        raise RuntimeError("scorer bug")

    register_scorer("test_slow", slow)
    register_scorer("test_boom", boom)
    t0 = time.time()
    out = Grader(scorer="test_slow", timeout_s=0.2)(["a", "b"], [Example("q", "1")] * 2)
    assert out.rewards == [0.0, 0.0] and out.timeouts == 2
    assert time.time() - t0 < 3
    out = Grader(scorer="test_boom")(["a"], [Example("q", "1")])
    assert out.errors == 1 and "scorer bug" in out.error_messages[0]


def test_time_limit_also_works_off_the_main_thread():
    def slow(text, example):
        while True:
            pass

    register_scorer("test_spin", slow)
    result = {}

    def run():
        result["out"] = Grader(scorer="test_spin", timeout_s=0.3)(["x"], [Example("q", "1")])

    th = threading.Thread(target=run)
    th.start()
    th.join(10)
    assert not th.is_alive()
    assert result["out"].timeouts == 1


def test_unknown_scorer_lists_known():
    with pytest.raises(InputFormatError, match="known rewards: .*last_number"):
        Grader(scorer="nope")(["x"], [Example("q", "1")])


def test_graders_never_eval(monkeypatch):
    import builtins

    ex = Example("q", "4")
    hostile = [r"\boxed{2+2}", r"\boxed{\frac{8}{2}}", "\\boxed{__import__('os')}"]
    Grader(scorer="boxed_math", isolation="signal")(
        hostile, [ex] * 3
    )  # warm up imports (namedtuple uses eval at import)

    def forbidden(*a, **k):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    assert Grader(scorer="last_number")(["2+2"], [ex]).rewards == [0.0]
    out = Grader(scorer="boxed_math", isolation="signal")(hostile, [ex] * 3)
    assert out.errors == 0, out.error_messages
    assert out.rewards == [1.0, 1.0, 0.0]


# --------------------------------------------------------------------------- reasoning-gym scorer safety
@pytest.mark.parametrize("name", ["string_insertion", "n_queens", "spiral_matrix"])
def test_reasoning_gym_scorers_that_eval_never_see_model_text(tmp_path, name):
    import reasoning_gym

    marker = tmp_path / f"pwned-{name}"
    payload = "\\boxed{__import__('os').system('touch " + str(marker) + "')}"
    ds = reasoning_gym.create_dataset(name, size=1, seed=0)
    entry = ds[0]
    ex = Example(entry["question"], str(entry["answer"]), "boxed", entry=entry, dataset=ds)
    for isolation in ("signal", "process"):
        out = Grader(scorer="reasoning_gym", isolation=isolation)([payload], [ex])
        assert out.rewards == [0.0] and out.errors == 1 and "not on the list" in out.error_messages[0]
    assert not marker.exists()
    with pytest.raises(
        InputFormatError, match=f"reasoning-gym task '{name}' is not on the list.*eval.*--reward last_number"
    ):
        load_task(name, size=2, template="boxed")
    assert load_task(name, size=2, template="boxed", scorer="boxed_math").scorer == "boxed_math"  # safe scorer: allowed


def test_allow_listed_reasoning_gym_scorers_call_no_eval_exec_or_parse_expr():
    from bupo_core.rewards import SAFE_REASONING_GYM_TASKS, reasoning_gym_scorer_problems

    assert {"chain_sum", "basic_arithmetic", "simple_equations", "gsm_symbolic"} <= SAFE_REASONING_GYM_TASKS
    for name in sorted(SAFE_REASONING_GYM_TASKS):
        assert reasoning_gym_scorer_problems(name) == [], name
    # the checker finds the known offenders, directly (eval) and through SymPy (parse_expr)
    for name in ("string_insertion", "n_queens", "spiral_matrix", "countdown"):
        assert reasoning_gym_scorer_problems(name), name
