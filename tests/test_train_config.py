"""TrainConfig.validate refuses settings that cannot work, one line naming the problem and the fix."""

from __future__ import annotations

import pytest

from bupo_core.cli import main
from bupo_core.errors import InputFormatError
from bupo_core.trainer import MAX_SEED, TrainConfig


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"model": "tiny-random-llama", "steps": 4, **kw})


@pytest.mark.parametrize("betas", [(1.5, 0.9), (0.9, 1.0), (-0.1, 0.9), (0.9, float("nan")), (0.9,)])
def test_adam_betas_each_in_zero_one(betas):
    with pytest.raises(
        InputFormatError,
        match=r"adam_betas.*(\[0, 1\)|two numbers).*--adam-betas 0.9 0.999|adam_betas must be two numbers",
    ):
        cfg(adam_betas=betas).validate()
    cfg(adam_betas=(0.0, 0.99)).validate()


def test_seed_range():
    cfg(seed=MAX_SEED).validate()
    for bad in (-1, MAX_SEED + 1, 10**19 + 1):
        with pytest.raises(InputFormatError, match=r"seed must be an integer in 0..9223372036854775807.*smaller seed"):
            cfg(seed=bad).validate()


def test_internal_phase_must_end_before_the_run():
    with pytest.raises(
        InputFormatError, match=r"inter_steps=10 >= steps=2.*never reach BuPO's GRPO phase.*--inter-steps below --steps"
    ):
        cfg(method="bupo", layer=1, inter_steps=10, steps=2).validate()
    with pytest.raises(InputFormatError, match="inter_steps=2 >= steps=2"):
        cfg(method="bupo", layer=1, inter_steps=2, steps=2).validate()
    cfg(method="bupo", layer=1, inter_steps=1, steps=2).validate()
    cfg(
        method="bupo", layer=1, inter_steps=2, steps=2, internal_phase_only=True
    ).validate()  # an IPA-only experiment, said so
    cfg(method="grpo", inter_steps=30, steps=2).validate()  # GRPO ignores inter_steps


def test_reward_that_cannot_read_the_template_is_refused():
    with pytest.raises(
        InputFormatError,
        match=r"--reward boxed_math reads the answer as boxed.*template 'short'.*--template boxed.*--reward last_number",
    ):
        cfg(template="short", reward="boxed_math").validate()
    with pytest.raises(InputFormatError, match="template 'short'"):
        cfg(reward="boxed_math").validate()  # chain_sum's default template is short
    cfg(template="boxed", reward="boxed_math").validate()
    cfg(template="boxed", reward="last_number").validate()  # the last number of a boxed answer is the answer


def test_reasoning_gym_reward_needs_a_reasoning_gym_task(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n')
    with pytest.raises(
        InputFormatError, match=r"--reward reasoning_gym needs a reasoning-gym task.*a JSONL file.*--reward last_number"
    ):
        cfg(task=str(path), reward="reasoning_gym").validate()
    cfg(task=str(path), reward="last_number").validate()
    cfg(task="chain_sum", reward="reasoning_gym").validate()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--adam-betas", "1.5", "0.9"], "beta1 must be in [0, 1)"),
        (["--seed", "12345678901234567890"], "seed must be an integer in 0.."),
        (["--method", "bupo", "--layer", "1", "--inter-steps", "10", "--steps", "2"], "inter_steps=10 >= steps=2"),
        (["--template", "short", "--reward", "boxed_math"], "--reward boxed_math reads the answer as boxed"),
    ],
)
def test_cli_refuses_with_one_line(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    rc = main(["train", "--model", "tiny-random-llama", "--task", "chain_sum", "--quiet", "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not out.exists()  # refused before anything is written
