"""Image datasets from disk: ImageFolder directories and torchvision datasets by name."""
from __future__ import annotations

import os

from ptcore.data.digits import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["image_transform", "image_folder", "torchvision_dataset", "is_deterministic",
           "dataset_from_spec", "IN_MEMORY", "IN_MEMORY_IMAGE_SIZE", "in_memory_size",
           "input_size"]

# The datasets `dataset_from_spec` renders in memory, and their size when no image size is
# given (--image-size, data.image_size): small, as they are drawn from 8x8 or 16x16 sources.
# Image files have no such size: without one they are read at the model's preprocessing.
IN_MEMORY = ("digits", "glyphs")
IN_MEMORY_IMAGE_SIZE = 32


def _rgb(img):
    return img.convert("RGB")


def image_transform(image_size: int = 224, *, augment: bool = False, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD):
    """PIL image → normalised RGB tensor. ``augment``: random resized crop and flip (then
    the transform is random and a frozen prefix's outputs cannot be cached)."""
    from torchvision import transforms as T

    if augment:
        geometry = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        geometry = [T.Resize(max(image_size, round(image_size * 256 / 224))),
                    T.CenterCrop(image_size)]
    return T.Compose([T.Lambda(_rgb), *geometry, T.ToTensor(), T.Normalize(mean, std)])


def image_folder(root: str | os.PathLike, *, image_size: int = 224, augment: bool = False,
                 transform=None):
    """``root/<class>/<image>`` as a torchvision ImageFolder with :func:`image_transform`
    (or ``transform``, e.g. the weights' own, see ptcore.models.preprocess; then ``augment``
    says whether it is random)."""
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder root {str(root)!r} is not a directory")
    ds = ImageFolder(root, transform=transform or image_transform(image_size, augment=augment))
    ds.deterministic = not augment
    return ds


def torchvision_dataset(name: str, root: str | os.PathLike, *, train: bool = True,
                        image_size: int = 224, augment: bool = False, download: bool = False,
                        transform=None, split: str | None = None):
    """torchvision dataset ``name`` (e.g. "CIFAR10", "MNIST") from a local ``root``; grey
    images become RGB. ``split`` (its official "train", "val", "test", ...) wins over
    ``train``. No download unless ``download=True``; without the files, the error names
    those to place (see :mod:`ptcore.data.official`)."""
    from ptcore.data.official import dataset_class, load_split

    cls = dataset_class(name)
    ds = load_split(cls, root, split or ("train" if train else "test"), download=download,
                    transform=transform or image_transform(image_size, augment=augment))
    ds.deterministic = not augment
    return ds


_DETERMINISTIC_TRANSFORMS = {"Compose", "Lambda", "Resize", "CenterCrop", "ToTensor",
                             "PILToTensor", "ToImage", "ToDtype", "ConvertImageDtype",
                             "Normalize", "Grayscale", "ImageClassification", "MaybeToTensor",
                             "ResizeKeepRatio"}


def is_deterministic(dataset) -> bool:
    """Whether ``dataset[i]`` is the same every time (so features of it can be cached).
    Datasets say so with a ``deterministic`` attribute; otherwise their transform must be
    made only of known deterministic transforms (``Lambda`` is trusted: ptcore uses it for
    RGB conversion). Unknown datasets count as random."""
    flag = getattr(dataset, "deterministic", None)
    if flag is not None:
        return bool(flag)
    if hasattr(dataset, "dataset") and hasattr(dataset, "indices"):  # torch Subset
        return is_deterministic(dataset.dataset)
    if not hasattr(dataset, "transform"):
        return False
    stack = [dataset.transform, getattr(dataset, "target_transform", None)]
    while stack:
        t = stack.pop()
        if t is None:
            continue
        if type(t).__name__ not in _DETERMINISTIC_TRANSFORMS:
            return False
        stack.extend(getattr(t, "transforms", []))
    return True


def dataset_from_spec(spec: str, *, image_size: int | None = None, root: str | None = None,
                      train: bool = True, augment: bool = False, transform=None):
    """What the CLI's ``--data`` names: "digits", "glyphs" (:class:`GlyphsDataset` at its
    default seed), rendered at ``image_size`` (None: ``IN_MEMORY_IMAGE_SIZE``), an
    ImageFolder directory, or a torchvision dataset name (with ``root``). ``transform``: for
    images read from files (without it, :func:`image_transform` at ``image_size``, or its
    default)."""
    from ptcore.data.digits import digits_dataset
    from ptcore.data.glyphs import GlyphsDataset

    if spec == "digits":
        return digits_dataset(in_memory_size(image_size))
    if spec == "glyphs":
        return GlyphsDataset(image_size=in_memory_size(image_size))
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
