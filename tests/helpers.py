"""Shared test settings: the devices to run on, tolerances per dtype, native-only marks."""
import pytest
import torch

import ptcore

# CPU always; CUDA when a GPU is present (CUDA tests skip cleanly without one).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# (rtol, atol) comparing with ptcore.reference run in float64 on the same (rounded) inputs:
# float32 results at 1e-5; half-precision tolerances only for half-precision values (the
# gradient; losses are float32 whatever the inputs).
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (2e-2, 2e-3),
    torch.float16: (5e-3, 5e-4),
}


def loss_tol(dtype):
    """Tolerance for a loss (float32 for every input dtype but float64)."""
    return TOL[torch.float64 if dtype == torch.float64 else torch.float32]

requires_native = pytest.mark.skipif(
    not ptcore.has_native(), reason=f"native library not loaded: {ptcore._extension.load_error()}")


def stage_config(directory, stage: str, out, **sections) -> str:
    """Write a YAML stage config (``sections``: model=, data=, engine=, ...) into
    ``directory`` for the `--config` tests; returns its path."""
    import yaml

    path = directory / f"{stage}.yaml"
    path.write_text(yaml.safe_dump({"stage": stage, "out": str(out), **sections}))
    return str(path)
