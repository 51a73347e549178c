"""The teacher as data. One pass of a teacher over token windows ``[M, L]`` writes, for each
of the L - 1 positions that has a next token, the teacher's K largest next-token
log-probabilities (at T = 1) and their token ids: K float32 values + K ids (float32 too,
exact below 2**24), 8·K bytes per token. The rows live in a ptcore.FeatureCache on disk
(memory-mapped, checksummed, fingerprinted by the teacher's weights and the windows, and
resumable: a killed pass continues from its last committed rows). Students then read them
with no teacher in memory, through ``tail_bucket=True``: the mass outside the K is kept.

A store folder holds ``store.json`` (K, the vocabulary size, the teacher's and the windows'
digests), ``vocab.json`` (the teacher's tokenizer, to refuse a student with another) and
``topk/`` (the FeatureCache)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ptcore.cache import FeatureCache
from ptcore.cache.build import inference
from ptcore.cache.fingerprint import module_digest, tensor_digest
from ptcore.cache.persist import read_json
from ptcore.errors import UserError
from ptcore.integrations.hf.model import CausalLM, check_same_vocabulary, teacher_rows
from ptcore.runtime.files import atomic_write_json

__all__ = ["TeacherStore", "TeacherStoreError", "build_teacher_store", "open_teacher_store",
           "topk_log_probs"]

STORE, VOCAB, ROWS = "store.json", "vocab.json", "topk"
FORMAT = 1
_MAX_VOCAB = 2 ** 24  # token ids ride in float32 next to the values
_CHUNK_ELEMS = 1 << 22  # logits per chunk of rows in the teacher pass (16 MiB in float32)


class TeacherStoreError(UserError, ValueError):
    """A teacher store that is missing, incomplete, or made for other data."""


def topk_log_probs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   k: int) -> torch.Tensor:
    """``[..., 2K]`` float32: the K largest of ``log_softmax(hidden @ weight.T + bias)`` per
    row, then their ids, computed a chunk of rows at a time (never ``[rows, V]``)."""
    lead, x = hidden.shape[:-1], hidden.reshape(-1, hidden.shape[-1])
    rows = max(1, _CHUNK_ELEMS // weight.shape[0])
    out = x.new_empty((x.shape[0], 2 * k), dtype=torch.float32)
    for a in range(0, x.shape[0], rows):
        logits = torch.nn.functional.linear(x[a:a + rows], weight, bias).float()
        values, ids = logits.log_softmax(-1).topk(k, dim=-1)
        out[a:a + rows, :k], out[a:a + rows, k:] = values, ids.float()
    return out.reshape(*lead, 2 * k)


class _TopK(torch.nn.Module):
    """The FeatureCache's module: windows ``[B, L]`` → ``[B, L - 1, 2K]``. The teacher is
    held outside the module's parameters; its digest (a buffer) stands for it in the cache's
    fingerprint, so a store opens without the teacher."""

    def __init__(self, teacher: CausalLM | None, k: int, vocab: int, digest: str, device):
        super().__init__()
        self.k, self.vocab = k, vocab
        self.register_buffer("teacher_digest", torch.tensor(list(bytes.fromhex(digest)),
                                                            dtype=torch.uint8, device=device))
        self.__dict__["teacher"] = teacher  # not a submodule

    def extra_repr(self) -> str:  # part of the fingerprint
        return f"k={self.k}, vocab={self.vocab}"

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            raise TeacherStoreError("the teacher store needs rows it does not hold; run the "
                                    "teacher pass (with the teacher) to complete it")
        with inference(self.teacher.model):
            hidden = self.teacher.hidden(windows)[:, :-1]
        return topk_log_probs(hidden, *teacher_rows(self.teacher, self.vocab), self.k)


@dataclass
class TeacherStore:
    """The top-k rows of a teacher over token windows, served by window index."""
    path: Path
    k: int
    vocab: int
    cache: FeatureCache

    @property
    def bytes_per_token(self) -> int:
        return 8 * self.k

    @property
    def fingerprint(self) -> str:
        return self.cache.fingerprint

    def __len__(self) -> int:
        return len(self.cache)

    def get(self, index, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probabilities ``[B, L - 1, K]`` float32, token ids ``[B, L - 1, K]`` int64) of
        windows ``index``, for ``LMDistillLoss(teacher_values=, teacher_indices=)`` with
        ``tail_bucket=True``."""
        rows = self.cache.get(index, device=device)
        return rows[..., :self.k], rows[..., self.k:].long()


def _cache(path: Path, module: _TopK, windows: torch.Tensor, batch_size: int,
           progress: bool) -> FeatureCache:
    return FeatureCache(module, torch.utils.data.TensorDataset(windows), dtype=torch.float32,
                        storage="disk", path=path / ROWS, batch_size=batch_size, device="cpu",
                        progress=progress).build()


def _check_windows(windows) -> None:
    if not isinstance(windows, torch.Tensor) or windows.dtype != torch.int64 \
            or windows.dim() != 2 or windows.shape[1] < 2 or windows.shape[0] < 1:
        raise ValueError("windows must be an int64 tensor [M >= 1, L >= 2] of token ids, got "
                         f"{getattr(windows, 'dtype', type(windows).__name__)} "
                         f"{tuple(getattr(windows, 'shape', ()))}")


def build_teacher_store(path, teacher, windows: torch.Tensor, *, k: int, tokenizer,
                        vocab_size: int | None = None, batch_size: int = 8,
                        progress: bool = False) -> TeacherStore:
    """Run ``teacher`` (a transformers causal LM, on its own device) over ``windows``
    ``[M, L]`` once and store its top-``k`` under ``path``; a complete store for the same
    teacher and windows is reused without running it, an interrupted one is resumed.
    ``vocab_size``: the students' lm_head rows (default the teacher's); a teacher padded
    larger keeps its first ``vocab_size`` rows (see ``teacher_rows``)."""
    _check_windows(windows)
    lm = CausalLM(teacher)
    vocab = lm.vocab_size if vocab_size is None else vocab_size
    teacher_rows(lm, vocab)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab \
            or vocab > _MAX_VOCAB:
        raise ValueError(f"k must be an int in [1, {vocab}] (the vocabulary, itself at most "
                         f"{_MAX_VOCAB}), got {k!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    digest = module_digest(teacher)
    atomic_write_json(path / VOCAB, tokenizer.get_vocab())
    atomic_write_json(path / STORE, {"format": FORMAT, "k": k, "vocab": vocab,
                                     "teacher": digest, "windows": tensor_digest(windows),
                                     "shape": list(windows.shape)})
    module = _TopK(lm, k, vocab, digest, lm.weight.device)
    cache = _cache(path, module, windows, batch_size, progress)
    module.__dict__["teacher"] = None  # served from disk now: the store keeps no teacher alive
    return TeacherStore(path, k, vocab, cache)


def open_teacher_store(path, windows: torch.Tensor, *, tokenizer=None,
                       vocab_size: int | None = None) -> TeacherStore:
    """The complete store under ``path`` for these ``windows``, without a teacher: refused
    (naming why) when missing, interrupted, made over other windows, for another vocabulary
    size, or with a tokenizer other than ``tokenizer``'s."""
    _check_windows(windows)
    path = Path(path)
    info = read_json(os.fspath(path / STORE))
    if info is None or info.get("format") != FORMAT:
        raise TeacherStoreError(f"no teacher store at {str(path)!r} (no readable {STORE}); "
                                "build it with the teacher first")
    if info["windows"] != tensor_digest(windows):
        raise TeacherStoreError(
            f"the teacher store at {str(path)!r} was computed over other token windows "
            f"({info['shape'][0]} × {info['shape'][1]}, here {windows.shape[0]} × "
            f"{windows.shape[1]}: other data, tokenizer or length); rebuild it with the teacher")
    if vocab_size is not None and vocab_size != info["vocab"]:
        raise TeacherStoreError(f"the teacher store at {str(path)!r} covers {info['vocab']} "
                                f"tokens, the student's lm_head {vocab_size}")
    if tokenizer is not None:
        check_same_vocabulary(read_json(os.fspath(path / VOCAB)) or {}, tokenizer)
    if read_json(os.fspath(path / ROWS / "meta.json")) is None:
        raise TeacherStoreError(f"the teacher store at {str(path)!r} is incomplete (an "
                                "interrupted teacher pass): run the pass again with the "
                                "teacher, it resumes where it stopped")
    module = _TopK(None, info["k"], info["vocab"], info["teacher"], "cpu")
    return TeacherStore(path, info["k"], info["vocab"], _cache(path, module, windows, 64, False))
