"""Fixtures of the FeatureCache tests (see cache_fixtures.py)."""
import pytest
import torch

from cache_fixtures import CountingNet, Images


@pytest.fixture
def net():
    torch.manual_seed(0)
    m = CountingNet()
    # Non-trivial BatchNorm statistics, and train mode: the cache must leave both alone.
    m.body[1].running_mean.uniform_(-1, 1)
    m.body[1].running_var.uniform_(0.5, 2)
    return m.train()


@pytest.fixture
def data():
    return Images()

