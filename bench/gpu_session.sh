#!/usr/bin/env bash
# Issue 14, Part 1: the one prepared GPU session. From the repository root on the GPU machine:
#     bash bench/gpu_session.sh                 # ~8 minutes on one H200; log and JSON under $OUT
#     bash bench/gpu_session.sh --only cost     # what an earlier session skipped (it prints this line)
#     bash bench/gpu_session.sh --smoke         # any machine: toy sizes, the same code paths (minutes on 2 CPUs)
# Installs nothing. First a cheap look at the machine (GPU, Python, the packages bench/gpu_session.py imports),
# then the measurements (bench/gpu_session.py, under `timeout` so a hang cannot eat the session).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
LOG="$OUT/gpu_session.log"
PY=${PYTHON:-$(command -v python3 || command -v python)}
{
  echo "== machine: $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm), $(nproc) CPUs"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 || echo "nvidia-smi: not here"
  echo "python: $PY ($("$PY" -V 2>&1))"
  "$PY" - <<'PYEOF'
import importlib
for name in ("jax", "jaxlib", "flax", "optax", "numpy", "ml_dtypes", "safetensors", "PIL", "torch", "transformers",
             "huggingface_hub", "ml_collections", "tqdm", "triton"):
    try:
        print(f"  {name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as e:
        print(f"  {name} MISSING ({type(e).__name__}: {e})")
PYEOF
} 2>&1 | tee "$LOG"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout "${SESSION_TIMEOUT_S:-560}" "$PY" bench/gpu_session.py --out "$OUT" "$@" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
echo "exit $rc; log: $LOG" | tee -a "$LOG"
exit "$rc"
