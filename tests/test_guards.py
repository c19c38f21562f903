"""Nothing lost under any timing (issue 18): checks before destroying, folder locks, --overwrite that
keeps the old run until the new one has a checkpoint, full-hash checkpoint checks, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bupo_core.cli import main
from bupo_core import runs

TRAIN = ["train", "--model", "tiny-random-llama", "--task", "chain_sum", "--prompts-per-step", "2", "--group-size", "2",
         "--max-new-tokens", "4", "--task-size", "20", "--quiet", "--steps", "1"]


def tree(path):
    """{relative path: bytes} of every file under ``path``."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("guards") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def fresh_copy(finished_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


@pytest.mark.parametrize("bad, message", [
    (["--model", "tiny-random-lama"], "unknown tiny model 'tiny-random-lama'"),
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--method", "bupo", "--layer", "99", "--inter-steps", "1"], r"--layer \(the BuPO target layer\) 99 is out of range for this 2-layer model: use 1..2"),
    (["--freeze-through-layer", "5"], "freeze_through_layer .* 5 is out of range"),
])
def test_overwrite_with_a_bad_setting_leaves_the_old_run_intact(finished_run, tmp_path, capsys, bad, message):
    out = fresh_copy(finished_run, tmp_path)
    before = tree(out)
    assert main([*TRAIN, "--out", str(out), "--overwrite", *bad]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and __import__("re").search(message, err), err
    assert tree(out) == before


def test_overwrite_that_fails_before_its_first_checkpoint_gives_the_old_run_back(finished_run, tmp_path, monkeypatch, capsys):
    out = fresh_copy(finished_run, tmp_path)
    before = tree(out)
    from bupo_core import trainer as trainer_mod

    def fail(self, *a, **k):
        assert (out / runs.REPLACED).is_dir()  # the old run is set aside, not deleted, while the new one starts
        raise RuntimeError("simulated failure before the first checkpoint")

    monkeypatch.setattr(trainer_mod.Trainer, "train", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        main([*TRAIN, "--out", str(out), "--overwrite"])
    assert "the previous run" in capsys.readouterr().err
    assert tree(out) == before


def test_overwrite_deletes_the_old_run_once_the_new_one_has_a_checkpoint(finished_run, tmp_path):
    out = fresh_copy(finished_run, tmp_path)
    old_config = (out / "config.json").read_text()
    assert main([*TRAIN, "--out", str(out), "--overwrite", "--lr", "1e-4"]) == 0
    assert not (out / runs.REPLACED).exists() and not (out / runs.LOCK).exists()
    assert (out / "config.json").read_text() != old_config
    assert [r["step"] for r in runs.read_metrics(out)] == [1]


def test_a_killed_overwrite_keeps_the_old_run_recoverable(finished_run, tmp_path, capsys):
    """SIGKILL after the old run was set aside and before the new run's checkpoint: a plain rerun finds the old run."""
    out = fresh_copy(finished_run, tmp_path)
    before = tree(out)
    runs.set_aside_run(out)
    (out / "config.json").write_text("{}")  # the killed new run's first file
    assert main([*TRAIN, "--out", str(out)]) == 2
    assert "already holds another run" in capsys.readouterr().err
    assert tree(out) == before


def test_second_process_on_one_run_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / runs.LOCK).write_text(json.dumps({"pid": holder.pid, "host": __import__("socket").gethostname(), "started": "now"}))
        assert main([*TRAIN, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"is in use by bupo process {holder.pid} on this host" in err and len(err.strip().splitlines()) == 1
        assert sorted(p.name for p in out.iterdir()) == [runs.LOCK]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / runs.LOCK).write_text(json.dumps({"pid": dead.pid, "host": __import__("socket").gethostname(), "started": "then"}))
    assert main([*TRAIN, "--out", str(out)]) == 0
    assert f"taking over the lock of process {dead.pid}" in capsys.readouterr().err
    assert not (out / runs.LOCK).exists()


def test_lock_of_another_host_is_refused_naming_the_file(tmp_path):
    (tmp_path / runs.LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    with pytest.raises(runs.RunFolderError, match=f"host elsewhere .* delete {tmp_path / runs.LOCK}"):
        runs.lock_folder(tmp_path)
    with runs.lock_folder(tmp_path / "other") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


@pytest.mark.parametrize("bad, message", [(["--model", "tiny-random-lama"], "unknown tiny model"),
                                          (["--model", "tiny-random-llama", "--layer", "7"], "out of range for this 2-layer model")])
def test_demo_overwrite_with_a_bad_model_or_layer_leaves_the_old_report(tmp_path, capsys, bad, message):
    out = tmp_path / "report"
    out.mkdir()
    for name in ("demo_config.json", "demo.json", "summary.md"):
        (out / name).write_text(name)
    before = tree(out)
    assert main(["demo", "--out", str(out), "--overwrite", *bad]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert tree(out) == before
