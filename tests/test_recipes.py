"""Recipes sized to the card, and a memory estimate that counts what the code runs.

The estimate's head part is checked against the policy head itself: a dispatch mode counts the
float32 [chunk x vocab] blocks alive at once in its forward and backward (with the chunk size the
trainer passes), and the shared prefill is checked to compute the last position's logits only.
"""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from bupo_core import recipes
from bupo_core.models import tiny_model
from bupo_core.policy_head import chunked_logprob_entropy
from bupo_core.recipes import (
    HEAD_BACKWARD_BLOCKS,
    HEAD_FORWARD_BLOCKS,
    QWEN3_0_6B,
    SMOLLM2_135M,
    ModelShape,
    build_recipe,
    estimate_memory,
    recipe_for_gpu,
)
from bupo_core.rollout import _shared_prompt_cache


class LiveBlocks(TorchDispatchMode):
    """Peak number of distinct float32 [rows x cols] tensors alive at once (rows in ``rows``)."""

    def __init__(self, rows: set[int], cols: int) -> None:
        super().__init__()
        self.rows, self.cols = rows, cols
        self.refs: list[weakref.ref] = []
        self.peak = 0
        self.seen_rows: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ARG002
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if (
                isinstance(t, torch.Tensor)
                and t.dim() == 2
                and t.dtype == torch.float32
                and t.shape[1] == self.cols
                and t.shape[0] in self.rows
            ):
                self.refs.append(weakref.ref(t))
                self.seen_rows.add(int(t.shape[0]))
        self.refs = [r for r in self.refs if r() is not None]
        self.peak = max(self.peak, len({r().untyped_storage().data_ptr() for r in self.refs}))
        return out


@pytest.mark.parametrize("chunk", [8, 64])
def test_head_blocks_of_the_estimate_match_the_policy_head(chunk):
    """The estimate's head parts = what chunked_logprob_entropy holds, for the chunk size the config sets."""
    V, d, mbs, new_tokens = 1000, 16, 2, 20
    shape = ModelShape("toy", V, d, 32, 2, 2, 2, 8)
    est = estimate_memory(
        shape,
        precision="fp32",
        prompt_tokens=4,
        max_new_tokens=new_tokens,
        group_size=2,
        generation_batch_size=2,
        micro_batch_size=mbs,
        logprob_chunk_size=chunk,
    )
    n = mbs * new_tokens  # the response tokens of a micro-batch (what the trainer projects)
    rows = est.head_chunk_rows
    assert rows == min(chunk, n)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, d, generator=g, requires_grad=True)
    w = torch.randn(V, d, generator=g, requires_grad=True)
    t = torch.randint(0, V, (n,), generator=g)
    fwd = LiveBlocks({rows, n % rows or rows}, V)
    with fwd:
        lp, ent = chunked_logprob_entropy(h, w, t, chunk_size=chunk)
    bwd = LiveBlocks({rows, n % rows or rows}, V)
    with bwd:
        (lp.sum() + 0.1 * ent.sum()).backward()
    assert max(fwd.seen_rows | bwd.seen_rows) == rows
    assert fwd.peak <= HEAD_FORWARD_BLOCKS < HEAD_BACKWARD_BLOCKS  # the backward is the head's peak
    assert bwd.peak == HEAD_BACKWARD_BLOCKS
    assert est.update["head_backward_blocks_fp32"] == HEAD_BACKWARD_BLOCKS * rows * V * 4
    assert est.update["head_g_w_accumulator_fp32"] == V * d * 4 == w.grad.numel() * 4


def test_shared_prefill_computes_the_last_position_logits_only():
    model = tiny_model("qwen3", vocab_size=256, seed=0)
    seen = []
    handle = model.register_forward_hook(lambda m, i, out: seen.append(tuple(out.logits.shape)))
    ids = torch.randint(3, 256, (2, 9))
    try:
        cache = _shared_prompt_cache(model, ids, torch.ones_like(ids), repeats=3)
    finally:
        handle.remove()
    assert cache is not None
    assert seen == [(2, 1, 256)]  # not [2, 8, 256]
    est = estimate_memory(QWEN3_0_6B, generation_batch_size=16, group_size=8)
    assert est.generation["prefill_last_logits"] == 2 * 1 * QWEN3_0_6B.vocab_size * 4


def test_model_shapes_match_the_real_configs():
    from transformers import Qwen3Config  # noqa: PLC0415

    cfg = Qwen3Config(
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=True,
    )
    assert ModelShape.from_config(cfg, "Qwen/Qwen3-0.6B") == QWEN3_0_6B
    assert 595e6 < QWEN3_0_6B.parameters < 600e6  # Qwen3-0.6B: 596M with tied embeddings
    small = tiny_model("llama", vocab_size=300, num_layers=3, hidden_size=64)
    assert ModelShape.from_config(small.config).parameters == sum(p.numel() for p in small.parameters())
    assert 134e6 < SMOLLM2_135M.parameters < 136e6


def test_recipes_by_card_and_the_t4_fits_13_gib(monkeypatch, tmp_path):
    monkeypatch.setenv("BUPO_DRIVE", str(tmp_path / "no-drive"))
    t4 = recipe_for_gpu("Tesla T4", 14.7)
    assert t4.name == "t4-16gb" and t4.settings["precision"] == "fp16" and t4.settings["group_size"] == 8
    assert t4.settings["gradient_checkpointing"] and t4.memory.peak_gib <= 13.0
    assert recipe_for_gpu("NVIDIA L4", 22.0).name == recipe_for_gpu("NVIDIA A10G", 22.5).name == "24gb"
    assert (
        recipe_for_gpu("NVIDIA A100-SXM4-40GB", 39.6).name
        == recipe_for_gpu("NVIDIA H100 80GB HBM3", 79.2).name
        == "40-80gb"
    )
    for r in recipes.all_recipes():
        card = recipes.CARDS[r.card]
        assert r.memory.fits(card.memory_gib), r.describe()
        assert r.steps_per_session * r.seconds_per_step["step"] <= recipes.SESSION_MINUTES * 60
        assert r.settings["keep_checkpoints"] >= 1 and 1 <= r.settings["save_every"] <= r.steps_per_session
        assert r.settings["out_dir"].startswith("runs/")
        r.train_config(task="chain_sum", template=None, reward=None).validate()
    with pytest.raises(ValueError, match="t4-16gb"):
        recipe_for_gpu("GeForce GTX 1060", 6.0)


def test_recipes_write_to_a_mounted_drive(monkeypatch, tmp_path):
    drive = tmp_path / "MyDrive"
    drive.mkdir()
    monkeypatch.setenv("BUPO_DRIVE", str(drive))
    r = build_recipe("t4-16gb")
    assert r.settings["out_dir"].startswith(str(drive / "bupo-runs")) and r.settings["keep_checkpoints"] == 1


def test_estimate_per_precision():
    kw = dict(max_new_tokens=512, generation_batch_size=16, micro_batch_size=4, logprob_chunk_size=128)
    bf16, fp16, fp32 = (estimate_memory(QWEN3_0_6B, precision=p, **kw) for p in ("bf16", "fp16", "fp32"))
    assert bf16.generation["kv_cache"] == fp16.generation["kv_cache"] == fp32.generation["kv_cache"] // 2
    assert "autocast_weight_copies" not in fp32.update and bf16.update["autocast_weight_copies"] == 2 * (
        QWEN3_0_6B.parameters - QWEN3_0_6B.unembedding_parameters
    )
    assert (
        bf16.update["head_backward_blocks_fp32"] == fp32.update["head_backward_blocks_fp32"]
    )  # the head is float32 in every mode
