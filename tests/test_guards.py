"""Nothing lost under any timing (issue 18): checks before destroying, folder locks, --overwrite that
keeps the old run until the new one has a checkpoint, full-hash checkpoint checks, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bupo_core import runs
from bupo_core.cli import main
from bupo_core.rewards import register_scorer

register_scorer(
    "guard_even_length", lambda text, example: float(len(text) % 2 == 0)
)  # a reward that varies within groups

TRAIN = [
    "train",
    "--model",
    "tiny-random-llama",
    "--task",
    "chain_sum",
    "--prompts-per-step",
    "2",
    "--group-size",
    "2",
    "--max-new-tokens",
    "4",
    "--task-size",
    "20",
    "--quiet",
    "--steps",
    "1",
]


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


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--model", "tiny-random-lama"], "unknown tiny model 'tiny-random-lama'"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (
            ["--method", "bupo", "--layer", "99", "--inter-steps", "1", "--steps", "2"],
            r"--layer \(the BuPO target layer\) 99 is out of range for this 2-layer model: use 1..2",
        ),
        (["--freeze-through-layer", "5"], "freeze_through_layer .* 5 is out of range"),
        (["--adam-betas", "1.5", "0.9"], r"beta1 must be in \[0, 1\)"),
    ],
)
def test_overwrite_with_a_bad_setting_leaves_the_old_run_intact(finished_run, tmp_path, capsys, bad, message):
    out = fresh_copy(finished_run, tmp_path)
    before = tree(out)
    assert main([*TRAIN, "--out", str(out), "--overwrite", *bad]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and __import__("re").search(message, err), err
    assert tree(out) == before


def test_overwrite_that_fails_before_its_first_checkpoint_gives_the_old_run_back(
    finished_run, tmp_path, monkeypatch, capsys
):
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
        (out / runs.LOCK).write_text(
            json.dumps({"pid": holder.pid, "host": __import__("socket").gethostname(), "started": "now"})
        )
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
    (out / runs.LOCK).write_text(
        json.dumps({"pid": dead.pid, "host": __import__("socket").gethostname(), "started": "then"})
    )
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


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--model", "tiny-random-lama"], "unknown tiny model"),
        (["--model", "tiny-random-llama", "--layer", "7"], "out of range for this 2-layer model"),
    ],
)
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


def test_a_second_demo_into_a_report_folder_in_use_is_refused_even_with_overwrite(tmp_path, capsys):
    """The demo holds its report folder's lock: --overwrite by another process deletes nothing of a running demo."""
    out = tmp_path / "report"
    out.mkdir()
    for name in ("demo_config.json", "summary.md"):
        (out / name).write_text(name)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / runs.LOCK).write_text(
            json.dumps({"pid": holder.pid, "host": __import__("socket").gethostname(), "started": "now"})
        )
        before = tree(out)
        assert main(["demo", "--out", str(out), "--overwrite", "--model", "tiny-random-llama"]) == 2
        err = capsys.readouterr().err
        assert f"is in use by bupo process {holder.pid}" in err and len(err.strip().splitlines()) == 1
        assert tree(out) == before
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- sweeps
SWEEP_SHARED = {
    "model": "tiny-random-llama",
    "task": "chain_sum",
    "task_size": 20,
    "steps": 1,
    "prompts_per_step": 2,
    "group_size": 2,
    "max_new_tokens": 4,
    "reward": "boxed_math",
    "template": "boxed",
}


def sweep_spec(tmp_path, name="s", **over):
    spec = {
        "name": name,
        "shared": dict(SWEEP_SHARED),
        "seeds": [0],
        "control": "grpo",
        "eval": {"num_problems": 2, "k": 2, "max_new_tokens": 4, "batch_size": 8},
        "arms": [{"name": "base", "config": {"steps": 0}}, {"name": "grpo", "config": {"method": "grpo"}}],
    }
    spec.update(over)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def one_line_error(capsys, *fragments):
    """The command's stderr holds one error line (``bupo CMD: error: ...``) and no traceback (warnings of earlier runs may precede it)."""
    err = capsys.readouterr().err
    assert (
        len([line for line in err.splitlines() if line.startswith("bupo ") and ": error: " in line]) == 1
        and "Traceback" not in err
    ), err
    for f in fragments:
        assert f in err, err
    return err


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s["arms"].append(
                {"name": "bupo", "config": {"method": "bupo", "layer": 99, "inter_steps": 1, "steps": 2}}
            ),
            "99 is out of range for this 2-layer model",
        ),
        (lambda s: s["eval"].update(temperature=-1), "eval: temperature must be a finite number >= 0"),
        (lambda s: s.update(seeds=[10**20]), "seed 100000000000000000000 is out of range"),
        (lambda s: s["shared"].update(adam_betas=[0.9]), "adam_betas must be two numbers"),
        (lambda s: s["shared"].update(task_kwargs=5), "task_kwargs must be a mapping"),
        (lambda s: s["shared"].update(model="tiny-random-lama"), "unknown tiny model"),
        (lambda s: s["shared"].update(task_kwargs={"no_such_setting": 1}), "training task"),
    ],
)
@pytest.mark.parametrize("dry", [True, False])
def test_sweep_and_its_dry_run_refuse_a_spec_that_would_fail_later_before_writing(
    tmp_path, capsys, change, message, dry
):
    spec = json.loads(sweep_spec(tmp_path).read_text())
    change(spec)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), *(["--dry-run"] if dry else [])]) == 2
    one_line_error(capsys, message)
    assert not out.exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"\xff\xfe{}"), "not UTF-8 text"),
        (lambda p: p.mkdir(), "is a folder, not a file"),
    ],
)
def test_unreadable_spec_is_one_line(tmp_path, capsys, make, message):
    path = tmp_path / "spec.json"
    make(path)
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    one_line_error(capsys, message)


def test_sweep_out_a_file_and_a_foreign_cells_row_are_one_line(tmp_path, capsys):
    spec = sweep_spec(tmp_path)
    (tmp_path / "f").write_text("x")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "f")]) == 2
    one_line_error(capsys, "is a file, not a folder")
    out = tmp_path / "o"
    out.mkdir()
    (out / "cells.jsonl").write_text('{"seed": 0}\n')
    for extra in ([], ["--dry-run"], ["--summary-only"]):
        assert main(["sweep", str(spec), "--out", str(out), *extra]) == 2
        one_line_error(capsys, "cells.jsonl:1: not a cell row")


def _fake_row(spec_path, arm, seed, device=None, **spec_over):
    from bupo_core.sweep import cell_key, load_spec, run_settings

    spec = load_spec(spec_path)
    a = spec.arm(arm)
    return {
        "arm": arm,
        "seed": seed,
        "key": cell_key(spec, a, seed, device),
        "device": run_settings(spec, a, device)["device"],
        "metrics": {"avg_at_k": 0.5, "pass_at_k": 0.5, "no_answer_rate": 0.0, "accuracy_among_answered": 0.5, "k": 2},
        "train_rewards": [0.5],
        "wall_s": {"total": 1.0, "train": 0.5, "eval": 0.5},
    }


def test_cell_key_includes_every_setting_that_changes_samples(tmp_path):
    from bupo_core.sweep import cell_key, load_spec

    base = load_spec(sweep_spec(tmp_path, "a"))
    keys = {cell_key(base, base.arm("grpo"), 0, "cpu")}
    for change in ({"generation_batch_size": 8}, {"grader_timeout_s": 1.0}):
        other = load_spec(sweep_spec(tmp_path, "b", shared={**SWEEP_SHARED, **change}))
        keys.add(cell_key(other, other.arm("grpo"), 0, "cpu"))
    keys.add(cell_key(base, base.arm("grpo"), 0, "cuda"))
    assert len(keys) == 4
    # the committed sweeps (all run on CPU with the defaults) keep their keys
    from bupo_core.sweep import read_cells, summarize

    s = summarize(load_spec("results/specs/main.yaml"), read_cells("results/main/cells.jsonl"))
    assert s["cells_finished"] == s["cells_planned"]


def test_sweep_refuses_to_mix_devices_and_a_refused_sweep_writes_nothing(tmp_path, capsys, monkeypatch):
    spec = sweep_spec(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    (out / "cells.jsonl").write_text(json.dumps(_fake_row(spec, "base", 0, "cuda")) + "\n")
    before = tree(out)
    assert main(["sweep", str(spec), "--out", str(out), "--device", "cpu"]) == 2
    one_line_error(capsys, "the finished cells ran on cuda but this run would use cpu", "--device cuda")
    assert tree(out) == before  # spec.json not rewritten, no lock left
    # a stale cell (other settings) is refused before spec.json is written too
    (out / "cells.jsonl").write_text(json.dumps({**_fake_row(spec, "base", 0, "cpu"), "key": "0" * 16}) + "\n")
    before = tree(out)
    assert main(["sweep", str(spec), "--out", str(out), "--device", "cpu"]) == 2
    one_line_error(capsys, "was run with other settings")
    assert tree(out) == before


def test_summary_only_reads_only_and_refuses_a_foreign_spec(tmp_path, capsys):
    spec = sweep_spec(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    (out / "cells.jsonl").write_text(json.dumps(_fake_row(spec, "base", 0, "cpu")) + "\n")
    (out / "spec.json").write_text(json.dumps({"name": "s", "path": str(spec)}))
    before = tree(out)
    assert main(["sweep", str(spec), "--out", str(out), "--summary-only"]) == 0
    assert "1/2 cells done" in capsys.readouterr().out
    foreign = sweep_spec(tmp_path, "other", seeds=[5, 6, 7])
    assert main(["sweep", str(foreign), "--out", str(out), "--summary-only"]) == 2
    one_line_error(capsys, "holds sweep 's'")
    (out / "spec.json").unlink()
    before = tree(out)
    assert main(["sweep", str(foreign), "--out", str(out), "--summary-only"]) == 2
    one_line_error(capsys, "none of the 1 cells")
    assert tree(out) == before


def test_second_sweep_into_one_folder_is_refused(tmp_path, capsys):
    spec = sweep_spec(tmp_path)
    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / runs.LOCK).write_text(
            json.dumps({"pid": holder.pid, "host": __import__("socket").gethostname(), "started": "now"})
        )
        assert main(["sweep", str(spec), "--out", str(out)]) == 2
        one_line_error(capsys, f"is in use by bupo process {holder.pid}")
        assert sorted(p.name for p in out.iterdir()) == [runs.LOCK]
    finally:
        holder.kill()
        holder.wait()


def test_grader_worker_restores_default_signal_handling(capfd):
    """The forked grader must not run the trainer's handlers: no 'ForkProcess ... KeyboardInterrupt' traceback."""
    import signal

    from bupo_core.rewards import GradingWorker

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    worker = GradingWorker()
    try:
        assert worker.score("boxed_math", "\\boxed{3}", {"answer": "3"}, 10.0) == 1.0
        proc = worker.proc
        os.kill(proc.pid, signal.SIGINT)  # ignored by the worker: Ctrl-C is the parent's to handle
        assert worker.score("boxed_math", "\\boxed{4}", {"answer": "3"}, 10.0) == 0.0
        proc.terminate()  # what multiprocessing does to a daemon worker at exit
        proc.join(5)
        assert proc.exitcode == -signal.SIGTERM
    finally:
        worker.close()
        for s, h in old.items():
            signal.signal(s, h)
    assert "Traceback" not in capfd.readouterr().err


# ----------------------------------------------------------------------------- checkpoints
def _poke(path, offset, value=1e30):
    import struct

    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<f", value))


def test_a_changed_value_anywhere_in_a_checkpoint_is_caught_on_resume_and_by_eval(finished_run, tmp_path, capsys):
    out = fresh_copy(finished_run, tmp_path)
    ckpt = out / "checkpoints" / "checkpoint-1"
    weights = ckpt / "model.safetensors"
    size = weights.stat().st_size
    sampled = [(0, 1 << 20), (size - (1 << 20), size)] + [
        (int(size * i / 64), int(size * i / 64) + (1 << 16)) for i in range(64)
    ]
    offset = next(o for o in range(1 << 20, size - (1 << 20), 4) if all(not a - 4 < o < b for a, b in sampled))
    _poke(weights, offset)  # one float32 value, at a byte the sampled digest does not read
    assert runs.checkpoint_problem(ckpt, verify="sampled") is None  # the sampled digest misses it ...
    assert "differs from its checksum" in runs.checkpoint_problem(ckpt, verify="full")  # ... every byte does not
    assert main([*TRAIN, "--out", str(out), "--resume", "--steps", "2"]) == 2
    one_line_error(capsys, "no intact checkpoint", "checkpoint-1")
    assert main(["eval", "--model", str(ckpt), "--n", "1", "--k", "1", "--out", str(tmp_path / "ev")]) == 2
    one_line_error(capsys, f"checkpoint {ckpt} is damaged", "model.safetensors content differs")
    assert not (tmp_path / "ev").exists()


def test_eval_refuses_nan_weights_in_one_line(finished_run, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(finished_run / "checkpoints" / "checkpoint-1", folder)
    (folder / runs.CHECKPOINT_MANIFEST).unlink()  # a plain model folder
    w = load_file(str(folder / "model.safetensors"))
    name = next(iter(w))
    w[name][0] = float("nan")
    save_file(w, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert main(["eval", "--model", str(folder), "--n", "1", "--k", "1", "--out", str(tmp_path / "ev")]) == 2
    one_line_error(capsys, "NaN or infinite", "diverged")


# ----------------------------------------------------------------------------- refine, entropy, eval, setup
def test_refine_cache_is_keyed_by_task_n_and_model(finished_run, tmp_path, capsys):
    from bupo_core.refinement import ReferenceSet

    out = fresh_copy(finished_run, tmp_path)
    args = ["refine", "--run", str(out), "--layer", "1", "--max-new-tokens", "4"]
    assert main([*args, "--n", "2"]) == 0
    ref = out / "refinement" / "reference_set.json"
    assert len(ReferenceSet.load(ref)) == 2
    assert main([*args, "--n", "3"]) == 0
    assert "built for other settings" in capsys.readouterr().out and len(ReferenceSet.load(ref)) == 3
    first = ref.read_bytes()
    assert main([*args, "--n", "3"]) == 0  # the same settings reuse it
    assert ref.read_bytes() == first
    assert main([*args, "--n", "3", "--task", "basic_arithmetic"]) == 0
    assert ReferenceSet.load(ref).source["cache_key"]["task"] == "basic_arithmetic"


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        (lambda run, tmp: (run / "config.json").write_text("{not json"), [], "config.json is corrupt"),
        (lambda run, tmp: None, ["--n", "0"], "--n and --max-new-tokens must be >= 1"),
        (lambda run, tmp: (tmp / "afile").write_text("x"), ["--out", "AFILE"], "is a file, not a folder"),
        (lambda run, tmp: None, ["--layer", "2"], "layer 2 is out of range"),
    ],
)
def test_refine_bad_inputs_are_one_line(finished_run, tmp_path, capsys, setup, extra, message):
    out = fresh_copy(finished_run, tmp_path)
    setup(out, tmp_path)
    extra = [str(tmp_path / "afile") if e == "AFILE" else e for e in extra]
    argv = ["refine", "--run", str(out), *(["--layer", "1"] if "--layer" not in extra else []), *extra]
    assert main(argv) == 2
    one_line_error(capsys, message)
    assert not (out / "refinement").exists()


@pytest.mark.parametrize(
    "cmd",
    [
        ["eval", "--model", "tiny-random-llama", "--n", "1", "--k", "1", "--seed", str(10**20)],
        ["entropy", "--model", "tiny-random-llama", "--task", "chain_sum", "--n", "1", "--seed", str(10**20)],
    ],
)
def test_twenty_digit_seed_is_one_line(tmp_path, capsys, no_model_load, cmd):
    assert main([*cmd, "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, "is out of range: use an integer in 0..9223372036854775807")
    assert not (tmp_path / "o").exists()


@pytest.fixture
def no_model_load(monkeypatch):
    import bupo_core.models as models

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(models, "load_model", refuse)


def test_entropy_top_k_larger_than_the_vocabulary_fails_before_the_analysis(tmp_path, capsys, monkeypatch):
    import bupo_core.analysis as analysis

    monkeypatch.setattr(
        analysis, "analyse_entropy", lambda *a, **k: (_ for _ in ()).throw(AssertionError("analysis ran"))
    )
    assert (
        main(
            [
                "entropy",
                "--model",
                "tiny-random-llama",
                "--task",
                "chain_sum",
                "--n",
                "1",
                "--top-k",
                "999999",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    one_line_error(capsys, "--top-k 999999 is larger than the model's vocabulary")


def test_setup_cache_dir_a_file_fails_before_converting(tmp_path, capsys, monkeypatch):
    import bupo_core.models as models

    monkeypatch.setattr(models, "_convert_embedded", lambda *a, **k: (_ for _ in ()).throw(AssertionError("converted")))
    (tmp_path / "f").write_text("x")
    assert main(["setup", "--cache-dir", str(tmp_path / "f"), "--no-install"]) == 2
    one_line_error(capsys, "is a file, not a folder")


def test_model_folder_with_custom_code_is_one_line(finished_run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(finished_run / "checkpoints" / "checkpoint-1", folder)
    (folder / runs.CHECKPOINT_MANIFEST).unlink()
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    assert main(["eval", "--model", str(folder), "--n", "1", "--k", "1", "--out", str(tmp_path / "ev")]) == 2
    one_line_error(capsys, "declares custom model code (auto_map: AutoModelForCausalLM)")
    from bupo_core.errors import UnsupportedArchitectureError
    from bupo_core.models import load_model

    with pytest.raises(UnsupportedArchitectureError, match="custom model code"):
        load_model(str(folder), device="cpu")


def test_offline_message_names_the_actual_setting(monkeypatch):
    from bupo_core import models
    from bupo_core.errors import ModelNotAvailableError

    monkeypatch.setattr(models, "_in_hub_cache", lambda name: False)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(ModelNotAvailableError) as info:
        models.check_model("someone/some-model")
    assert "no connection to the hub" in str(info.value) and "HF_HUB_OFFLINE" not in str(info.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="HF_HUB_OFFLINE=1 is set"):
        models.load_model("someone/some-model", device="cpu")


# ----------------------------------------------------------------------------- the run loop under interrupts
def _train(out, *extra):
    return main([*TRAIN, "--out", str(out), *extra])


def _ckpt_state(out):
    ckpt = runs.latest_checkpoint(out)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    return ckpt, state


def _consistent(out):
    """The newest checkpoint, the metrics rows and the optimizer's update count agree (no step lost or doubled)."""
    from safetensors.torch import load_file

    ckpt, state = _ckpt_state(out)
    rows = runs.read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, state["step"] + 1))
    assert [r["step"] for r in runs.read_metrics(ckpt / "metrics.jsonl")] == list(range(1, state["step"] + 1))
    opt = load_file(str(ckpt / "optimizer.safetensors"))
    steps = {float(v) for k, v in opt.items() if k.endswith(".step")} or {0.0}
    assert steps == {float(sum(r["updates"] for r in rows))}, (steps, [r["updates"] for r in rows])
    assert not list((out / "checkpoints").glob(".tmp-*"))
    return state["step"]


def test_interrupt_during_the_final_save_lets_it_finish(tmp_path, monkeypatch):
    import signal

    real = runs._save_checkpoint

    def save_with_interrupt(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while the final (only) checkpoint is written
        return real(*a, **k)

    monkeypatch.setattr(runs, "_save_checkpoint", save_with_interrupt)
    out = tmp_path / "run"
    assert _train(out, "--steps", "2", "--lr", "1e-2", "--reward", "guard_even_length") == 0
    assert _consistent(out) == 2


@pytest.mark.parametrize("where", ["after_update_before_counter", "between_step_and_row"])
def test_interrupt_at_a_step_boundary_never_loses_or_doubles_a_step(tmp_path, monkeypatch, where):
    import signal

    from bupo_core import loop, step

    if where == "after_update_before_counter":
        real_update, real_time = step.update_policy, step.time
        armed = []

        class Clock:
            def perf_counter(self):
                if armed:
                    armed.clear()
                    os.kill(os.getpid(), signal.SIGINT)  # the update is applied, the counter not yet moved
                return real_time.perf_counter()

        def update(*a, **k):
            out = real_update(*a, **k)
            armed.append(1)
            return out

        monkeypatch.setattr(step, "update_policy", update)
        monkeypatch.setattr(step, "time", Clock())
    else:
        real_step = loop.step_with_clear_errors

        def step_then_interrupt(run):
            row = real_step(run)
            os.kill(os.getpid(), signal.SIGINT)  # the step is done, its row not yet written
            return row

        monkeypatch.setattr(loop, "step_with_clear_errors", step_then_interrupt)
    out = tmp_path / "run"
    assert (
        _train(out, "--steps", "3", "--lr", "1e-2", "--reward", "guard_even_length", "--prompts-per-step", "4") == 130
    )
    assert _consistent(out) == 1  # stopped after step 1, with its row and its update counted once
    monkeypatch.undo()
    assert (
        _train(
            out, "--steps", "3", "--lr", "1e-2", "--reward", "guard_even_length", "--prompts-per-step", "4", "--resume"
        )
        == 0
    )
    assert _consistent(out) == 3


def test_disk_full_during_a_save_leaves_no_temporary_folder(tmp_path, monkeypatch, capsys):
    import safetensors.torch

    real = safetensors.torch.save_file

    def full(tensors, path, *a, **k):
        if path.endswith("optimizer.safetensors"):
            raise safetensors.SafetensorError(
                'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
            )
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "run"
    assert _train(out) == 2
    one_line_error(capsys, "no space left on the disk", "the partial checkpoint was removed", "--keep-checkpoints")
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_resumed_checkpoint_has_the_uninterrupted_runs_rng_state(tmp_path):
    from safetensors.torch import load_file

    assert _train(tmp_path / "straight", "--steps", "2") == 0
    assert _train(tmp_path / "split", "--steps", "1") == 0
    assert _train(tmp_path / "split", "--steps", "2", "--resume") == 0
    a, b = (runs.latest_checkpoint(tmp_path / n) for n in ("straight", "split"))
    ra, rb = load_file(str(a / "rng.safetensors")), load_file(str(b / "rng.safetensors"))
    assert sorted(ra) == sorted(rb) and all(bool((ra[k] == rb[k]).all()) for k in ra)
    sa, sb = (json.loads((c / "trainer_state.json").read_text())["rng"] for c in (a, b))
    assert sa == sb


def test_resume_refuses_fewer_steps_a_changed_batch_size_and_edited_task_data(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--steps", "2") == 0
    config = (out / "config.json").read_bytes()
    assert _train(out, "--steps", "1", "--resume") == 2
    one_line_error(capsys, "--resume --steps 1: the run", "has already done 2 steps", "--steps 2 or more")
    assert _train(out, "--steps", "3", "--resume", "--generation-batch-size", "3") == 2
    one_line_error(capsys, "generation_batch_size: saved 64, now 3")
    assert (out / "config.json").read_bytes() == config
    data = tmp_path / "task.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(8))
    )
    run2 = tmp_path / "run2"
    args = [
        "train",
        "--model",
        "tiny-random-llama",
        "--task",
        str(data),
        "--prompts-per-step",
        "2",
        "--group-size",
        "2",
        "--max-new-tokens",
        "4",
        "--task-size",
        "8",
        "--quiet",
        "--out",
        str(run2),
    ]
    assert main([*args, "--steps", "1"]) == 0
    assert "task_data_sha256" in json.loads((run2 / "config.json").read_text())
    data.write_text(data.read_text().replace('"answer": "3"', '"answer": "4"'))
    assert main([*args, "--steps", "2", "--resume"]) == 2
    one_line_error(capsys, "the task's data differ from those the run", "task_data_sha256")


def test_a_new_trainconfig_field_at_its_default_keeps_the_keys_of_finished_cells(tmp_path):
    from dataclasses import fields

    from bupo_core.sweep import KEYED_FIELDS_V1, cell_key, load_spec
    from bupo_core.trainer import TrainConfig

    later = [f.name for f in fields(TrainConfig) if f.name not in KEYED_FIELDS_V1]
    spec = load_spec(sweep_spec(tmp_path, "a"))
    key = cell_key(spec, spec.arm("grpo"), 0, "cpu")
    for name in later:  # set to a non-default value, a later field does change the key
        value = getattr(TrainConfig(), name)
        other = not value if isinstance(value, bool) else (value + 1 if isinstance(value, int) else None)
        if other is None:
            continue
        changed = load_spec(sweep_spec(tmp_path, "b", shared={**SWEEP_SHARED, name: other}))
        assert cell_key(changed, changed.arm("grpo"), 0, "cpu") != key, name


def test_a_trainer_started_from_python_holds_the_run_folder(tmp_path):
    """The run loop itself locks the folder, so a notebook's or the demo's Trainer is guarded like `bupo train`."""
    from bupo_core.trainer import TrainConfig, Trainer

    out = tmp_path / "run"
    cfg = TrainConfig(
        model="tiny-random-llama", task="chain_sum", prompts_per_step=2, group_size=2, max_new_tokens=4,
        task_size=20, steps=1, out_dir=str(out),
    )  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        trainer = Trainer(cfg)
        (out / runs.LOCK).write_text(
            json.dumps({"pid": holder.pid, "host": __import__("socket").gethostname(), "started": "now"})
        )
        with pytest.raises(runs.RunFolderError, match=f"in use by bupo process {holder.pid}"):
            trainer.train()
        assert not (out / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is taken over, the run completes and releases the folder
    assert trainer.train().step == 1 and not (out / runs.LOCK).exists()
    # a claim by the process that already holds the folder nests (bupo train locks it, then the loop does)
    with runs.lock_folder(out) as outer:
        with runs.lock_folder(out) as inner:
            assert not inner.owner
        assert (out / runs.LOCK).exists()
    assert outer.owner and not (out / runs.LOCK).exists()
