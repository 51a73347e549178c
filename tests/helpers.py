"""Shared test settings: the devices to run on, tolerances per dtype, native-only marks;
configs and planted weights files for the command tests."""
import os

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


def plant_torchvision_weights(tmp_path, monkeypatch, name: str):
    """``name``'s DEFAULT torchvision weights file in a torch hub cache of its own
    (TORCH_HOME), holding a randomly initialised model (no network: a download fails the
    test). Returns (its state_dict, the weights' own transforms())."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("the cached weights must be used"))
    weights = torchvision.models.get_model_weights(name).DEFAULT
    target = tmp_path / "torch" / "hub" / "checkpoints" / os.path.basename(weights.url)
    target.parent.mkdir(parents=True)
    torch.manual_seed(0)
    state = torchvision.models.get_model(name).state_dict()
    torch.save(state, target)
    return state, weights.transforms()


def kill_when_committed(proc, progress_file, rows: int, *, what: str, timeout: float = 120):
    """SIGKILL the subprocess ``proc`` (a cache build) once its ``progress_file`` says at
    least ``rows`` rows are committed; returns that progress record. Fails the test if the
    process ends first or never gets there."""
    import json
    import signal
    import time

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                progress = json.loads(progress_file.read_text())
            except (OSError, ValueError):
                progress = {}
            if progress.get("rows_done", 0) >= rows:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return progress
            assert proc.poll() is None, f"the {what} ended before it was killed"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pytest.fail(f"the {what} did not commit rows in time")


def run_ranks(worker, out, *, world: int = 2, timeout: float = 240) -> None:
    """Run ``worker(rank, world, port, str(out))`` in ``world`` spawned processes (a DDP
    group on a free local port, gloo on CPU) and wait for all of them; fail the test past
    ``timeout`` seconds (the processes are killed) or when one raises."""
    import socket
    import time

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.start_processes(worker, args=(world, port, str(out)), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"the {world}-process run did not finish within {timeout} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
