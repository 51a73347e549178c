"""The compiled CUDA kernels stay launchable at the block sizes they are launched with,
checked without a GPU: setup.py keeps what ptxas reported for every kernel (registers,
spills, stack; nvcc --resource-usage) in csrc/generated/ptxas_usage.json, read here."""
import json
import os

import pytest

import ptcore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USAGE = os.path.join(ROOT, "csrc", "generated", "ptxas_usage.json")
REGISTERS_PER_SM = 65536  # every NVIDIA GPU since Kepler
# Largest block each source launches (cuda/row_io.cuh kMaxThreads; 256 elsewhere).
MAX_THREADS = {"kd_loss_kernel.cu": 512, "kd_loss_topk_kernel.cu": 512, "kd_checks.cu": 256,
               "cache_kernel.cu": 256}

pytestmark = pytest.mark.skipif(not ptcore.has_cuda_kernels(),
                                reason="the library was built without CUDA kernels")


def _usage():
    assert os.path.exists(USAGE), "a CUDA build must leave csrc/generated/ptxas_usage.json"
    with open(USAGE) as f:
        return json.load(f)


def test_every_cuda_source_and_arch_is_reported():
    usage = _usage()
    sources = {os.path.basename(p) for p in os.listdir(os.path.join(ROOT, "csrc", "cuda"))
               if p.endswith(".cu")}
    assert sources <= set(usage), sorted(sources - set(usage))
    archs = {key.rsplit("@", 1)[1] for kernels in usage.values() for key in kernels}
    assert "sm_90" in archs, archs


@pytest.mark.parametrize("source", sorted(MAX_THREADS))
def test_kernels_launch_at_their_block_size_without_spilling(source):
    kernels = _usage().get(source, {})
    assert kernels, f"no kernels reported for {source}"
    for name, u in kernels.items():
        assert u["registers"] * MAX_THREADS[source] <= REGISTERS_PER_SM, (source, name, u)
        assert u["spill_stores"] == 0 and u["spill_loads"] == 0, (source, name, u)
