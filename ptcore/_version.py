"""ptcore's version, and the local tag a build adds to it: the torch and CUDA it was built for.

Plain Python without imports of torch or ptcore, so that setup.py can load it by path
before anything is built.
"""
from __future__ import annotations

import re

__version__ = "0.1.0"


def torch_series(torch_version: str) -> str:
    """The torch release series a C++ extension binds to: ``"2.14"`` for ``2.14.1+cu130``."""
    m = re.match(r"(\d+)\.(\d+)", str(torch_version))
    if m is None:
        raise ValueError(f"not a torch version: {torch_version!r}")
    return f"{m.group(1)}.{m.group(2)}"


def build_tag(torch_version: str, cuda_version: str | None) -> str:
    """The local version tag of a build: ``torch2.14.cu130`` for torch 2.14.x with kernels
    for CUDA 13.0, ``torch2.14.cpu`` for a build without CUDA kernels."""
    flavour = "cu" + cuda_version.replace(".", "") if cuda_version else "cpu"
    return f"torch{torch_series(torch_version)}.{flavour}"
