"""Images read from files: ptcore's default transform (without a model's preprocessing),
ImageFolder directories, and whether a dataset's items are deterministic (what lets a frozen
prefix be cached)."""
from __future__ import annotations

import os

from ptcore.data.augment.recipes import recipe_ops
from ptcore.data.digits import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["image_transform", "image_folder", "is_deterministic"]

def _rgb(img):
    return img.convert("RGB")


def image_transform(image_size: int = 224, *, augment: bool = False, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD):
    """PIL image → normalised RGB tensor. ``augment``: the "basic" augmentation, random
    resized crop and flip (then the transform is random and a frozen prefix's outputs cannot
    be cached)."""
    from torchvision import transforms as T

    if augment:
        geometry = [recipe_ops("basic", image_size)]
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
