"""The emulated CUDA kernels' extension, built once per session (tests/emulated/emulation.py);
skipped with the reason where no C++ compiler or ninja exists."""
import pytest

from tests.emulated import emulation


@pytest.fixture(scope="session")
def emu():
    why = emulation.missing_tools()
    if why:
        pytest.skip(f"the CUDA emulation cannot be built here: {why}")
    return emulation.load()
