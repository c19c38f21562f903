#!/usr/bin/env bash
# The GPU session of this repository, in two calls of the workplace's device tool (each call carries at most
# 64 MiB, and the embedded model's GGUF is 98 MB, so it travels xz-compressed in two halves):
#   call 1 (carry .whl .dev/a):   bash tools/gpu/run.sh 1    wheels in, bench/gpu_device.sh on random-qwen3-0.6b
#   call 2 (carry .whl2 .dev/b):  bash tools/gpu/run.sh 2    model rebuilt and converted, the deciding sweep with
#                                                          --workers, then bench/gpu_device.sh on the embedded model
# Everything it produces goes to $OUT (results come back from there). The sweep resumes where it stopped: rerun
# `bupo sweep results/specs/decide.yaml --out results/decide --device cuda` on any CUDA machine to finish it.
set -uo pipefail
part=${1:?usage: tools/gpu/run.sh 1|2}
out=${OUT:?set OUT}
here="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$here"
SITE="${SITE:-$here/.dev/site}" bash tools/gpu/prepare.sh >"$out/prepare_$part.log" 2>&1 || { tail -20 "$out/prepare_$part.log"; exit 1; }
export SITE="${SITE:-$here/.dev/site}"; export PYTHONPATH="$SITE:$here" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 BUPO_CACHE="$here/.dev/cache"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ "$part" = 1 ]; then
  GPU_CHECK_MODELS=random-qwen3-0.6b timeout "${GPU_CHECK_S:-200}" bash bench/gpu_device.sh "$out/gpu_qwen" | tail -25
  exit 0
fi
python3 -m bupo_core setup --model smollm2-135m-instruct >"$out/setup.log" 2>&1 || { tail -20 "$out/setup.log"; exit 1; }
tail -1 "$out/setup.log"
mkdir -p results
t0=$(date +%s)
timeout -s INT -k 20 "${SWEEP_S:-300}" python3 -m bupo_core sweep "${SPEC:-results/specs/decide.yaml}" --out results/decide \
  --device cuda --workers "${WORKERS:-16}" --quiet >"$out/sweep.log" 2>&1
echo "sweep exit $? after $(( $(date +%s) - t0 )) s; $(wc -l < results/decide/cells.jsonl) cells in cells.jsonl"
grep -E "failed|Error" "$out/sweep.log" | head -5
tail -3 "$out/sweep.log"
# cells.jsonl, summary, per-cell metrics/eval/per-problem files (no checkpoints: the sweep deletes finished ones)
tar czf "$out/decide.tgz" --exclude='checkpoints' --exclude='*.safetensors' results/decide
GPU_CHECK_MODELS=smollm2-135m-instruct timeout "${GPU_CHECK_S:-150}" bash bench/gpu_device.sh "$out/gpu_embedded" | tail -25
ls -la "$out"
