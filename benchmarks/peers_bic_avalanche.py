"""Avalanche 0.6.0's experience replay and BiC beside ptcore's, on the protocol of
benchmarks/bic_glyph_resnet18.py (issue 25: "BiC on par" with Avalanche's): the same
tensors (``scenario(seed, shots)``: the digits at 16×16, 5 tasks of 2 classes, 30 training
images a class), the same start (the shipped glyph ResNet-18, whose fresh 2-row head, drawn
under the seed as in ptcore's run, becomes the first rows of Avalanche's
IncrementalClassifier: it grows task by task like ptcore's head), memory 100, 4 epochs a
task, batch 16, AdamW lr 3e-3 without weight decay, a fresh optimizer state and a cosine
from lr to 0 over each task's steps (ptcore's Incremental defaults). The metrics are
ptcore's (metrics.summarize) of the accuracy matrix Avalanche's own evaluation gives
(BiC's bias layer applied), so the rows compare. Prints each run, then the Markdown table.

Avalanche is not a ptcore dependency (it pins its own torch stack): install it into a
folder of its own and put that on the path only for this script:

    pip install --no-deps --target /tmp/avl avalanche-lib==0.6.0 gdown pytorchcv gputil \\
        beautifulsoup4 soupsieve torchmetrics lightning-utilities qpsolvers
    PYTHONPATH=$PWD:/tmp/avl python benchmarks/peers_bic_avalanche.py [--seeds 0 1 2]
        [--shots 30] [--methods ...]  (default: ptcore replay, ptcore bic+replay,
        avalanche replay, avalanche bic; also "ptcore replay, mixed", "ptcore bic+lwf+replay")

(avalanche imports wandb at module level for one W&B metric: an empty ``wandb`` package in
that folder is enough.)
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bic_glyph_resnet18 import run as ptcore_run
from methods_incremental import table, timed_runs
from test_incremental_helpers import scenario

from ptcore.demo.backbones import SHIPPED
from ptcore.models import create_model
from ptcore.strategies.incremental.metrics import summarize

try:
    with warnings.catch_warnings():  # "no QP solver found" (GEM's, not used here)
        warnings.simplefilter("ignore")
        import avalanche
        from avalanche.benchmarks import nc_benchmark
        from avalanche.benchmarks.utils import (
            _make_taskaware_tensor_classification_dataset,
        )
        from avalanche.evaluation.metrics import accuracy_metrics
        from avalanche.models import IncrementalClassifier
        from avalanche.training import BiC, Naive
        from avalanche.training.determinism.rng_manager import RNGManager
        from avalanche.training.plugins import (
            EvaluationPlugin,
            ReplayPlugin,
            SupervisedPlugin,
        )
except ImportError as e:
    raise SystemExit(f"benchmarks/peers_bic_avalanche.py needs avalanche-lib 0.6.0, which "
                     f"ptcore does not install ({e}); see this file's docstring") from None



def _multistep_lr(optimizer, milestones, gamma=0.1, verbose=False):
    """BiC's stage-2 schedule without ``verbose=False``, which torch no longer accepts:
    avalanche 0.6.0's BiC passes it (a TypeError with the torch ptcore uses)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma)


avalanche.training.plugins.bic.MultiStepLR = _multistep_lr

MEMORY, EPOCHS, BATCH, LR = 100, 4, 16, 3e-3
# name: (bic_glyph_resnet18's method, Incremental's options). "mixed": Avalanche's replay
# batches (B new + B exemplars); bic+lwf+replay: BiC with its distillation, as Avalanche's.
PTCORE = {"ptcore replay": ("replay", {}), "ptcore bic+replay": ("bic+replay", {}),
          "ptcore replay, mixed": ("replay", {"replay_schedule": "mixed"}),
          "ptcore bic+lwf+replay": ("bic+lwf+replay", {})}
AVALANCHE = ("avalanche replay", "avalanche bic")
METHODS = list(PTCORE) + list(AVALANCHE)
DEFAULT = ["ptcore replay", "ptcore bic+replay", *AVALANCHE]


class FreshCosine(SupervisedPlugin):
    """ptcore's per-task optimizer: each task starts from a fresh AdamW state at ``lr`` and
    follows a cosine to 0 over its optimizer steps, stepped after each step (Avalanche keeps
    the state across experiences by default). Built at the first epoch: BiC's and replay's
    plugins replace the task's dataloader (so its length) in before_training_exp."""

    def __init__(self, lr: float):
        super().__init__()
        self.lr, self.schedule = lr, None

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.clock.train_exp_epochs:
            return
        optimizer = strategy.optimizer
        optimizer.state.clear()
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] = self.lr
        steps = len(strategy.dataloader) * strategy.train_epochs
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    def after_training_iteration(self, strategy, **kwargs):
        self.schedule.step()


def tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(data[i] for i in range(len(data))))
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long)


def benchmark(seed: int, shots: int):
    """Avalanche's class-incremental benchmark of exactly ``scenario(seed, shots)``'s
    tensors, one experience per task, the classes in the tasks' order. Through nc_benchmark:
    BiC's plugin sets ``experience.dataset``, which the experiences of 0.6.0's newer
    benchmark_from_datasets do not allow."""
    train, test = scenario(seed, shots)
    order = [c for t in train for c in sorted(set(tensors(t)[1].tolist()))]

    def whole(tasks):
        x, y = zip(*map(tensors, tasks))
        return _make_taskaware_tensor_classification_dataset(torch.cat(x), torch.cat(y),
                                                             task_labels=0)

    return nc_benchmark(whole(train), whole(test), len(train), task_labels=False,
                        fixed_class_order=order, per_exp_classes=None)


def avalanche_run(name: str, seed: int, shots: int) -> dict:
    """ptcore's metrics of Avalanche's ``name`` run, from the shipped glyph ResNet-18."""
    torch.manual_seed(seed)
    model = create_model("resnet18", weights=str(SHIPPED), num_classes=2, progress=False)
    head = IncrementalClassifier(model.fc.in_features, initial_out_features=2)
    head.classifier.load_state_dict(model.fc.state_dict())  # ptcore's first rows
    model.fc = head
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    common = {"model": model, "optimizer": optimizer,
              "criterion": torch.nn.CrossEntropyLoss(), "train_mb_size": BATCH,
              "train_epochs": EPOCHS, "eval_mb_size": 256, "device": "cpu",
              "evaluator": EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])}
    if name == "avalanche replay":
        strategy = Naive(plugins=[ReplayPlugin(mem_size=MEMORY), FreshCosine(LR)], **common)
    else:  # BiC's defaults but the memory: val_percentage 0.1, T 2, 200 stage-2 epochs, ...
        strategy = BiC(mem_size=MEMORY, plugins=[FreshCosine(LR)], **common)
    bench = benchmark(seed, shots)
    RNGManager.set_random_seeds(seed)
    R = []
    for t, experience in enumerate(bench.train_stream):
        strategy.train(experience)
        metrics = strategy.eval(bench.test_stream[: t + 1])
        acc = {int(k[-3:]): v for k, v in metrics.items()  # .../[Task000/]Exp00k
               if k.startswith("Top1_Acc_Exp/eval_phase/test_stream/")}
        R.append([acc[k] if k <= t else None for k in range(len(bench.test_stream))])
    return summarize(R)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--shots", type=int, default=30)
    p.add_argument("--methods", nargs="+", default=DEFAULT, choices=METHODS)
    args = p.parse_args()
    torch.set_num_threads(1)
    # Avalanche's deprecations and "no loggers specified" (its metrics are read directly)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="No loggers specified")
    print(f"avalanche {avalanche.__version__}, torch {torch.__version__}", flush=True)

    def run_one(name, seed):
        if name in PTCORE:
            return ptcore_run(PTCORE[name][0], seed, args.shots, **PTCORE[name][1])
        return avalanche_run(name, seed, args.shots)

    results = timed_runs(args.seeds, args.methods, run_one,
                         prepare=lambda seed: scenario(seed, args.shots), width=20)
    print("\n" + table(results, args.methods, args.seeds))


if __name__ == "__main__":
    main()
