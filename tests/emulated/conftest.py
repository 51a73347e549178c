"""The emulated CUDA kernels' extension, built once per session (tests/emulated/emulation.py);
skipped with the reason where no C++ compiler or ninja exists."""
import pytest
import torch

from tests.emulated import emulation


@pytest.fixture(scope="session")
def emu():
    why = emulation.missing_tools()
    if why:
        pytest.skip(f"the CUDA emulation cannot be built here: {why}")
    return emulation.load()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The emulation runs on one thread; the references' small ops are faster on one too
    (torch's thread pool waits on a busy second core)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
