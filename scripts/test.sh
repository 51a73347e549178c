#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the test suite, then the benchmarks as a smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PTCORE_STRICT=1  # a native library that fails to load is an error here, not a fallback
PTCORE_BENCH_SHAPES=small python -m pytest -q benchmarks --benchmark-disable -p no:cacheprovider
python -m pytest -q tests -p no:cacheprovider
