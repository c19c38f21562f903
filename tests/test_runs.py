"""Tests of run folders (bupo_core.runs): one run per folder, --overwrite, --resume without or with damaged
checkpoints, checkpoints that run no code, metrics with a torn last line, output-folder checks."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch

from bupo_core import runs
from bupo_core.errors import ConfigMismatchError, InputFormatError
from bupo_core.rewards import register_scorer
from bupo_core.runs import RunFolderError, iter_jsonl, prepare_output_dir, read_metrics
from bupo_core.trainer import TrainConfig, Trainer

register_scorer("test_even_length", lambda text, example: float(len(text) % 2 == 0))


def cfg(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(
        model="tiny-random-llama",
        task="chain_sum",
        task_size=20,
        reward="test_even_length",
        steps=2,
        prompts_per_step=2,
        group_size=2,
        max_new_tokens=4,
        lr=3e-3,
        micro_batch_size=4,
        num_mini_batches=1,
        out_dir=str(tmp_path / name),
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_a_second_run_in_the_same_folder_is_refused_and_overwrite_starts_clean(tmp_path):
    Trainer(cfg(tmp_path)).train()
    with pytest.raises(RunFolderError, match="already holds another run.*--resume.*--overwrite"):
        Trainer(cfg(tmp_path, seed=4))
    res = Trainer(cfg(tmp_path, seed=4), overwrite=True).train()
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]  # not 1, 2, 1, 2
    ck = runs.latest_checkpoint(tmp_path / "run")
    assert res.last_checkpoint == ck and json.loads((ck / "trainer_state.json").read_text())["config"]["seed"] == 4
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 4
    # the new run's final weights were written (the old code skipped the save: checkpoint-2 existed)
    from safetensors.torch import load_file

    saved = load_file(str(ck / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in res_model_state(res, tmp_path).items() if k in saved)
    # foreign files are never deleted
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(RunFolderError, match="not part of a bupo run.*notes.txt"):
        Trainer(cfg(tmp_path, "mine"), overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").exists()
    with pytest.raises(InputFormatError, match="contradict"):
        Trainer(cfg(tmp_path), resume=True, overwrite=True)


def res_model_state(res, tmp_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(res.last_checkpoint).state_dict()


def test_resume_without_a_checkpoint_starts_clean_without_stale_metrics(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(cfg(tmp_path).to_dict()))
    (out / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "reward_mean": 0.5}) + "\n" + json.dumps({"step": 2, "reward_mean": 0.5}) + "\n"
    )
    with pytest.warns(UserWarning, match="no checkpoint.*starting clean from step 0.*2 metrics rows"):
        tr = Trainer(cfg(tmp_path, steps=1), resume=True)
    assert read_metrics(out) == []
    tr.train()
    assert [r["step"] for r in read_metrics(out)] == [1]


def test_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path):
    Trainer(cfg(tmp_path, steps=3, save_every=1)).train()
    root = tmp_path / "run" / "checkpoints"
    w = root / "checkpoint-3" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])  # truncated weights
    s = root / "checkpoint-2" / "trainer_state.json"
    s.write_text(s.read_text()[:-20])  # truncated trainer state
    with pytest.warns(
        UserWarning,
        match=r"checkpoint-3: model.safetensors has \d+ bytes.*checkpoint-2: trainer_state.json"
        r".*resuming from the newest intact one, checkpoint-1",
    ):
        tr = Trainer(cfg(tmp_path, steps=3, save_every=1), resume=True)
    assert tr.step == 1 and [r["step"] for r in read_metrics(tmp_path / "run")] == [1]
    assert tr.train().step == 3
    # every checkpoint damaged: a clear error, not a traceback from safetensors
    for p in root.iterdir():
        (p / "rng.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(RunFolderError, match="no intact checkpoint.*rng.safetensors"):
        Trainer(cfg(tmp_path, steps=4, save_every=1), resume=True)


def test_resume_checks_the_checkpoints_own_config(tmp_path):
    Trainer(cfg(tmp_path, steps=1)).train()
    ck = runs.latest_checkpoint(tmp_path / "run")
    state = json.loads((ck / "trainer_state.json").read_text())
    state["config"]["lr"] = 0.5  # a checkpoint copied in from another run
    (ck / "trainer_state.json").write_text(json.dumps(state))
    runs.write_checkpoint_manifest(ck)
    with pytest.raises(ConfigMismatchError, match=r"saved with .*checkpoint-1.*lr: saved 0.5, now 0.003"):
        Trainer(cfg(tmp_path, steps=2), resume=True)


def test_corrupt_config_json_is_a_clear_error(tmp_path):
    Trainer(cfg(tmp_path, steps=1)).train()
    (tmp_path / "run" / "config.json").write_text('{"model": "tiny-ra')
    with pytest.raises(RunFolderError, match=r"config.json is corrupt.*trainer_state.json"):
        Trainer(cfg(tmp_path, steps=2), resume=True)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_checkpoint_runs_no_code(tmp_path):
    Trainer(cfg(tmp_path, steps=1)).train()
    marker = tmp_path / "pwned-checkpoint"
    ck = runs.latest_checkpoint(tmp_path / "run")
    # an old-format (or crafted) checkpoint: weights plus a pickled trainer_state.pt that runs code
    bad = ck.parent / "checkpoint-5"
    shutil.copytree(ck, bad)
    for name in ("optimizer.safetensors", "rng.safetensors", "trainer_state.json", "bupo-checkpoint.json"):
        (bad / name).unlink()
    with open(bad / "trainer_state.pt", "wb") as f:
        pickle.dump({"step": 5, "x": _Payload(marker)}, f)
    with pytest.warns(UserWarning, match="checkpoint-5: an old pickle-format checkpoint"):
        tr = Trainer(cfg(tmp_path, steps=2), resume=True)
    assert tr.step == 1 and not marker.exists()
    # a crafted file under a safe name is not unpickled either: safetensors refuses it
    (ck / "optimizer.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    runs.write_checkpoint_manifest(ck)
    with pytest.raises(RunFolderError, match="optimizer.safetensors is corrupt"):
        Trainer(cfg(tmp_path, steps=2), resume=True)
    assert not marker.exists()


def test_metrics_torn_last_line_is_tolerated_middle_line_is_reported(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "rew')
    with pytest.warns(UserWarning, match=r"metrics.jsonl:3: ignoring a torn last line"):
        assert [r["step"] for r in read_metrics(p)] == [1, 2]
    p.write_text('{"step": 1}\n{"step": 2, "rew\n{"step": 3}\n')
    with pytest.raises(InputFormatError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(p)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"a": 1}\n'.encode("utf-16"), r"x.jsonl:1: the file is UTF-16"),
        (b'{"a": 1}\n{"a": "caf\xe9"}\n', r"x.jsonl:2: not UTF-8 text \(byte 0xe9"),
    ],
)
def test_jsonl_reader_names_encoding_problems(tmp_path, content, message):
    p = tmp_path / "x.jsonl"
    p.write_bytes(content)
    with pytest.raises(InputFormatError, match=message):
        list(iter_jsonl(p))


def test_jsonl_reader_refuses_a_folder(tmp_path):
    (tmp_path / "x.jsonl").mkdir()
    with pytest.raises(InputFormatError, match="x.jsonl is a folder, not a file"):
        list(iter_jsonl(tmp_path / "x.jsonl"))


def test_prepare_output_dir(tmp_path):
    assert prepare_output_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputFormatError, match="is a file, not a folder"):
        prepare_output_dir(tmp_path / "f")
    with pytest.raises(InputFormatError, match="is a file, not a folder"):
        prepare_output_dir(tmp_path / "f" / "sub")
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(InputFormatError, match="not writable"):
                prepare_output_dir(ro / "out")
        finally:
            ro.chmod(0o700)


def test_resume_over_a_torn_last_metrics_line_continues_exactly(tmp_path):
    """A crash while a metrics row was being appended: the torn row is dropped and its step is redone."""
    Trainer(cfg(tmp_path, steps=2, save_every=1)).train()
    straight = read_metrics(tmp_path / "run")
    Trainer(cfg(tmp_path, "torn", steps=1, save_every=1)).train()
    m = tmp_path / "torn" / "metrics.jsonl"
    m.write_text(m.read_text() + json.dumps(straight[1])[:40])  # half of step 2's row, no newline
    res = Trainer(
        cfg(tmp_path, "torn", steps=2, save_every=1), resume=True
    ).train()  # the torn row is dropped on resume
    rows = read_metrics(tmp_path / "torn")
    assert [r["step"] for r in rows] == [1, 2] and res.step == 2
    assert rows[1]["reward_mean"] == straight[1]["reward_mean"] and rows[1]["loss"] == straight[1]["loss"]
