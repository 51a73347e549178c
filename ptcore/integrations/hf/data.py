"""Text for `ptcore distill-lm`: text files, folders of them, a ``datasets`` dataset saved
with ``save_to_disk``, or (with network) a dataset name on the Hub; tokenized, joined with
the end-of-sequence token and cut into equal windows, as the ``transformers`` language
modelling examples do (no padding: every position but the last has a next token)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ptcore.errors import UserError

__all__ = ["read_texts", "token_windows", "held_out_split"]


class DataError(UserError, ValueError):
    """Text that cannot be read or is too short for the windows asked for."""


def _from_datasets(source: str, column: str) -> list[str]:
    import datasets

    if os.path.isdir(source):
        ds = datasets.load_from_disk(source)
    else:  # a name on the Hub, which `datasets` resolves (needs the network)
        ds = datasets.load_dataset(source, split="train")
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"{source}: a dataset dict without a 'train' split "
                            f"({', '.join(ds)})")
        ds = ds["train"]
    if column not in ds.column_names:
        raise DataError(f"{source}: no column {column!r} (it has {', '.join(ds.column_names)}"
                        "); pass --text-column")
    return [t for t in ds[column] if t]


def read_texts(sources, column: str = "text") -> list[str]:
    """The documents of ``sources``: each a text file, a folder of ``*.txt`` files, a folder
    written by ``datasets``' ``save_to_disk``, or a dataset name on the Hub."""
    texts = []
    for source in sources:
        path = Path(source)
        if path.is_file():
            texts.append(path.read_text(encoding="utf-8"))
        elif path.is_dir() and not any((path / n).exists() for n in
                                       ("dataset_info.json", "state.json", "dataset_dict.json")):
            files = sorted(path.rglob("*.txt"))
            if not files:
                raise DataError(f"{source}: a folder with no *.txt files and no saved dataset")
            texts += [f.read_text(encoding="utf-8") for f in files]
        else:
            texts += _from_datasets(os.fspath(source), column)
    return texts


def token_windows(texts: list[str], tokenizer, length: int) -> torch.Tensor:
    """``[M, length]`` int64: the documents' tokens, each followed by the tokenizer's
    end-of-sequence token (where it has one), cut into consecutive windows (the remainder
    is dropped)."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2, got {length!r}")
    eos = tokenizer.eos_token_id
    ids = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        if eos is not None:
            ids.append(eos)
    m = len(ids) // length
    if m < 2:
        raise DataError(f"the text holds {len(ids)} tokens: fewer than two windows of "
                        f"{length}; give more text or a smaller --length")
    return torch.tensor(ids[:m * length], dtype=torch.long).reshape(m, length)


def held_out_split(windows: torch.Tensor, fraction: float) -> tuple[torch.Tensor,
                                                                    torch.Tensor]:
    """(train, held out): the last ``fraction`` of the windows (at least one when the
    fraction is positive) are held out. The split depends on the data alone, not the seed,
    so that a teacher store over the training windows serves every run on that data."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    n = windows.shape[0]
    held = 0 if fraction == 0 else min(n - 1, max(1, round(n * fraction)))
    return windows[:n - held], windows[n - held:]
