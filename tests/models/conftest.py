"""The model tests run their forward passes on one thread. On a machine whose cores are all
busy (a shared CI runner, other test processes) torch's threads wait on each other at every
parallel region. Measured on 2 cores shared with other helpers' tests (load 6-7), the two
sweeps (tests/models/test_sweep_*.py, 127 tests) took 292 s and 271 s with torch's default 2
threads and 56 s and 40 s with 1, runs alternated in one window; the 43 models checked for
real, alternated model by model in one process, 41 s against 13 s. At load 1.3-1.5 the
sweeps took 26.7 s on 1 thread and 24.8 s on 2: one thread costs little when cores are free."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
