"""Dynamic sampling (DAPO) and the per-step counts `prompts_drawn`, `prompts_kept`, `ipa_updates`, on a tiny model."""

from __future__ import annotations

import json

import torch

from bupo_core.cli import main
from bupo_core.models import load_model
from bupo_core.rewards import register_scorer
from bupo_core.rollout import Rollout, concat_groups
from bupo_core.runs import read_metrics
from bupo_core.trainer import TrainConfig, Trainer

# questions with an odd answer get reward 1 whatever the response: their groups have no signal; the
# others get a reward that varies with the response (even-length reply), so most of their groups do
register_scorer("test_half_equal", lambda text, ex: 1.0 if int(str(ex.answer)[-1]) % 2 else float(len(text) % 2 == 0))
register_scorer("test_always_one", lambda text, example: 1.0)

VOLATILE = {"time_generate", "time_score", "time_update", "tokens_per_s"}


def config(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(
        model="tiny-random-llama",
        task="chain_sum",
        task_size=60,
        reward="test_half_equal",
        steps=2,
        prompts_per_step=3,
        group_size=4,
        max_new_tokens=6,
        lr=3e-3,
        micro_batch_size=6,
        num_mini_batches=1,
        dynamic_sampling=True,
        dynamic_sampling_max_draws=4,
        out_dir=str(tmp_path / name),
        seed=7,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_concat_groups_picks_whole_groups_in_order():
    def ro(tag):
        return Rollout(
            prompt_index=[0, 0, 1, 1],
            prompt_ids=[[1]] * 4,
            response_ids=[[i] for i in range(4)],
            texts=[f"{tag}{i}" for i in range(4)],
            finished=[True] * 4,
            group_size=2,
            extras={"entropy": [[float(i)] for i in range(4)]},
        )

    out = concat_groups([ro("a"), ro("b")], [(0, 1), (1, 0)])
    assert out.texts == ["a2", "a3", "b0", "b1"] and out.prompt_index == [0, 0, 1, 1]
    assert out.extras["entropy"] == [[2.0], [3.0], [0.0], [1.0]] and out.group_size == 2


def test_dynamic_sampling_keeps_only_groups_with_signal_and_logs_the_counts(tmp_path):
    tr = Trainer(config(tmp_path))
    rows = tr.train().metrics
    position = 0
    for r in rows:
        P = 3
        assert r["prompts_drawn"] % P == 0 and r["prompts_drawn"] >= P and 0 <= r["prompts_kept"] <= P
        position += r["prompts_drawn"]
        assert r["data_position"] == position  # every drawn prompt advances the task order
        if r["prompts_kept"] == P:
            assert r["zero_adv_group_frac"] == 0.0  # the batch holds only groups with unequal rewards
        else:  # only when the cap stopped the draws
            assert r["prompts_drawn"] == 4 * P
        assert r["ipa_updates"] == 0  # GRPO: no internal-phase update
    assert any(r["prompts_drawn"] > 3 for r in rows), "half the prompts have no signal: some step must draw more"
    # the same run without dynamic sampling trains on whatever the first draw gave
    plain = Trainer(config(tmp_path, "plain", dynamic_sampling=False)).train().metrics
    assert all(r["prompts_drawn"] == 3 and r["data_position"] == 3 * r["step"] for r in plain)
    assert any(r["zero_adv_group_frac"] > 0 for r in plain)


def test_the_cap_stops_the_draws_and_no_signal_means_no_update(tmp_path):
    rows = Trainer(config(tmp_path, reward="test_always_one", steps=1, dynamic_sampling_max_draws=2)).train().metrics
    assert rows[0]["prompts_drawn"] == 6 and rows[0]["prompts_kept"] == 0
    assert rows[0]["updates"] == 0 and rows[0]["ipa_updates"] == 0 and rows[0]["data_position"] == 6


def test_ipa_updates_count_the_internal_phase_updates_only(tmp_path):
    rows = (
        Trainer(
            config(
                tmp_path,
                method="bupo",
                layer=1,
                inter_steps=1,
                steps=2,
                dynamic_sampling=False,
                reward="test_half_equal",
                num_mini_batches=3,
            )
        )
        .train()
        .metrics
    )
    assert rows[0]["phase"] == "internal" and rows[0]["ipa_updates"] == rows[0]["updates"] > 0
    assert rows[1]["phase"] == "full" and rows[1]["ipa_updates"] == 0


def test_dynamic_sampling_resumes_exactly(tmp_path):
    straight = Trainer(config(tmp_path, "straight", steps=2)).train()
    Trainer(config(tmp_path, "split", steps=1)).train()
    resumed = Trainer(config(tmp_path, "split", steps=2), resume=True).train()
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "split")
    assert [{k: v for k, v in r.items() if k not in VOLATILE} for r in a] == [
        {k: v for k, v in r.items() if k not in VOLATILE} for r in b
    ]
    wa, wb = weights_of(straight), weights_of(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def weights_of(result):
    return load_model(str(result.last_checkpoint), device="cpu")[0].state_dict()


def test_cli_flag_and_rows(tmp_path):
    out = tmp_path / "cli"
    rc = main(
        [
            "train",
            "--model",
            "tiny-random-llama",
            "--task",
            "chain_sum",
            "--task-size",
            "30",
            "--reward",
            "test_half_equal",
            "--prompts-per-step",
            "2",
            "--group-size",
            "2",
            "--max-new-tokens",
            "4",
            "--steps",
            "1",
            "--quiet",
            "--dynamic-sampling",
            "--dynamic-sampling-max-draws",
            "3",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert cfg.dynamic_sampling is True and cfg.dynamic_sampling_max_draws == 3
    row = read_metrics(out)[0]
    assert {"prompts_drawn", "prompts_kept", "ipa_updates"} <= set(row)
