"""Datasets with their official splits: torchvision datasets by name (train/test, or
train/val/test where the dataset has them) and ImageFolder roots holding ``train/``,
``val/``, ``test/``. Published results are measured on these splits, not on a test set
carved out of the training data.

Nothing downloads unless asked (``download=True``); without the files, the error names the
files to place and where.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

from ptcore.data.folders import image_folder, image_transform

__all__ = ["SPLITS", "dataset_class", "expected_files", "load_split", "official_splits",
           "folder_splits", "has_official_splits", "torchvision_dataset"]

# The names torchvision datasets give their splits, in the order ptcore reads them:
# "val" also as "valid" (Country211), "train" also as "trainval" (OxfordIIITPet).
SPLITS = {"train": ("train", "trainval", "train-standard"), "val": ("val", "valid"),
          "test": ("test",)}


def dataset_class(name: str):
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, tvd.VisionDataset)):
        raise ValueError(f"{name!r} is not a torchvision dataset class")
    return cls


def expected_files(cls, root) -> list[str]:
    """The files ``cls`` reads under ``root``, as far as its class attributes say."""
    root = Path(root)
    if hasattr(cls, "train_list"):  # CIFAR-10/100: pickles in base_folder
        names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [str(root / cls.base_folder / n) for n in names]
    if hasattr(cls, "resources"):  # MNIST family: raw idx files, unpacked
        folder = root / cls.__name__ / "raw"
        return [str(folder / os.path.splitext(os.path.basename(url))[0])
                for url, _ in cls.resources]
    if hasattr(cls, "filename"):
        return [str(root / cls.filename)]
    return []


def _not_found(cls, root, e: Exception) -> FileNotFoundError:
    files = expected_files(cls, root)
    where = ("place " + ", ".join(files) if files
             else f"place its files as torchvision's {cls.__name__} documents")
    url = getattr(cls, "url", None)
    return FileNotFoundError(
        f"{cls.__name__} not found under {str(root)!r} ({e}); {where}"
        + (f" (from {url})" if url else "") + ", or pass download=True on a connected machine")


def load_split(cls, root, split: str, *, transform=None, download: bool = False):
    """Split ``split`` ("train", "val", "test" or the dataset's own name) of ``cls``."""
    params = inspect.signature(cls).parameters
    kwargs = {"transform": transform}
    if "download" in params:
        kwargs["download"] = download
    if "train" in params:
        if split not in ("train", "test"):
            raise ValueError(f"{cls.__name__} has a train and a test split, not {split!r}")
        kwargs["train"] = split == "train"
    elif "split" in params:
        kwargs["split"] = split
    elif split != "train":
        raise ValueError(f"{cls.__name__} has no official splits")
    try:
        return cls(root, **kwargs)
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
        raise _not_found(cls, root, e) from e


def official_splits(name: str, root, *, transforms: dict | None = None,
                    download: bool = False) -> dict:
    """{"train": ..., "test": ..., and "val" where it exists} of torchvision dataset
    ``name``. ``transforms``: per split name (missing: the "test" one, else ptcore's
    default 224-pixel evaluation transform)."""

    cls = dataset_class(name)
    transforms = transforms or {"test": image_transform()}
    out = {}
    for split, aliases in SPLITS.items():
        for alias in aliases:
            try:
                out[split] = load_split(cls, root, alias, download=download,
                                        transform=transforms.get(split, transforms.get("test")))
                break
            except ValueError:  # not a split of this dataset: try the next name
                continue
    if "train" not in out or "test" not in out:
        raise ValueError(f"{name} has no official train/test splits; use it with "
                         "train_val_test_split")
    return out


def has_official_splits(spec: str, root=None) -> bool:
    """Whether ``--data spec`` comes with its own splits (a folder with ``train/`` and
    ``test/`` or ``val/``, or a torchvision dataset name given with a root)."""
    if os.path.isdir(spec):
        return os.path.isdir(os.path.join(spec, "train")) and any(
            os.path.isdir(os.path.join(spec, s)) for s in ("val", "test"))
    return root is not None and spec != "digits"


def folder_splits(root, *, transforms: dict | None = None) -> dict:
    """ImageFolder per subfolder ``train/``, ``val/``, ``test/`` of ``root`` (``val`` and
    ``test`` optional, at least one of them); every split must have the same classes."""
    transforms = transforms or {}
    out = {}
    for split in ("train", "val", "test"):
        path = os.path.join(root, split)
        if os.path.isdir(path):
            t = transforms.get(split, transforms.get("test"))
            out[split] = image_folder(path, transform=t, augment=False)
    if "train" not in out or len(out) < 2:
        raise FileNotFoundError(f"{str(root)!r} needs a train/ folder and a val/ or test/ "
                                "folder, each with one subfolder per class")
    classes = {s: ds.classes for s, ds in out.items()}
    if any(c != classes["train"] for c in classes.values()):
        raise ValueError(f"the splits of {str(root)!r} have different classes: {classes}")
    return out


def torchvision_dataset(name: str, root: str | os.PathLike, *, train: bool = True,
                        image_size: int = 224, augment: bool = False, download: bool = False,
                        transform=None, split: str | None = None):
    """torchvision dataset ``name`` (e.g. "CIFAR10", "MNIST") from a local ``root``; grey
    images become RGB. ``split`` (its official "train", "val", "test", ...) wins over
    ``train``. No download unless ``download=True``; without the files, the error names
    those to place (see :mod:`ptcore.data.official`)."""
    cls = dataset_class(name)
    ds = load_split(cls, root, split or ("train" if train else "test"), download=download,
                    transform=transform or image_transform(image_size, augment=augment))
    ds.deterministic = not augment
    return ds
