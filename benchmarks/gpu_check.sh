#!/usr/bin/env bash
# The GPU check: the one command a lent GPU machine runs, from the repository root.
#   bash benchmarks/gpu_check.sh [--quick]
# Phases, in order, stopping at the first that fails (and saying which):
#   build   the extension for sm_90 (TORCH_CUDA_ARCH_LIST), with the CUDA kernels required
#   parity  tests/ops/test_parity.py: every op, every case, CPU and CUDA columns
#   cuda    every other test whose id names CUDA (ops, cache tiers, the launch-bounds
#           check of the build) and tests/test_gpu_smoke.py (engine under AMP fp16 +
#           GradScaler and bf16, NCCL with one rank, fine-tuning and distillation on the GPU)
#   suite   the whole test suite (full mode only)
#   bench   benchmarks/kd_table.py at 4096×32000 and 8192×128256 (bf16; float32 too in full
#           mode), with % of the GPU's peak memory bandwidth
#   fused   benchmarks/fused_linear_table.py at the issue's N=8192, H=4096, V=128256 (and
#           N=2048 for the scaling), full and top-64 teacher: time and memory ratios of
#           fused_linear_kd_loss against matmul + kd_loss, in bf16 (weights bf16, gradient
#           summed in float32, then in bf16) and under autocast (float32 weights); against
#           Liger-Kernel's fused linear losses when liger_kernel imports (LIGER_WHEEL=path
#           to a liger_kernel wheel installs it first, --no-deps), else a line says skipped
#   lm      benchmarks/lm_distill_table.py: one HF causal-LM distillation step, materialised
#           logits + KL and TRL's GKD loss against ptcore's LMDistillLoss (step time, peak
#           memory per token); a line says skipped where transformers or trl is missing
# Writes $OUT/summary.json (phase → status, seconds) and one log per phase in $OUT.
# Budget: about 9 minutes on one H200 (16 cores), about 4 with --quick.
set -uo pipefail
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" FORCE_CUDA=1
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" PTCORE_STRICT=1 PTCORE_EXPECT_CUDA=1
PY="${PYTHON:-python3}"
SUMMARY="$OUT/summary.json"
echo "{\"quick\": $QUICK, \"phases\": {}}" > "$SUMMARY"

record() {  # record PHASE STATUS SECONDS
  "$PY" - "$SUMMARY" "$1" "$2" "$3" <<'EOF'
import json, sys
path, phase, status, secs = sys.argv[1:]
data = json.load(open(path))
data["phases"][phase] = {"status": status, "seconds": float(secs)}
if status != "ok":
    data["failed_phase"] = phase
json.dump(data, open(path, "w"), indent=2)
EOF
}

phase() {  # phase NAME COMMAND...: runs it, logs to $OUT/NAME.log, stops the check on failure
  local name="$1"; shift
  local start=$SECONDS
  echo "== $name: $*"
  if "$@" > "$OUT/$name.log" 2>&1; then
    record "$name" ok $((SECONDS - start))
    tail -3 "$OUT/$name.log"
  else
    record "$name" failed $((SECONDS - start))
    tail -40 "$OUT/$name.log"
    echo "GPU CHECK FAILED in phase '$name' (log: $OUT/$name.log)"
    cat "$SUMMARY"
    exit 1
  fi
}

build() {
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv &&
  "$PY" -m pip install --no-build-isolation --no-deps -e . -q &&
  "$PY" -m ptcore info
}

PYTEST=("$PY" -m pytest -q -p no:cacheprovider -x)
phase build build
phase parity "${PYTEST[@]}" tests/ops/test_parity.py
phase cuda "${PYTEST[@]}" tests -k "(cuda or gpu_smoke) and not test_parity"
if [[ $QUICK == 0 ]]; then
  phase suite "${PYTEST[@]}" tests --deselect tests/ops/test_parity.py
fi
DTYPES=bfloat16
[[ $QUICK == 0 ]] && DTYPES=bfloat16,float32
phase bench "$PY" benchmarks/kd_table.py --shapes vocab32k,gpu128k --dtypes "$DTYPES" \
  --rounds $((QUICK ? 3 : 10)) --json "$OUT/kd_table.json"
cat "$OUT/bench.log"

fused() {
  if [[ -n "${LIGER_WHEEL:-}" ]]; then
    "$PY" -m pip install --no-deps -q "$LIGER_WHEEL" || echo "liger: $LIGER_WHEEL did not install"
  fi
  local table=("$PY" benchmarks/fused_linear_table.py --h 4096 --v 128256 --dtype bfloat16
               --rounds $((QUICK ? 3 : 10)))
  "${table[@]}" --n 2048 8192 --liger --json "$OUT/fused_linear_bf16.json" &&
  "${table[@]}" --n 8192 --weight-dtype-sum --liger --json "$OUT/fused_linear_bf16_sum.json" &&
  "${table[@]}" --n 8192 --autocast --json "$OUT/fused_linear_autocast.json"
}
phase fused fused
cat "$OUT/fused.log"

lm() {
  if ! "$PY" -c "import transformers, trl" 2>/dev/null; then
    echo "lm: skipped, transformers or trl is not installed here"
    return 0
  fi
  "$PY" benchmarks/lm_distill_table.py --shape small medium --rounds $((QUICK ? 2 : 5))
}
phase lm lm
cat "$OUT/lm.log"
echo "GPU CHECK PASSED"
cat "$SUMMARY"
