"""The policy-loss registry: each aggregation is one entry (rows + normaliser), Dr. GRPO's
sequence-sum against its formula, in the tensor function and in the trainer's update."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from bupo_core.errors import InputFormatError
from bupo_core.losses import AGGREGATIONS, LossAggregation, aggregate, clipped_policy_loss, get_aggregation
from bupo_core.rewards import register_scorer
from bupo_core.sequences import pack_sequences
from bupo_core.step import score_batch, update_policy
from bupo_core.trainer import TrainConfig, Trainer

register_scorer("test_even_length", lambda text, example: float(len(text) % 2 == 0))


def test_the_literal_and_the_registry_name_the_same_aggregations():
    assert set(get_args(LossAggregation)) == set(AGGREGATIONS) == {"token-mean", "sequence-mean", "sequence-sum"}
    with pytest.raises(InputFormatError, match="sequence-sum"):
        get_aggregation("bogus")


def test_sequence_sum_is_the_sum_per_response_over_max_new_tokens_averaged_over_responses():
    torch.manual_seed(0)
    per_token = torch.randn(5, 7)
    mask = (torch.rand(5, 7) > 0.4).float()
    mask[2] = 0  # a response without tokens does not count
    max_new_tokens = 9
    got = aggregate(per_token, mask, "sequence-sum", max_new_tokens=max_new_tokens)
    rows = [i for i in range(5) if mask[i].sum() > 0]
    expected = sum(float((per_token[i] * mask[i]).sum()) / max_new_tokens for i in rows) / len(rows)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # unlike sequence-mean, a longer response weighs more (no 1/|o_i| length normalisation)
    two = torch.ones(2, 4)
    m = torch.tensor([[1.0, 1, 1, 1], [1, 0, 0, 0]])
    assert float(aggregate(two, m, "sequence-sum", max_new_tokens=4)) == pytest.approx((4 / 4 + 1 / 4) / 2)
    assert float(aggregate(two, m, "sequence-mean")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        aggregate(two, m, "sequence-sum")


@pytest.mark.parametrize("mode", sorted(AGGREGATIONS))
def test_micro_batches_add_up_to_the_mini_batch_with_the_entrys_normaliser(mode):
    torch.manual_seed(3)
    logp = torch.randn(6, 5, requires_grad=True)
    old = logp.detach() + 0.1 * torch.randn(6, 5)
    adv = torch.randn(6)
    mask = (torch.rand(6, 5) > 0.3).float()
    mask[:, 0] = 1
    norm = AGGREGATIONS[mode].normalizer(mask, 8)
    full = clipped_policy_loss(logp, old, adv, mask, aggregation=mode, normalizer=norm).loss
    parts = [
        clipped_policy_loss(
            logp[i : i + 2], old[i : i + 2], adv[i : i + 2], mask[i : i + 2], aggregation=mode, normalizer=norm
        ).loss
        for i in (0, 2, 4)
    ]
    assert torch.allclose(sum(parts), full, atol=1e-6)
    g_full = torch.autograd.grad(full, logp)[0]
    g_acc = torch.autograd.grad(sum(parts), logp)[0]
    assert torch.allclose(g_full, g_acc, atol=1e-6)


def test_trainer_update_uses_sequence_sum(tmp_path):
    """At ratio 1 the clipped loss per token is -A, so the update's loss is -(1/B) sum_i A_i |o_i| / max_new_tokens."""
    cfg = TrainConfig(
        model="tiny-random-llama",
        task="chain_sum",
        task_size=20,
        reward="test_even_length",
        steps=1,
        prompts_per_step=2,
        group_size=2,
        max_new_tokens=6,
        lr=3e-3,
        micro_batch_size=1,
        num_mini_batches=1,
        loss_aggregation="sequence-sum",
        out_dir=str(tmp_path / "run"),
        seed=7,
        precision="fp32",
    )
    tr = Trainer(cfg)
    batch = pack_sequences(
        [[3, 4, 5], [3, 4, 5], [6, 7], [6, 7]], [[8, 9, 10], [11, 12], [13, 14, 15, 16], [17]], pad_token_id=0
    )
    lengths = batch.prediction_mask.sum(1)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    old = score_batch(tr, batch, None)[0]
    stats = update_policy(tr, batch, adv, None, old_logp=old)
    expected = -float((adv * lengths).sum()) / (cfg.max_new_tokens * 4)
    assert stats["updates"] == 1
    # the old log-probs and the update's forward are the same float32 computation up to micro-batching
    assert stats["loss"] == pytest.approx(expected, abs=1e-5)
