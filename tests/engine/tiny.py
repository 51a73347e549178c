"""A tiny convnet and digits subset for engine tests (the engine takes any nn.Module)."""
import torch
import torch.nn as nn

from ptcore.data import LabeledSubset, digits_dataset


def tiny_net(dropout: float = 0.0, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(16, 10))


def tiny_digits(n: int | None = None, image_size: int = 12):
    ds = digits_dataset(image_size)
    return ds if n is None else LabeledSubset(ds, range(n))
