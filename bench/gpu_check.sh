#!/usr/bin/env bash
# The one-shot GPU check on a device machine, from the repository root:
#   bash bench/gpu_check.sh [OUT_DIR] [extra gpu_check.py flags, e.g. --stages bench,report]
# Tiny Shakespeare is read from $GPT_SHAKESPEARE or data/tinyshakespeare/input.txt (no internet there).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-check}}"
shift || true
commit="${GPT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null | tee "$out.nvidia-smi.txt" || true
python3 bench/gpu_check.py --out "$out" --commit "$commit" "$@"
