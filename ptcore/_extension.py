"""Loads the native library ptcore._C and says what it was built with.

If the library cannot load (not built, built against another torch, a CPU without the
instructions it was compiled for), ptcore warns once with the reason and every op falls
back to its pure-PyTorch definition in ptcore.reference. PTCORE_STRICT=1 makes that an
ImportError instead, for CI and for users who must not silently run slow code.

A library built for another torch is refused even when it happens to import: torch's C++
ABI (class layouts, inline functions, dispatcher internals) is not stable across minor
releases, so a mismatch can crash or corrupt memory instead of failing cleanly. The rule
(see _torch_mismatch) is the same torch series (major.minor) and, for a library with CUDA
kernels, the same CUDA version as torch's (the +cu130 of 2.14.1+cu130), which is what a
wheel's local tag (0.1.0+torch2.14.cu130) names. Patch releases of one series are bug-fix
cherry-picks that keep the ABI, so 2.14.0 and 2.14.1 share a wheel, as they share the
wheels of other torch extensions (flash-attn's are tagged +cu12torch2.6, for instance).
"""
from __future__ import annotations

import os
import platform
import warnings

import torch

from ptcore._version import build_tag, torch_series

__all__ = ["has_native", "has_cuda_kernels", "load_error", "build_info", "info"]

_lib = None
_built: dict = {}  # build_info() of a ptcore._C that imported, even one refused
_error: str | None = None


def _remedy(torch_version: str, torch_cuda: str | None) -> str:
    return (f"install the ptcore wheel built for torch {torch_series(torch_version)} (its version "
            f"ends in +{build_tag(torch_version, torch_cuda)}) or rebuild ptcore against the "
            "installed torch (`pip install --no-build-isolation -e .` in a source tree, or "
            "`pip wheel --no-build-isolation .`; see docs/wheels.md)")


def _torch_mismatch(built: dict, torch_version: str, torch_cuda: str | None) -> str | None:
    """Why a library with build info ``built`` must not run under this torch, or None."""
    running = f"torch {torch_version} (CUDA {torch_cuda or 'none'})"
    remedy = _remedy(torch_version, torch_cuda)
    if torch_series(built["torch"]) != torch_series(torch_version):
        return (f"ptcore._C was built for torch {built['torch']} but {running} is installed; "
                f"torch's C++ ABI differs between {torch_series(built['torch'])} and "
                f"{torch_series(torch_version)}: {remedy}")
    if built.get("with_cuda") and built.get("cuda") != torch_cuda:
        return (f"ptcore._C has CUDA kernels built for CUDA {built.get('cuda')} (torch "
                f"{built['torch']}) but {running} is installed: {remedy}")
    return None


def _strict() -> bool:
    return os.environ.get("PTCORE_STRICT", "").strip().lower() in ("1", "true", "yes", "on")


def _load():
    global _lib, _error
    try:
        if platform.machine() in ("x86_64", "AMD64") and \
                torch.backends.cpu.get_cpu_capability() == "DEFAULT":
            raise ImportError("ptcore._C was compiled for AVX2 and this CPU lacks it")
        try:
            from ptcore import _C  # registers torch.ops.ptcore.* as a side effect
        except ImportError as e:
            # Missing torch symbols or libraries mean a build for another torch or CUDA.
            cause = " (built against another torch?)" if "undefined symbol" in str(e) or \
                ".so" in str(e) else ""
            raise ImportError(f"{e}{cause}; {_remedy(torch.__version__, torch.version.cuda)}") \
                from e
        _built.update(_C.build_info())
        mismatch = _torch_mismatch(_built, torch.__version__, torch.version.cuda)
        if mismatch:
            raise ImportError(mismatch)
        if not hasattr(torch.ops.ptcore, "kd_loss_rows"):
            raise ImportError("ptcore._C loaded but registered no ops")
        _lib = _C
    except (ImportError, OSError, RuntimeError) as e:  # undefined symbols arrive as ImportError
        _error = f"{type(e).__name__}: {e}"
        if _strict():
            raise ImportError(f"PTCORE_STRICT=1 and the native library failed to load: {_error}") from e
        warnings.warn(
            f"ptcore: native library unavailable ({_error}); using the pure-PyTorch reference "
            "ops instead (slower).",
            RuntimeWarning,
            stacklevel=3,
        )


_load()


def has_native() -> bool:
    """True when ptcore._C loaded and its ops are registered."""
    return _lib is not None


def native_library():
    """The loaded ptcore._C module (None when it did not load)."""
    return _lib


def load_error() -> str | None:
    """Why the native library did not load, or None."""
    return _error


def build_info() -> dict:
    """What ptcore._C was built against: version (with its local tag), torch, cuda,
    cuda_archs, cpu_isa, with_cuda. Also filled when the library imported but was refused
    (built for another torch); empty when it could not be imported at all."""
    return dict(_built)


def has_cuda_kernels() -> bool:
    """True when the loaded library carries CUDA kernels."""
    return _lib is not None and bool(_built.get("with_cuda", False))


def info() -> dict:
    """ptcore's version; the native build (its version with the local tag naming the torch
    and CUDA it was built for, those versions, its CUDA archs); what runs; the backends."""
    from ptcore._version import __version__

    built = build_info()
    backends = []
    if _lib is not None:
        backends.append("CPU")
        if built.get("with_cuda"):
            backends.append("CUDA")
    return {
        "ptcore": __version__,
        "build": built.get("version"),
        "native_loaded": _lib is not None,
        "load_error": _error,
        "backends": backends,
        "built_with_torch": built.get("torch"),
        "built_with_cuda": built.get("cuda") or None,
        "cuda_archs": [a for a in built.get("cuda_archs", "").replace(",", ";").split(";") if a],
        "cpu_isa": built.get("cpu_isa"),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }
