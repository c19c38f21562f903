#!/usr/bin/env bash
# The GPU session in one script: bench/gpu_check.py in bf16 and fp16 on the embedded model's
# architecture and on Qwen3-0.6B's, everything written into one folder.
#
#     PYTHONPATH=/path/to/repo bash bench/gpu_device.sh OUT_DIR
#
# Needs only python3 with torch and transformers (no network, no other package). The embedded
# model (smollm2-135m-instruct) is used when its converted weights are in the cache; otherwise its
# exact configuration with random weights (random-smollm2-135m): the same cost, no download.
# Sizes: part 1 runs the T4 recipe's sizes (8 prompts x G = 8, 512 response tokens, micro-batch 4,
# head chunk 128) with one generate call of 64 rows, for 1 internal + 1 full step; part 2 runs one
# GRPO and one BuPO step with the T4 recipe's generation batch (16) and micro-batch on 2 prompts
# (the peaks depend on the generation batch and micro-batch, not on the number of prompts), so the
# measured peaks are the T4 recipe's. About 5-6 minutes on one H100/H200.
set -uo pipefail
out="${1:?usage: bench/gpu_device.sh OUT_DIR}"
here="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="${PYTHONPATH:-$here}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$out"
log="$out/gpu_device.log"
: >"$log"
start=$(date +%s)
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1 | tee -a "$log"

if python3 -c "from bupo_core.models import load_model; load_model('smollm2-135m-instruct', device='cpu')" >/dev/null 2>&1; then
  embedded=smollm2-135m-instruct
else
  embedded=random-smollm2-135m
fi
echo "embedded model: $embedded" | tee -a "$log"

status=0
# GPU_CHECK_MODELS / GPU_CHECK_EXTRA: a CPU dry run of this script (tests/test_gpu_check.py)
for model in ${GPU_CHECK_MODELS:-$embedded random-qwen3-0.6b}; do
  for precision in bf16 fp16; do
    name="gpu_${model}_${precision}.json"
    echo "=== $model $precision ($(( $(date +%s) - start )) s)" | tee -a "$log"
    python3 "$here/bench/gpu_check.py" --model "$model" --precision "$precision" --recipe t4-16gb \
      --generation-batch-size 64 --inter-steps 1 --full-steps 1 --memory-prompts 2 --time-budget-s 240 \
      ${GPU_CHECK_EXTRA:-} --out "$out/$name" >>"$log" 2>&1 || { echo "FAILED: $model $precision (see $log)" | tee -a "$log"; status=1; }
  done
done

# one file with every run (bench/results/gpu.json in the repository)
python3 - "$out" <<'EOF' 2>&1 | tee -a "$log"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {p.stem.removeprefix("gpu_"): json.loads(p.read_text()) for p in sorted(out.glob("gpu_*.json"))}
summary = {}
for name, r in runs.items():
    loop, mem = r["bupo_loop"], r.get("memory_config", {})
    summary[name] = {"precision": loop["precision"]["mode"], "tokens_per_s": loop["median_tokens_per_s_after_first_step"],
                     "peak_reserved_gib_loop": loop["peak_gpu_reserved_gib"], "peak_gib_t4_recipe": mem.get("peak_gib"),
                     "estimate_gib_t4_recipe": (mem.get("estimate_for_comparison") or {}).get("peak_gib"), "fits_t4_recipe": mem.get("fits"),
                     "upper_blocks_bit_identical": loop["upper_blocks_bit_identical_in_internal_phase"]}
(out / "gpu.json").write_text(json.dumps({"measured": True, "produced_by": "bench/gpu_device.sh", "summary": summary, "runs": runs}, indent=1))
print(json.dumps(summary, indent=1))
EOF
echo "total $(( $(date +%s) - start )) s, status $status" | tee -a "$log"
exit $status
