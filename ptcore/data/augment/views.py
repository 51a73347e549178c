"""The training split's own view of a dataset: the same samples, read through a random
(augmenting) transform, while the validation and test splits keep the evaluation one."""
from __future__ import annotations

import copy
from dataclasses import replace

from torch.utils.data import Subset

from ptcore.data.augment.recipes import augment_ops, train_transform
from ptcore.data.digits import TensorImageDataset

__all__ = ["augmented", "augment_split"]


def augmented(dataset, *, images, tensors):
    """A shallow copy of ``dataset`` (through its Subsets, whose indices and labels stay) that
    reads its samples through a training transform, flagged random (``deterministic`` is
    False, so no cache is built from it). ``images``: the transform of datasets that read
    image files (PIL image -> normalised tensor, e.g. :func:`train_transform`); ``tensors``:
    that of in-memory :class:`TensorImageDataset` images (``[C, H, W]`` in [0, 1] -> the
    same, before the dataset's normalisation, e.g. :func:`augment_ops`). The original keeps
    its transform: splits carved from it are not affected."""
    view = copy.copy(dataset)
    if isinstance(dataset, Subset):
        view.dataset = augmented(dataset.dataset, images=images, tensors=tensors)
    elif isinstance(dataset, TensorImageDataset):
        view.transform = tensors
    elif hasattr(dataset, "transform"):  # ImageFolder, torchvision datasets
        from torchvision.datasets.vision import StandardTransform

        view.transform = images
        if isinstance(getattr(dataset, "transforms", None), StandardTransform):
            view.transforms = StandardTransform(images, dataset.target_transform)
    else:
        raise TypeError(f"cannot augment a {type(dataset).__name__}: it has no transform "
                        "(augmentation reads image folders, torchvision datasets and "
                        "in-memory image tensors)")
    view.deterministic = False
    return view


def augment_split(dataset, p, augment: str | None, tensor_size: int):
    """``dataset`` (a training split) read through ``augment``'s transform at ``p`` (a
    :class:`ptcore.models.Preprocessing`): image files at ``p`` (:func:`train_transform`),
    in-memory image tensors cropped at ``tensor_size``, the size they were rendered at
    (:func:`augment_ops`); with "none" or None, ``dataset`` itself."""
    if augment in (None, "none"):
        return dataset
    return augmented(dataset, images=train_transform(p, augment),
                     tensors=augment_ops(replace(p, crop_size=tensor_size), augment,
                                         tensors=True))
