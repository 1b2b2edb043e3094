#!/usr/bin/env bash
# The one-shot GPU check, from the repository root (see tools/gpu_check.py for the stages):
#   bash tools/gpu_check.sh [--dry-run] [OUT_DIR] [extra gpu_check.py flags, e.g. --stages bench,report]
# OUT_DIR defaults to $OUT (the device machine's output folder), else gpu-check. --dry-run runs the
# same logic on a CPU with tiny shapes. Tiny Shakespeare is read from $GPT_SHAKESPEARE,
# data/tinyshakespeare/input.txt or ../shared (there is no internet on the device machine).
# $PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
dry_run=()
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=(--dry-run); shift; fi
out="${OUT:-gpu-check}"
if [[ $# -gt 0 && "$1" != --* ]]; then out="$1"; shift; fi
mkdir -p "$out"
if [[ -z "${GPT_SHAKESPEARE:-}" && -f data/tinyshakespeare/input.txt ]]; then  # carried to the device as data/
  export GPT_SHAKESPEARE="$PWD/data/tinyshakespeare/input.txt"
fi
commit="${GPT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$out/nvidia-smi.txt" 2>&1 || true
"${PYTHON:-python3}" -m tools.gpu_check --out "$out" --commit "$commit" "${dry_run[@]}" "$@"
