#!/usr/bin/env bash
# Line coverage of the CUDA kernels' headers (csrc/cuda/*.cuh; the host side, *.h, too) under
# the emulated build:
# builds the emulation with gcov instrumentation (PTCORE_EMU_COVERAGE=1, -O0), runs the
# emulated tests (arguments go to pytest), and prints each header's lines run / lines with
# code, merged over every translation unit that includes it.
#
#   scripts/emulated_coverage.sh             # the whole of tests/emulated
#   scripts/emulated_coverage.sh -k split    # a part of it
set -euo pipefail
cd "$(dirname "$0")/.."
export PTCORE_EMU_COVERAGE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
build=$(python -c "from tests.emulated import emulation; print(emulation.build_dir())")
find "$build" -name '*.gcda' -delete 2>/dev/null || true
python -m pytest tests/emulated -q -p no:cacheprovider "$@"
python - "$build" <<'EOF'
import glob, gzip, json, os, subprocess, sys, tempfile

build = sys.argv[1]
headers = sorted(os.path.realpath(p) for p in glob.glob("csrc/cuda/*.cuh") + glob.glob("csrc/cuda/*.h"))
lines = {h: {} for h in headers}  # header -> {line: run?}
with tempfile.TemporaryDirectory() as tmp:
    for gcda in glob.glob(os.path.join(build, "*.gcda")):
        subprocess.run(["gcov", "--json-format", "--preserve-paths", os.path.abspath(gcda)],
                       cwd=tmp, check=True, capture_output=True)
    for path in glob.glob(os.path.join(tmp, "*.gcov.json.gz")):
        with gzip.open(path) as f:
            report = json.load(f)
        for entry in report["files"]:
            name = os.path.realpath(os.path.join(report.get("current_working_directory", ""),
                                                 entry["file"]))
            if name not in lines:
                continue
            for line in entry["lines"]:
                n = line["line_number"]
                lines[name][n] = lines[name].get(n, False) or line["count"] > 0
totals = {".cuh": [0, 0], ".h": [0, 0]}
print(f"{'header':32} {'lines run':>9} {'of':>5} {'%':>6}  lines never run")
for h in headers:
    run = sorted(n for n, hit in lines[h].items() if hit)
    missed = sorted(n for n, hit in lines[h].items() if not hit)
    totals[os.path.splitext(h)[1]][0] += len(run)
    totals[os.path.splitext(h)[1]][1] += len(lines[h])
    pct = 100.0 * len(run) / max(len(lines[h]), 1)
    print(f"{os.path.relpath(h):32} {len(run):9} {len(lines[h]):5} {pct:6.1f}  {missed}")
for ext, (run, total) in totals.items():
    print(f"{'all csrc/cuda/*' + ext:32} {run:9} {total:5} {100.0 * run / max(total, 1):6.1f}")
EOF
