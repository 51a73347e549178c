"""Mutation check of the emulated CUDA tests (tests/emulated): each mutation is applied to a
temporary copy of csrc/ (never the real tree), the emulation extension is rebuilt from the
copy (PTCORE_EMU_CSRC), the emulated tests run until the first failure, and a Markdown table
says which mutation was caught and by which test.

    python scripts/emulated_mutations.py            # every mutation
    python scripts/emulated_mutations.py tail-loop  # some, by name

A build takes about two minutes on two cores; each run stops at its first failing test."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (file under csrc/, text, replacement, what it models). Each text occurs once.
MUTATIONS = {
    "no-barrier": (
        "cuda/reduce.cuh",
        "  __syncthreads();  // smem may still be read by a previous reduction\n",
        "",
        "block_allreduce without its first __syncthreads (a reduction's smem writes may "
        "overtake the previous reduction's reads)"),
    "label-index+1": (
        "cuda/kd_loss_kernels.cuh",
        "(j + e == label ? 1.f : 0.f)",
        "(j + e + 1 == label ? 1.f : 0.f)",
        "the hard term's one-hot shifted by one column in the full-teacher gradient"),
    "tail-loop": (
        "cuda/row_io.cuh",
        "  for (int64_t j = tail + lo + threadIdx.x; j < tail + hi; j += blockDim.x) scalar(j);\n",
        "",
        "for_each_pack without its scalar tail loop"),
    "int32-row-offset": (
        "cuda/kd_loss_kernels.cuh",
        "  const scalar_t* s = student + i * V;\n  const scalar_t* t = teacher + i * V;\n",
        "  const scalar_t* s = student + static_cast<int>(i * V);\n"
        "  const scalar_t* t = teacher + static_cast<int>(i * V);\n",
        "the one-block forward's row offset i · V in 32 bits (wrong only past 2^31 elements)"),
    "merge-drops-last-part": (
        "cuda/kd_loss_kernels.cuh",
        "  for (int64_t p = 1; p < parts; ++p) r.merge(acc[p], h.inv_t, h.div);",
        "  for (int64_t p = 1; p < parts - 1; ++p) r.merge(acc[p], h.inv_t, h.div);",
        "the split path merging a row's parts but the last"),
    "topk-no-barrier": (
        "cuda/kd_topk_kernels.cuh",
        "  __syncthreads();  // the K classes and the label are rewritten exactly below\n",
        "",
        "the top-k gradient rewriting the K classes without waiting for the dense pass"),
    "topk-ignored-label": (
        "cuda/kd_topk_kernels.cuh",
        "if (kHard && counts && !__syncthreads_or(label_in_topk)",
        "if (kHard && !__syncthreads_or(label_in_topk)",
        "the defect the emulation found: an ignored row rewriting g[ignore_index]"),
    "vec-by-grad": (
        "cuda/kd_loss_host.h",
        "  const bool vec = same_alignment({&student, &teacher});\n",
        "  const bool vec = compute_grad ? same_alignment({&student, &teacher, &out.grad})\n"
        "                                : same_alignment({&student, &teacher});\n",
        "the defect the emulation found: the forward's read width chosen with the gradient"),
    "gather-bad-row+1": (
        "cuda/cache_kernels.cuh",
        "report_bad(first_bad, i);",
        "report_bad(first_bad, i + 1);",
        "the gather kernel reporting the row after the bad one"),
}


# Quick files first: a caught mutation stops at its first failing test.
ORDER = [f"tests/emulated/{name}.py" for name in (
    "test_emulation_runtime", "test_checks_emulated", "test_cache_emulated", "test_topk_emulated",
    "test_split_emulated", "test_kd_parity")]


def _mutated_copy(name: str, into: str) -> str:
    path, text, replacement, _ = MUTATIONS[name]
    csrc = os.path.join(into, "csrc")
    shutil.copytree(os.path.join(ROOT, "csrc"), csrc,
                    ignore=shutil.ignore_patterns("generated", "__pycache__"))
    target = os.path.join(csrc, path)
    with open(target) as f:
        source = f.read()
    if source.count(text) != 1:
        raise SystemExit(f"mutation {name}: its text occurs {source.count(text)} times in {path}")
    with open(target, "w") as f:
        f.write(source.replace(text, replacement))
    return csrc


def _run(name: str) -> tuple[str, str, float]:
    """(caught?, the first failing test or why not, seconds)."""
    start = time.time()
    with tempfile.TemporaryDirectory(prefix=f"ptcore-mutant-{name}-") as tmp:
        env = dict(os.environ, PTCORE_EMU_CSRC=_mutated_copy(name, tmp),
                   PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
        build = subprocess.run([sys.executable, "-c",
                                "from tests.emulated import emulation; emulation.load()"],
                               cwd=ROOT, env=env, capture_output=True, text=True)
        if build.returncode != 0:
            return "build fails", build.stderr.strip().splitlines()[-1][:80], time.time() - start
        tests = subprocess.run([sys.executable, "-m", "pytest", *ORDER, "-x", "-q",
                                "-p", "no:cacheprovider"],
                               cwd=ROOT, env=env, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (\S+)", tests.stdout, re.M)
    if tests.returncode == 0:
        return "no", "every emulated test passed", time.time() - start
    if failed:
        return "yes", failed[0], time.time() - start
    return "error", tests.stdout.strip().splitlines()[-1][:80], time.time() - start


def main(names: list[str]) -> int:
    names = names or list(MUTATIONS)
    rows = []
    for name in names:
        caught, detail, seconds = _run(name)
        rows.append((name, MUTATIONS[name][0], MUTATIONS[name][3], caught, detail))
        print(f"{name}: caught={caught} ({detail}) in {seconds:.0f} s", file=sys.stderr, flush=True)
    print("| mutation | file | what it models | caught | first failing test |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(f"`{c}`" if i in (0, 1, 4) else c for i, c in enumerate(row))
              + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
