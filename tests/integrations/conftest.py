"""One thread for the tiny models of these tests: at a hidden size of 32 two threads only
add synchronisation (a training step takes several times longer), and every result is the
same either way (the CPU kernels are deterministic)."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
