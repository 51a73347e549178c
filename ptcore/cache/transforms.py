"""Finding a dataset's transforms and telling the random (augmenting) ones apart."""
from __future__ import annotations

import torch

__all__ = ["dataset_transforms", "random_transforms"]

# torchvision transforms whose output differs from call to call, besides the Random* family.
_RANDOM_NAMES = {"ColorJitter", "GaussianBlur", "GaussianNoise", "AutoAugment", "RandAugment",
                 "TrivialAugmentWide", "AugMix", "ElasticTransform", "ScaleJitter", "MixUp",
                 "CutMix"}


def dataset_transforms(dataset) -> list:
    """The transforms a dataset (or the dataset wrapped by Subset/ConcatDataset) applies."""
    found, todo, seen = [], [dataset], set()
    while todo:
        d = todo.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        for attr in ("transform", "transforms", "target_transform"):
            t = getattr(d, attr, None)
            if t is not None and not isinstance(t, (list, tuple)) and callable(t):
                found.append(t)
        if isinstance(d, torch.utils.data.Subset):
            todo.append(d.dataset)
        elif isinstance(d, torch.utils.data.ConcatDataset):
            todo.extend(d.datasets)
    return found


def _leaves(t):
    """A transform and everything it composes (Compose, RandomApply, Sequential, ...)."""
    yield t
    inner = getattr(t, "transforms", None)
    if isinstance(t, torch.nn.Module):
        inner = list(t.children()) or inner
    if isinstance(inner, (list, tuple, torch.nn.ModuleList)):
        for child in inner:
            yield from _leaves(child)
    elif callable(inner) and inner is not t:  # torchvision's StandardTransform and friends
        yield from _leaves(inner)
    for attr in ("transform", "target_transform"):
        child = getattr(t, attr, None)
        if callable(child) and child is not t and not isinstance(child, type):
            yield from _leaves(child)


def _is_random(t) -> bool:
    cls = type(t)
    if not cls.__module__.startswith("torchvision.transforms"):
        return False
    return cls.__name__.startswith("Random") or cls.__name__ in _RANDOM_NAMES


def random_transforms(dataset) -> list[str]:
    """Names of the torchvision random transforms the dataset applies (empty if none).

    Only torchvision's own augmentations are recognised; a hand-written random transform is
    not, and would silently freeze one augmented sample per item into the cache."""
    names = []
    for top in dataset_transforms(dataset):
        for t in _leaves(top):
            if _is_random(t) and type(t).__name__ not in names:
                names.append(type(t).__name__)
    return names
