"""Builds the test-only extension that runs ptcore's CUDA kernels on the CPU: the kernels'
own headers (csrc/cuda/*.cuh, *_host.h) compiled by the host compiler against the emulation
runtime in tests/emulated/emu, with torch.utils.cpp_extension.load (ninja). The build is
cached under build/emulated/, keyed on a hash of every source it reads.

PTCORE_EMU_CSRC points the build at another csrc/ (scripts/emulated_mutations.py builds
mutated copies); PTCORE_EMU_COVERAGE=1 builds with gcov instrumentation
(scripts/emulated_coverage.sh)."""
from __future__ import annotations

import glob
import hashlib
import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMU = os.path.join(ROOT, "tests", "emulated", "emu")


def csrc_dir() -> str:
    return os.path.abspath(os.environ.get("PTCORE_EMU_CSRC", os.path.join(ROOT, "csrc")))


def coverage() -> bool:
    return os.environ.get("PTCORE_EMU_COVERAGE", "") == "1"


def _inputs(csrc: str) -> list[str]:
    """Every file the build reads (its hash names the build)."""
    files = glob.glob(os.path.join(EMU, "*"))
    files += glob.glob(os.path.join(csrc, "*.h")) + glob.glob(os.path.join(csrc, "*.cpp"))
    files += glob.glob(os.path.join(csrc, "cuda", "*"))
    return sorted(f for f in files if os.path.isfile(f))


def missing_tools() -> str | None:
    """Why the extension cannot be built here, or None."""
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler (c++) on PATH"
    try:
        from torch.utils.cpp_extension import verify_ninja_availability
        verify_ninja_availability()
    except (ImportError, RuntimeError) as e:
        return f"ninja is not available ({e})"
    return None


def build_dir() -> str:
    csrc = csrc_dir()
    digest = hashlib.sha256()
    for path in _inputs(csrc):
        digest.update(os.path.relpath(path, csrc if path.startswith(csrc) else EMU).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    digest.update(b"coverage" if coverage() else b"plain")
    return os.path.join(ROOT, "build", "emulated", digest.hexdigest()[:16])


def load():
    """The emulation module, built (or reused from its build directory)."""
    from torch.utils.cpp_extension import load as load_extension

    csrc = csrc_dir()
    where = build_dir()
    os.makedirs(where, exist_ok=True)
    sources = sorted(glob.glob(os.path.join(EMU, "*.cpp")))
    sources.append(os.path.join(csrc, "cache_checks.cpp"))
    # _FORTIFY_SOURCE's longjmp check refuses the jumps between fiber stacks.
    cflags = ["-U_FORTIFY_SOURCE", "-Wno-unknown-pragmas"]
    cflags += ["-O0", "--coverage"] if coverage() else ["-O2"]
    ldflags = ["-ldl"] + (["--coverage"] if coverage() else [])
    os.environ.setdefault("MAX_JOBS", "2")
    return load_extension(
        name="ptcore_emulated_" + os.path.basename(where),
        sources=sources,
        extra_include_paths=[EMU, csrc],
        extra_cflags=cflags,
        extra_ldflags=ldflags,
        build_directory=where,
        verbose=os.environ.get("PTCORE_EMU_VERBOSE", "") == "1",
    )
