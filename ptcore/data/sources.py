"""What a command's ``--data`` or a config's ``data.dataset`` names, as datasets: the
in-memory data (digits, glyphs), an image folder or a torchvision dataset by name
(:func:`dataset_from_spec`), and its official splits when it has them (:func:`data_splits`:
a benchmark, a torchvision dataset with a root, an ImageFolder root with train/ and val/ or
test/). The layer above folders, official and benchmarks, which never import it."""
from __future__ import annotations

import os

from ptcore.data import digits, glyphs
from ptcore.data.benchmarks import benchmark_splits
from ptcore.data.folders import image_folder
from ptcore.data.official import (folder_splits, has_official_splits, official_splits,
                                  torchvision_dataset)

__all__ = ["dataset_from_spec", "data_splits", "IN_MEMORY", "IN_MEMORY_IMAGE_SIZE",
           "in_memory_size", "input_size"]

# The datasets `dataset_from_spec` renders in memory, and their size when no image size is
# given (--image-size, data.image_size): small, as they are drawn from 8x8 or 16x16 sources.
# Image files have no such size: without one they are read at the model's preprocessing.
IN_MEMORY = ("digits", "glyphs")
IN_MEMORY_IMAGE_SIZE = 32


def dataset_from_spec(spec: str, *, image_size: int | None = None, root: str | None = None,
                      train: bool = True, augment: bool = False, transform=None):
    """What the CLI's ``--data`` names: "digits", "glyphs" (:class:`GlyphsDataset` at its
    default seed), rendered at ``image_size`` (None: ``IN_MEMORY_IMAGE_SIZE``), an
    ImageFolder directory, or a torchvision dataset name (with ``root``). ``transform``: for
    images read from files (without it, :func:`image_transform` at ``image_size``, or its
    default)."""
    if spec == "digits":
        return digits.digits_dataset(in_memory_size(image_size))
    if spec == "glyphs":
        return glyphs.GlyphsDataset(image_size=in_memory_size(image_size))
    sized = {} if image_size is None else {"image_size": image_size}
    if os.path.isdir(spec):
        return image_folder(spec, augment=augment, transform=transform, **sized)
    if root is not None:
        return torchvision_dataset(spec, root, train=train, augment=augment,
                                   transform=transform, **sized)
    raise ValueError(f"data {spec!r} is neither 'digits', 'glyphs', an existing directory, "
                     "nor a torchvision dataset name given with a root")


def in_memory_size(image_size: int | None) -> int:
    """The size the in-memory datasets are rendered at for an ``image_size`` option."""
    return IN_MEMORY_IMAGE_SIZE if image_size is None else image_size


def input_size(spec: str, image_size: int | None, crop_size: int) -> int:
    """The side of the images a run on ``spec`` feeds its model: the in-memory datasets'
    rendered size, else ``crop_size``, that of the preprocessing files are read with (which
    holds ``image_size`` already, unless an override of the size won)."""
    return in_memory_size(image_size) if spec in IN_MEMORY else crop_size


def data_splits(spec: str, root=None, *, benchmark: str | None = None,
                transforms: dict | None = None, download: bool = False) -> dict | None:
    """The official {"train", "test"(, "val")} splits of what a command's ``--data`` or a
    config's ``data`` names: a benchmark by name (its files under ``root``), a torchvision
    dataset name with a ``root``, an ImageFolder root with ``train/`` and ``val/`` or
    ``test/``; None when the data has no splits of its own (the caller carves them out of
    one dataset, as for the embedded digits). ``transforms`` as for :func:`official_splits`.
    The one data recipe (ptcore.config.recipe) reads it for every command."""
    if benchmark is not None:
        if root is None:
            raise ValueError(f"benchmark {benchmark} needs a root (where its files are)")
        return benchmark_splits(benchmark, root, transforms=transforms, download=download)
    if not has_official_splits(spec, root):
        return None
    if root is None:
        return folder_splits(spec, transforms=transforms)
    return official_splits(spec, root, transforms=transforms, download=download)
