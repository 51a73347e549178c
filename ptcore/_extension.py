"""Loads the native library ptcore._C and says what it was built with.

If the library cannot load (not built, built against another torch, a CPU without the
instructions it was compiled for), ptcore warns once with the reason and every op falls
back to its pure-PyTorch definition in ptcore.reference. PTCORE_STRICT=1 makes that an
ImportError instead, for CI and for users who must not silently run slow code.
"""
from __future__ import annotations

import os
import platform
import warnings

import torch

__all__ = ["has_native", "has_cuda_kernels", "load_error", "build_info", "info"]

_lib = None
_error: str | None = None


def _strict() -> bool:
    return os.environ.get("PTCORE_STRICT", "").strip().lower() in ("1", "true", "yes", "on")


def _load():
    global _lib, _error
    try:
        if platform.machine() in ("x86_64", "AMD64") and \
                torch.backends.cpu.get_cpu_capability() == "DEFAULT":
            raise ImportError("ptcore._C was compiled for AVX2 and this CPU lacks it")
        from ptcore import _C  # registers torch.ops.ptcore.* as a side effect

        if not hasattr(torch.ops.ptcore, "kd_loss_rows"):
            raise ImportError("ptcore._C loaded but registered no ops")
        _lib = _C
    except (ImportError, OSError, RuntimeError) as e:  # undefined symbols arrive as ImportError
        _error = f"{type(e).__name__}: {e}"
        if _strict():
            raise ImportError(f"PTCORE_STRICT=1 and the native library failed to load: {_error}") from e
        warnings.warn(
            f"ptcore: native library unavailable ({_error}); using the pure-PyTorch reference "
            "ops instead (slower). Rebuild with `pip install --no-build-isolation -e .`.",
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
    """What ptcore._C was built against (empty when it did not load)."""
    return dict(_lib.build_info()) if _lib is not None else {}


def has_cuda_kernels() -> bool:
    """True when the loaded library carries CUDA kernels."""
    return bool(build_info().get("with_cuda", False))


def info() -> dict:
    """ptcore's version, the torch/CUDA it was built against and runs with, its backends."""
    from ptcore import __version__

    built = build_info()
    backends = []
    if _lib is not None:
        backends.append("CPU")
        if built.get("with_cuda"):
            backends.append("CUDA")
    return {
        "ptcore": __version__,
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
