"""The loader builder: worker counts, workers that persist across epochs, and the same
batches (so the same training) with or without workers."""
import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ptcore.engine import evaluate, fit, make_loader, resolve_num_workers
from tests.engine.tiny import tiny_digits, tiny_net


class _WithPid(Dataset):
    """Each item with the id of the process that loaded it."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        return x, y, os.getpid()


def test_worker_counts():
    assert resolve_num_workers(0) == 0 and resolve_num_workers(3) == 3
    assert resolve_num_workers("auto") == min(8, len(os.sched_getaffinity(0)))
    for bad in (-1, 1.5, True, "many", None):
        with pytest.raises(ValueError, match="num_workers"):
            resolve_num_workers(bad)
    loader = make_loader(tiny_digits(8), 4, num_workers=1, device="cuda")
    assert loader.pin_memory and loader.persistent_workers
    assert not make_loader(tiny_digits(8), 4, device="cpu").pin_memory


def test_workers_persist_across_epochs_and_train_the_same(tmp_path):
    data = _WithPid(tiny_digits(64))
    pids: list[set] = []  # per batch: 4 batches an epoch

    def step(model, batch):
        x, y, pid = batch
        pids.append(set(pid.tolist()))
        return F.cross_entropy(model(x), y)

    models = []
    for workers in (0, 2):
        pids.clear()
        model = tiny_net()
        fit(model, data, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2,
            batch_size=16, step_fn=step, num_workers=workers, progress=False, seed=3)
        models.append(model)
    epoch0, epoch1 = set().union(*pids[:4]), set().union(*pids[4:])
    assert len(epoch0) == 2 and epoch0 == epoch1  # the same two workers in both epochs
    assert os.getpid() not in epoch0
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    val = tiny_digits(40)
    assert evaluate(models[0], val, num_workers=2) == evaluate(models[0], val)


class _Noisy(Dataset):
    """A random transform: each read draws from torch's and Python's generators."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        import random

        return torch.rand(3) + random.random() + i, i


def test_random_transforms_read_the_same_whatever_the_workers():
    """Evaluation, caches, herding and Fisher read through make_loader: before each batch
    had a seed of its own, workers drew from seeds of their own and the main process from
    the training's generator, so an augmented pass (herding over an augmented training
    split) differed between --num-workers 0 and 2."""
    passes = [[x for x, _ in make_loader(_Noisy(), 4, num_workers=w)] for w in (0, 2, 0)]
    assert all(torch.equal(a, b) for p in passes[1:] for a, b in zip(passes[0], p))
    torch.manual_seed(5)
    before = torch.get_rng_state()
    list(make_loader(_Noisy(), 4))  # reading draws nothing from the process's generator
    assert torch.equal(before, torch.get_rng_state())
    assert not torch.equal(passes[0][0], passes[0][1][:4])  # batches differ from each other
