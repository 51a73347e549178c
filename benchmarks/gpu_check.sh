#!/usr/bin/env bash
# The GPU check, run on a lent GPU machine from the repository root (one script, so it is
# repeatable): build with CUDA for Hopper, run every test (CUDA tests included), then the
# KD ratio table at the GPU shapes. Output goes to $OUT (or ./gpu_check_out).
set -uo pipefail
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" FORCE_CUDA=1
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" PTCORE_STRICT=1
{
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv
  time python3 -m pip install --no-build-isolation --no-deps -e . -q
  python3 -m ptcore info
} > "$OUT/build.txt" 2>&1 || { tail -50 "$OUT/build.txt"; exit 1; }
tail -20 "$OUT/build.txt"
python3 -m pytest -q -x tests/ops tests/test_extension.py -p no:cacheprovider 2>&1 | tail -30 | tee "$OUT/tests.txt"
cd benchmarks && python3 kd_table.py --shapes vocab32k,gpu128k --dtypes bfloat16,float32 \
    --rounds 10 2>&1 | tee "../$OUT/kd_table.txt"
