"""A small but complete results document, as a demo run writes it."""
import copy

import pytest

_RESULTS = {
    "format": "ptcore.results", "version": 1, "seed": 0, "wall_seconds": 12.5,
    "environment": {"ptcore": "0.1.0", "torch": "2.x", "python": "3.11", "native_loaded": True},
    "command": "ptcore demo --out x",
    "context": {"distill": {"teacher_accuracy": 0.975, "labelled": 25, "seconds": 3.25}},
    "finetune": {
        "scratch": {"accuracy": 0.80, "train_seconds": 4.0, "epoch_seconds": 0.2, "epochs": 2,
                    "history": [{"epoch": 0, "seconds": 0.2, "val_accuracy": 0.5},
                                {"epoch": 1, "seconds": 0.2, "val_accuracy": 0.8}]},
        "linear_probe": {"accuracy": 0.85, "train_seconds": 0.5, "epoch_seconds": 0.01,
                         "uncached_epoch_seconds": 0.4, "epochs": 2,
                         "history": [{"epoch": 0, "seconds": 0.01, "val_accuracy": 0.7}]},
    },
    "incremental": {
        m: {"average_incremental_accuracy": a, "final_accuracy": f, "forgetting": g,
            "train_seconds": 3.0, "task_names": ["0,1", "2,3"],
            "accuracy_matrix": [[0.99, None], [r, 0.97]]}
        for m, a, f, g, r in (("naive", 0.74, 0.49, 0.98, 0.01), ("replay", 0.95, 0.93, 0.1, 0.89))
    },
    "distill": {"hard_labels": {"accuracy": 0.6, "train_seconds": 1.0},
                "kd_online": {"accuracy": 0.7, "train_seconds": 2.0}},
}


@pytest.fixture
def results():
    return copy.deepcopy(_RESULTS)
