"""Shared test settings: the devices to run on, tolerances per dtype, native-only marks."""
import pytest
import torch

import ptcore

# CPU always; CUDA when a GPU is present (CUDA tests skip cleanly without one).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# (rtol, atol) comparing with ptcore.reference: float32 maths on both sides, so the
# difference is the exp approximation and summation order; half types round the gradient.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-4),
    torch.bfloat16: (2e-2, 2e-3),
    torch.float16: (5e-3, 5e-4),
}

requires_native = pytest.mark.skipif(
    not ptcore.has_native(), reason=f"native library not loaded: {ptcore._extension.load_error()}")


def stage_config(directory, stage: str, out, **sections) -> str:
    """Write a YAML stage config (``sections``: model=, data=, engine=, ...) into
    ``directory`` for the `--config` tests; returns its path."""
    import yaml

    path = directory / f"{stage}.yaml"
    path.write_text(yaml.safe_dump({"stage": stage, "out": str(out), **sections}))
    return str(path)
