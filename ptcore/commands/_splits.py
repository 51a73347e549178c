"""The data of a command run: official train/test splits when the data has them (a
benchmark by name, a torchvision dataset with a root, an ImageFolder root with train/ and
val/ or test/), read with the model's weights' preprocessing; else None (the command carves
splits out of one dataset, as for the embedded digits)."""
from __future__ import annotations


def official_data(args, *, data: str, root: str | None, benchmark: str | None = None):
    """{"train", "test"(, "val")} datasets, or None when ``data`` has no splits of its own."""
    from ptcore import data as D
    from ptcore.models.preprocess import eval_transform, preprocessing

    if benchmark is None and not D.has_official_splits(data, root):
        return None
    size = getattr(args, "image_size", None)
    prep = preprocessing(args.model, getattr(args, "weights", None),
                         **({"image_size": size} if size else {}))
    transforms = {"test": eval_transform(prep)}
    download = getattr(args, "download", False)
    if benchmark is not None:
        if root is None:
            raise ValueError(f"--benchmark {benchmark} needs --root (where its files are)")
        return D.benchmark_splits(benchmark, root, transforms=transforms, download=download)
    if root is None:
        return D.folder_splits(data, transforms=transforms)
    return D.official_splits(data, root, transforms=transforms, download=download)
