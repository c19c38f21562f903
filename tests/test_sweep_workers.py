"""`bupo sweep --workers N`: cells trained in parallel processes give the same rows as one after another.

Workers are spawned processes, so they see only what `bupo_core` registers by itself: the spec uses a
built-in reward (a scorer registered in a test module would not exist there)."""

from __future__ import annotations

import json

import pytest

from bupo_core.cli import main
from bupo_core.errors import InputFormatError
from bupo_core.sweep import parse_spec, read_cells, run_sweep

SPEC = {
    "name": "tiny_workers",
    "shared": {
        "model": "tiny-random-llama",
        "task": "chain_sum",
        "task_size": 20,
        "task_kwargs": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "split": "train"},
        "steps": 2,
        "prompts_per_step": 2,
        "group_size": 2,
        "max_new_tokens": 4,
        "lr": 1e-3,
        "num_mini_batches": 1,
        "micro_batch_size": 4,
    },
    "seeds": [0, 1],
    "control": "grpo",
    "eval": {"num_problems": 2, "k": 2, "max_new_tokens": 4, "batch_size": 8},
    "arms": [
        {"name": "grpo", "config": {"method": "grpo"}},
        {"name": "bupo_l1", "config": {"method": "bupo", "layer": 1, "inter_steps": 1}},
    ],
}


def _by_cell(rows: list[dict]) -> dict:
    return {(r["arm"], r["seed"]): r for r in rows}


def test_parallel_cells_match_sequential_cells(tmp_path):
    spec = parse_spec(SPEC, "workers.json")
    one = run_sweep(spec, tmp_path / "one", device="cpu", progress=False, log=lambda s: None)
    two = run_sweep(spec, tmp_path / "two", device="cpu", progress=False, log=lambda s: None, workers=2)
    assert sorted(one.ran) == sorted(two.ran) == sorted((a.name, s) for a, s in spec.cells())
    seq, par = _by_cell(read_cells(tmp_path / "one")), _by_cell(read_cells(tmp_path / "two"))
    assert seq.keys() == par.keys()
    for cell, row in seq.items():
        other = par[cell]
        assert other["key"] == row["key"]  # same settings, so the same cell
        # the same computation in another process: sampled tokens, rewards and scores agree; the mean
        # rewards are averages of 0/1 scores over a handful of samples, so they agree to float rounding
        assert other["train_rewards"] == pytest.approx(row["train_rewards"], abs=1e-9)
        for metric, value in row["metrics"].items():
            assert other["metrics"][metric] == pytest.approx(value, abs=1e-9), (cell, metric)
        assert not (tmp_path / "two" / "cells" / cell[0] / f"seed-{cell[1]}" / "run" / "checkpoints").exists()
    assert (tmp_path / "two" / "summary.json").exists()
    # a rerun with workers has nothing left to do
    again = run_sweep(spec, tmp_path / "two", device="cpu", progress=False, log=lambda s: None, workers=2)
    assert again.ran == [] and len(again.skipped) == len(seq)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_worker_counts_are_refused_before_any_file(tmp_path, workers):
    with pytest.raises(InputFormatError, match="whole number >= 1"):
        run_sweep(
            parse_spec(SPEC, "workers.json"), tmp_path / "out", progress=False, log=lambda s: None, workers=workers
        )
    assert not (tmp_path / "out").exists()


def test_cli_refuses_zero_workers(tmp_path, capsys):
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(SPEC))
    assert main(["sweep", str(p), "--out", str(tmp_path / "out"), "--workers", "0"]) != 0
    assert "--workers 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cpu_workers_share_the_threads_instead_of_oversubscribing_the_cores():
    from bupo_core.sweep import worker_threads

    assert worker_threads("cpu", 2, 2, {}) == 1  # 2 cores, 2 workers: one thread each, not 2 x 2
    assert worker_threads("cpu", 3, 8, {}) == 2
    assert worker_threads("cpu", 8, 2, {}) == 1  # never 0
    assert worker_threads("cpu", 2, 2, {"OMP_NUM_THREADS": "2"}) is None  # the user's setting wins
    assert worker_threads("cuda", 16, 16, {}) is None and worker_threads("cuda:0", 2, 2, {}) is None


def test_parallel_cpu_workers_run_with_their_share_of_threads(tmp_path, monkeypatch):
    """The pool is asked to set each spawned worker's torch threads to its share."""
    import concurrent.futures

    import bupo_core.sweep as sweep

    seen = {}

    class Pool(concurrent.futures.ThreadPoolExecutor):  # records the initializer the sweep asks for
        def __init__(self, max_workers, mp_context=None, initializer=None, initargs=()):
            seen["initializer"], seen["initargs"] = initializer, initargs
            super().__init__(max_workers=max_workers)

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(sweep.concurrent.futures, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(sweep.torch, "get_num_threads", lambda: 4)
    lines = []
    sweep._run_cells_parallel(
        parse_spec(SPEC, "workers.json"), tmp_path, [], device="cpu", workers=2, log=lines.append, record=None
    )
    assert seen["initializer"] is sweep.torch.set_num_threads and seen["initargs"] == (2,)
    assert any("2 workers on the CPU: 2 thread(s) each" in line for line in lines)


STEPS = 150


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_to_the_sweep_alone_stops_its_workers_which_checkpoint(tmp_path, sig):
    """`kill -INT` or `kill` reach only the sweep's process, not its workers: it passes the interrupt on.

    The workers' trainers checkpoint and stop (they do not run their cells to the end), the sweep exits
    130, and a rerun resumes the cells and finishes every one of them once.
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = json.loads(json.dumps(SPEC))
    spec["shared"].update(steps=STEPS, save_every=0)  # long enough to be interrupted mid-training
    spec_path = tmp_path / "long.json"
    spec_path.write_text(json.dumps(spec))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bupo_core.cli", "sweep", str(spec_path), "--out", str(out), "--device", "cpu"]
    proc = subprocess.Popen([*cmd, "--workers", "2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = [out / "cells" / "grpo" / "seed-0" / "run" / "metrics.jsonl"]
    deadline = time.time() + 240
    while not (metrics[0].exists() and metrics[0].read_text().count("\n") >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()
        time.sleep(0.2)
    os.kill(proc.pid, getattr(signal, sig))  # the sweep's process only, as `kill` does
    try:
        log = proc.communicate(timeout=120)[0].decode()
    except subprocess.TimeoutExpired:  # the workers ran on: the failure this test guards against
        proc.kill()
        raise
    assert proc.returncode == 130, log
    assert not (out / "cells.jsonl").exists() or not (out / "cells.jsonl").read_text().strip()
    ckpts = sorted((out / "cells" / "grpo" / "seed-0" / "run" / "checkpoints").glob("checkpoint-*"))
    assert ckpts, log  # the interrupted worker saved its progress
    done = int(ckpts[-1].name.split("-")[1])
    assert 3 <= done < STEPS
    again = subprocess.run([*cmd, "--workers", "2", "--quiet"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = read_cells(out / "cells.jsonl")
    assert sorted((r["arm"], r["seed"]) for r in rows) == sorted((a, s) for a in ("grpo", "bupo_l1") for s in (0, 1))
    first = [json.loads(line) for line in metrics[0].read_text().splitlines()]
    assert [r["step"] for r in first] == list(range(1, STEPS + 1))  # resumed: no step lost or repeated
