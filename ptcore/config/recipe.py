"""The one data recipe: a `data` section (a stage config's, or the one a strategy
subcommand's options make, :func:`ptcore.config.cli.data_options`) turned into the splits a
strategy trains on. `ptcore finetune`, `incremental`, `distill`, `ptcore run` and the demo
all read their data here (docs/config.md, `data`)."""
from __future__ import annotations

__all__ = ["load_data"]


def load_data(d: dict, *, stage: str, seed: int, model: str, weights) -> dict:
    """{"train", "val" (None when empty), "test", "unlabelled" (the non-shots, with
    ``shots``), "classes" (how many), "dataset_size", "image_size" (what the model is fed),
    "preprocessing"} of the complete `data` section ``d``: the data's official splits where
    it has them (a benchmark, a torchvision dataset with a root, an ImageFolder root with
    train/ and val/ or test/), else train/val/test fractions of one dataset; images read
    with ``model``'s ``weights``' preprocessing (with ``d``'s overrides); the training
    samples alone augmented, after all splitting. For the incremental stage, "train" and
    "test" are lists of class tasks, and class ids are kept (the head grows by class)."""
    from ptcore import data as D
    from ptcore.data.augment import augment_split
    from ptcore.models.preprocess import eval_transform, model_preprocessing

    relabel = stage != "incremental"
    preprocessing = model_preprocessing(model, weights, image_size=d["image_size"],
                                        overrides=d["preprocess"])
    transform = eval_transform(preprocessing)
    splits = D.data_splits(d["dataset"], d["root"], benchmark=d["benchmark"],
                           transforms={"test": transform}, download=d["download"])
    if splits is None:
        dataset = D.dataset_from_spec(d["dataset"], image_size=d["image_size"], root=d["root"],
                                      transform=transform)
        size = len(dataset)
        if d["classes"] is not None:
            dataset = D.class_subset(dataset, d["classes"], relabel=relabel)
        classes = len(D.targets_of(dataset).unique())
        train, val, test = D.train_val_test_split(dataset, d["val"], d["test"], seed=seed)
    else:
        size = sum(len(s) for s in splits.values())
        if d["classes"] is not None:
            splits = {k: D.class_subset(v, d["classes"], relabel=relabel)
                      for k, v in splits.items()}
        classes = len(D.targets_of(splits["train"]).unique())
        train, val, test = splits["train"], splits.get("val"), splits["test"]
        if val is None and stage != "incremental":  # incremental trains on all of train
            train, val, _ = D.train_val_test_split(train, d["val"], 0.0, seed=seed)
    unlabelled = None
    if d["shots"] is not None:
        train, unlabelled = D.k_shot(train, d["shots"], seed=seed)
    if d["shots"] is not None and d["test"] == 0 and stage in ("pretrain", "finetune") \
            and splits is None:
        test = unlabelled  # evaluate on every sample that is neither a shot nor validation
    tensor_size = D.in_memory_size(d["image_size"])  # what the in-memory data is rendered at
    train = augment_split(train, preprocessing, d["augment"], tensor_size)
    if stage == "distill" and unlabelled is not None:
        unlabelled = augment_split(unlabelled, preprocessing, d["augment"], tensor_size)
    out = {"train": train, "val": val if val is not None and len(val) else None, "test": test,
           "unlabelled": unlabelled, "classes": classes, "dataset_size": size,
           "image_size": D.input_size(d["dataset"], d["image_size"], preprocessing.crop_size),
           "preprocessing": preprocessing}
    if stage == "incremental":
        tasks = (D.benchmark_tasks(d["benchmark"], d["tasks"]) if d["benchmark"]
                 else d["tasks"])
        out["train"] = D.class_tasks(train, tasks)
        out["test"] = D.class_tasks(test, tasks)
    return out
