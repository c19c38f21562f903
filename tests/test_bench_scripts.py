"""The benchmark scripts the closing notes quote still run: each once at tiny sizes (seconds), writing its JSON.

They time nothing here (timings are measured alone, by running the scripts at their default sizes);
this only keeps them in step with the package, so a renamed config field cannot break them unnoticed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "train_step": ["--model", "tiny-random-llama", "--layer", "1", "--steps", "2", "--inter-steps", "1"],
    "ipa_vs_full": ["--model", "tiny-random-llama", "--layers", "1", "--reps", "1", "--max-new-tokens", "4"],
    "trl_vs_ours": ["--model", "tiny-random-qwen3", "--layer", "1", "--steps", "2"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_script_runs_at_tiny_sizes(name, tmp_path):
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), *CASES[name], "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert isinstance(data, dict) and data
