"""Tiny datasets written in the real on-disk formats torchvision reads (no mocks): CIFAR-100
python pickles, MNIST idx files, an ImageFolder of PNG and JPEG files."""
from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar100(root: Path, per_class_train: int = 2, per_class_test: int = 1, seed: int = 0):
    """``root/cifar-100-python/{train,test,meta}`` as CIFAR-100 ships them: pickled dicts
    with ``data`` uint8 [N, 3072] (RGB planes) and ``fine_labels``; sample i of class c has
    the constant colour c (so a label can be read back from the image). Returns the
    {file name: md5} to put in torchvision's integrity lists."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        labels = np.repeat(np.arange(100), n)
        rng.shuffle(labels)
        data = np.repeat(labels[:, None].astype(np.uint8) * 2, 3072, axis=1)
        entry = {"data": data, "fine_labels": labels.tolist(),
                 "coarse_labels": (labels // 5).tolist(),
                 "filenames": [f"{split}_{i}.png" for i in range(len(labels))]}
        (folder / split).write_bytes(pickle.dumps(entry))
    meta = {"fine_label_names": [f"class_{c:02d}" for c in range(100)],
            "coarse_label_names": [f"super_{c:02d}" for c in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return {name: _md5(folder / name) for name in ("train", "test", "meta")}


def _idx(path: Path, array: np.ndarray) -> None:
    magic = 2049 if array.ndim == 1 else 2051
    header = struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> None:
    """``root/MNIST/raw/*-idx?-ubyte`` (unpacked idx files, big-endian headers)."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


def write_image_folder(root: Path, splits=("train", "val", "test"), classes=("cat", "dog"),
                       per_class: int = 3, size: int = 40, noise: bool = False) -> None:
    """``root/<split>/<class>/<i>.png|jpg``: PNG and JPEG files alternate; each image one
    colour, or with ``noise`` random pixels (so crops and flips change it)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = (Image.fromarray(rng.integers(0, 256, (size, size + 8 * i, 3), np.uint8))
                       if noise else
                       Image.new("RGB", (size + 8 * i, size), (200 * c, 100, 50 + 10 * i)))
                img.save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
