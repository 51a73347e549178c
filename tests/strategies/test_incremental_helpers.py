"""Shared pieces of the Incremental tests (no tests here): the digits scenario, a small
torchvision model that trains in seconds on a CPU, and runs of each method, cached per
session because every learning test reads several of them."""
import contextlib
import functools

import torch
import torch.nn as nn
from torchvision.models import MobileNetV3
from torchvision.models.mobilenetv3 import InvertedResidualConfig

from ptcore import engine
from ptcore.data import class_tasks, digits_dataset, k_shot, train_val_test_split
from ptcore.strategies import Incremental

SEED = 0
SHOTS = 30  # training samples per class: new classes arrive with little labelled data


def tiny_model(num_classes: int = 2, seed: int = SEED) -> nn.Module:
    """A three-block MobileNetV3 (~90k parameters) for 16×16 inputs: a torchvision model,
    so ptcore.models can split it and grow its head, small enough for CPU tests. BatchNorm
    momentum is PyTorch's default (torchvision's 0.01 barely moves in a few steps)."""
    torch.manual_seed(seed)
    cfg = [InvertedResidualConfig(16, 3, 32, 16, False, "RE", 2, 1, 1.0),
           InvertedResidualConfig(16, 3, 48, 32, False, "RE", 2, 1, 1.0),
           InvertedResidualConfig(32, 3, 96, 64, False, "RE", 2, 1, 1.0)]
    return MobileNetV3(cfg, last_channel=128, num_classes=num_classes,
                       norm_layer=functools.partial(nn.BatchNorm2d, eps=1e-3))


@contextlib.contextmanager
def one_thread():
    """Run on one thread: reductions over more threads round differently, and a few hundred
    steps later that is a few points of accuracy; one thread makes the numbers the same
    whatever the machine or the tests before (and these models are too small to gain)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def scenario(seed: int = SEED, shots: int = SHOTS):
    """(train tasks, test tasks): digits at 16×16 in 5 tasks of 2 classes, ``shots``
    training samples per class, a quarter of the images held out for testing."""
    train, _, test = train_val_test_split(digits_dataset(16), 0.0, 0.25, seed=seed)
    train_tasks = [k_shot(t, shots, seed=seed)[0] for t in class_tasks(train, 5)]
    return train_tasks, class_tasks(test, 5)


@functools.lru_cache(maxsize=None)
def pretrained_state(seed: int = SEED) -> dict:
    """A tiny model trained on all training images of task 1 (digits 0 and 1)."""
    train, _, _ = train_val_test_split(digits_dataset(16), 0.0, 0.25, seed=seed)
    model = tiny_model(2, seed)
    with one_thread(), torch.enable_grad():  # the first caller may be under no_grad
        engine.fit(model, class_tasks(train, 5)[0], torch.optim.AdamW(model.parameters(), 3e-3),
                   epochs=5, batch_size=32, seed=seed, progress=False)
    return model.state_dict()


def pretrained(seed: int = SEED) -> nn.Module:
    model = tiny_model(2, seed)
    model.load_state_dict(pretrained_state(seed))
    return model


def make(method: str, protocol: str = "class", seed: int = SEED, **kw) -> Incremental:
    kw = {"classes": [0, 1], "memory": 100, "epochs": 4, "batch_size": 16, "lr": 3e-3,
          "seed": seed, "progress": False, **kw}
    return Incremental(pretrained(seed), method=method, protocol=protocol, **kw)


@functools.lru_cache(maxsize=None)
def run(method: str, protocol: str = "class", seed: int = SEED, **kw) -> dict:
    """Results of ``method`` over the 5 digit tasks, from the model pretrained on task 1.
    The global generator (which initialises the rows a head grows) is seeded first and the
    run uses one thread, so it gives the same numbers whatever ran before it: those of
    benchmarks/methods_incremental.py, which prints these runs for any seed."""
    with one_thread():
        inc = make(method, protocol, seed, **kw)
        torch.manual_seed(seed)
        return inc.fit(*scenario(seed))


def ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    """One process of the 2-process gloo test: 3 tasks with replay, LwF and EWC from a
    fresh model, then what must agree across processes, saved for the test to compare."""
    import os

    import torch.distributed as dist
    import torch.nn.functional as F

    from ptcore.models import get_head
    from ptcore.strategies.incremental.ewc import EWC

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    train, test = scenario()
    inc = Incremental(tiny_model(2), method="lwf+replay+ewc", memory=12, epochs=1,
                      batch_size=8, lr=3e-3, seed=SEED, progress=False)
    res = inc.fit(list(train[:3]), list(test[:3]))
    fresh = EWC(1.0)  # the Fisher of the last task's data under DDP: sharded, then reduced
    fresh.update(inc.model, inc.plan.remap(train[2]), F.cross_entropy, device="cpu",
                 progress=False)
    # The later methods' state: held-out slice, (α, β), stored logits; RanPAC's G and Q.
    # Mixed batches: each rank draws its own exemplars for its batches.
    bic = Incremental(tiny_model(2), method="bic+der+replay", memory=12, epochs=1,
                      batch_size=10, lr=3e-3, seed=SEED, progress=False,  # no 1-sample batch
                      replay_schedule="mixed")
    bic_R = bic.fit(list(train[:3]), list(test[:3]))["accuracy_matrix"]
    ranpac = Incremental(tiny_model(2), method="ranpac", classes=[0, 1], ranpac_dim=64,
                         progress=False)
    ranpac.fit(list(train[:3]), list(test[:3]))
    torch.save({"memory": inc.memory.state_dict(), "fisher": inc.methods["ewc"].ewc.fisher,
                "fresh_fisher": fresh.fisher, "model": inc.model.state_dict(),
                "R": res["accuracy_matrix"], "head": get_head(inc.model).out_features,
                "world": dist.get_world_size(), "bic_memory": bic.memory.state_dict(),
                "bic_layers": bic.methods["bic"].bias.layers, "bic_R": bic_R,
                "der": {r: b for r, (_, b) in bic.methods["der"].logits.stored.items()},
                "ranpac_G": ranpac.methods["ranpac"].ranpac.G,
                "ranpac_W": ranpac.methods["ranpac"].ranpac.W},
               os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def mean_over_seeds(method: str, key: str, protocol: str = "task", **kw) -> float:
    """``key`` of ``method``'s results averaged over seeds 0, 1, 2: one seed of this protocol
    moves forgetting by several points (and so does the CPU's instruction set: AVX2 and
    AVX-512 round differently), so the learning claims are made on the mean."""
    return sum(run(method, protocol, seed=s, **kw)[key] for s in (0, 1, 2)) / 3


def interrupt_at(monkeypatch, cls, hook: str, task: int):
    """Make method ``cls``'s ``hook`` (one taking ``(run, t, train)``) raise
    KeyboardInterrupt when called for ``task``, as a crash there would; returns the real hook,
    to put back before resuming."""
    real = getattr(cls, hook)

    def interrupted(self, run, t, train):
        if t == task:
            raise KeyboardInterrupt
        real(self, run, t, train)

    monkeypatch.setattr(cls, hook, interrupted)
    return real


def cli_config(path, out, strategy: str, batch_size: int) -> str:
    """A TOML config of the CLI tests: mobilenet_v3_small on digits 0-3 at 16×16 in two tasks
    of 4 shots a class, one epoch, with the ``[strategy]`` lines ``strategy``; written to
    ``path``, whose str is returned."""
    path.write_text(f'stage = "incremental"\nout = "{out}"\n'
                    '[model]\nname = "mobilenet_v3_small"\n'
                    "[data]\nimage_size = 16\nclasses = [0, 1, 2, 3]\nshots = 4\n"
                    "tasks = [[0, 1], [2, 3]]\ntest = 0.05\n[engine]\nepochs = 1\n"
                    f"batch_size = {batch_size}\n[strategy]\n{strategy}\n")
    return str(path)
