"""Seeding every generator at the start of a run, and the deterministic-algorithms switch
(docs/reproducibility.md)."""
import os
import random

import numpy as np
import pytest
import torch

from ptcore.engine import fit
from ptcore.runtime.rng import deterministic_algorithms, seed_everything
from tests.engine.tiny import tiny_digits, tiny_net


def _draws():
    return torch.rand(3).tolist(), random.random(), float(np.random.rand())


def test_seed_everything_seeds_torch_python_and_numpy():
    seed_everything(7)
    first = _draws()
    _draws()
    seed_everything(7)
    assert _draws() == first
    seed_everything(8)
    assert _draws() != first


@pytest.mark.parametrize("bad", [-1, 2 ** 32, 1.5, True, "0", None])
def test_seed_everything_refuses_what_torch_would_not_take(bad):
    with pytest.raises(ValueError, match="seed must be an int"):
        seed_everything(bad)


def test_deterministic_algorithms_are_on_in_the_block_and_restored_after():
    assert not torch.are_deterministic_algorithms_enabled()
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    with deterministic_algorithms():
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", workspace)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == workspace
    with pytest.raises(RuntimeError, match="boom"), deterministic_algorithms():
        raise RuntimeError("boom")
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms(False):
        assert not torch.are_deterministic_algorithms_enabled()


def test_fit_runs_under_deterministic_algorithms_when_asked():
    seen = []

    def step(model, batch):
        seen.append(torch.are_deterministic_algorithms_enabled())
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y)

    for flag in (True, False):
        model = tiny_net()
        fit(model, tiny_digits(16), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
            batch_size=8, step_fn=step, progress=False, deterministic=flag)
    assert seen == [True, True, False, False]
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(ValueError, match="deterministic must be True or False"):
        fit(tiny_net(), tiny_digits(4), None, epochs=1, batch_size=2, deterministic="yes")
