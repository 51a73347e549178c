"""The teacher forms of ptcore.fused_linear_kd_loss and the row maths it runs in Python.

A teacher source is a function (a, e, dtype) → the teacher of rows [a, e), for the chunk
whose student logits are ``dtype``: ``(logits,)`` (a full teacher's matmul, or a dense
soft-label target's log-probabilities, which are logits up to a constant per row) or
``(values, indices)`` (a top-k teacher). Heads padded beyond the real vocabulary
(``vocab_size``) are handled here: the teacher's extra rows are dropped, the student's get
a teacher logit of -inf (probability 0; 0 for the cosine loss, which compares logits).

The cosine loss and the split of the loss into its soft and hard parts are computed here
from the chunk's logits with ordinary tensor ops (the kernels keep the KL family)."""
from __future__ import annotations

import math

import torch

__all__ = ["teacher_source", "cosine_rows", "cross_entropy_rows", "chunk_logits"]

_EPS = 1e-8  # as F.cosine_similarity: norms below it are clamped


def _pad_classes(t: torch.Tensor, classes: int, fill: float) -> torch.Tensor:
    """``t`` [C, R] widened to [C, classes] with ``fill`` in the new columns."""
    if t.shape[1] == classes:
        return t
    return torch.nn.functional.pad(t, (0, classes - t.shape[1]), value=fill)


def _check_2d_pair(hidden, weight, bias, who, like):
    for name, t in ((f"{who}_hidden", hidden), (f"{who}_weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != like.device:
            raise ValueError(f"{name} must be on {like.device}, got {t.device}")
    if weight.dim() != 2:
        raise ValueError(f"{who}_weight must be [V, H], got shape {tuple(weight.shape)}")
    if hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"{who}_hidden must be [..., {weight.shape[1]}] to match {who}_weight "
                         f"{tuple(weight.shape)}, got {tuple(hidden.shape)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],):
            raise ValueError(f"{who}_bias must be a [{weight.shape[0]}] tensor, got "
                             f"{getattr(bias, 'shape', type(bias).__name__)}")
        if bias.device != like.device:
            raise ValueError(f"{who}_bias must be on {like.device}, got {bias.device}")
    return hidden.detach().reshape(-1, hidden.shape[-1])


def _full(x, hidden, weight, bias, n, V, vocab, fill, fp32_logits):
    th = _check_2d_pair(hidden, weight, bias, "teacher", x)
    if th.shape[0] != n:
        raise ValueError(f"teacher_hidden must have {n} rows (the student's), got {th.shape[0]}")
    tv = weight.shape[0]
    if vocab is None and tv != V:
        raise ValueError(f"teacher_weight has {tv} classes, student_weight {V} (a head padded "
                         "beyond the tokenizer's vocabulary: pass vocab_size)")
    if vocab is not None and tv < vocab:
        raise ValueError(f"teacher_weight has {tv} classes, fewer than vocab_size={vocab}")
    rows = V if vocab is None else vocab
    tw = weight.detach()[:rows]
    tb = None if bias is None else bias.detach()[:rows]
    if fp32_logits and tw.dtype in (torch.float16, torch.bfloat16) and tw.device.type != "cuda":
        tw = tw.float()  # once, not per chunk (see chunk_logits)

    def logits(a, e, dtype):
        t = chunk_logits(th[a:e], tw, tb, fp32_logits)
        return (_pad_classes(t.to(dtype), V, fill),)
    return logits


def _dense(x, probs, log_probs, lead, V, vocab, fill):
    name = "teacher_probs" if probs is not None else "teacher_log_probs"
    target = probs if probs is not None else log_probs
    if not isinstance(target, torch.Tensor) or not target.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got "
                        f"{getattr(target, 'dtype', type(target).__name__)}")
    widths = {V} if vocab is None else {V, vocab}
    if target.dim() < 1 or target.shape[:-1] != lead or target.shape[-1] not in widths:
        want = " or ".join(str(w) for w in sorted(widths))
        raise ValueError(f"{name} must be [{', '.join(map(str, lead))}, {want}] (a row per "
                         f"student row), got {tuple(target.shape)}")
    if target.device != x.device:
        raise ValueError(f"{name} must be on {x.device}, got {target.device}")
    target = target.detach().reshape(-1, target.shape[-1])

    def logits(a, e, dtype):
        t = target[a:e]
        t = t.log() if probs is not None else t
        return (_pad_classes(t.to(dtype), V, fill),)
    return logits


def _topk(values, indices, lead, V, x):
    """[N, K] float32 (float64) values and int64 indices, checked against the rows."""
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        raise TypeError("teacher_values must be a floating-point tensor, got "
                        f"{getattr(values, 'dtype', type(values).__name__)}")
    if not isinstance(indices, torch.Tensor) or indices.dtype != torch.int64:
        raise TypeError("teacher_indices must be an int64 tensor, got "
                        f"{getattr(indices, 'dtype', type(indices).__name__)}")
    if values.shape != indices.shape or values.dim() < 1 or values.shape[:-1] != lead:
        rows = ", ".join(map(str, lead))
        raise ValueError(f"teacher_values and teacher_indices must both be [{rows}, K], got "
                         f"{tuple(values.shape)} and {tuple(indices.shape)}")
    if values.shape[-1] > V:
        raise ValueError(f"top-k teacher has K={values.shape[-1]} classes but the student only "
                         f"V={V}")
    for name, t in (("teacher_values", values), ("teacher_indices", indices)):
        if t.device != x.device:
            raise ValueError(f"{name} must be on {x.device}, got {t.device}")
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    k = values.shape[-1]
    values, indices = values.detach().reshape(-1, k).to(acc), indices.reshape(-1, k)

    def topk(a, e, _dtype):
        return values[a:e], indices[a:e]
    return topk


def teacher_source(x, lead, V, *, hidden, weight, bias, values, indices, probs, log_probs,
                   vocab, divergence, fp32_logits):
    """(source, form) of the one teacher given: form is "full", "dense" or "topk"."""
    forms = {"full": hidden is not None or weight is not None,
             "topk": values is not None or indices is not None,
             "dense": probs is not None or log_probs is not None}
    given = [f for f, on in forms.items() if on]
    if len(given) != 1:
        raise ValueError("give the teacher either as teacher_hidden and teacher_weight, as "
                         "teacher_values and teacher_indices, or as teacher_probs (or "
                         "teacher_log_probs)")
    form = given[0]
    fill = 0.0 if divergence == "cosine" else -math.inf
    if form == "full":
        if hidden is None or weight is None:
            raise ValueError("teacher_hidden and teacher_weight go together")
        return _full(x, hidden, weight, bias, math.prod(lead), V, vocab, fill, fp32_logits), form
    if divergence == "cosine":
        raise ValueError("divergence='cosine' compares logits: give the teacher as "
                         "teacher_hidden and teacher_weight")
    if form == "dense":
        if probs is not None and log_probs is not None:
            raise ValueError("give teacher_probs or teacher_log_probs, not both")
        return _dense(x, probs, log_probs, lead, V, vocab, fill), form
    if values is None or indices is None:
        raise ValueError("teacher_values and teacher_indices go together")
    return _topk(values, indices, lead, V, x), form


def chunk_logits(xc, w, b, fp32: bool) -> torch.Tensor:
    """``xc @ w.T + b``. With ``fp32`` and half-precision operands the products are summed
    and returned in float32 instead of rounded to the operands' dtype: CUDA's matmul with
    ``out_dtype`` (one kernel), elsewhere (no such kernel on a CPU) a float32 matmul of the
    operands' exact float32 images; autocast is off for it, or it would cast them back."""
    half = (torch.float16, torch.bfloat16)
    if not fp32 or (xc.dtype not in half and w.dtype not in half):
        return xc @ w.t() if b is None else torch.addmm(b, xc, w.t())
    with torch.autocast(xc.device.type, enabled=False):
        if xc.device.type == "cuda" and xc.dtype == w.dtype:
            s = torch.mm(xc, w.t(), out_dtype=torch.float32)
        else:
            s = xc.float() @ w.float().t()
        return s if b is None else s.add_(b)


def cosine_rows(s, t, labels, soft_weight: float, ignore_index: int, compute_grad: bool):
    """Per row ``soft_weight · (1 - cos(s, t))`` (0 where the label is ``ignore_index``) and,
    with ``compute_grad``, its gradient for s: ``w (cos/|s|² · s - t/(|s||t|))``, in the
    row maths' dtype (float32, float64 for float64 logits)."""
    acc = torch.float64 if s.dtype == torch.float64 else torch.float32
    sf, tf = s.to(acc), t.to(acc)
    dot = torch.bmm(sf.unsqueeze(1), tf.unsqueeze(2)).reshape(-1)  # no [C, V] temporary
    ns = torch.linalg.vector_norm(sf, dim=-1).clamp_min(_EPS)
    nt = torch.linalg.vector_norm(tf, dim=-1).clamp_min(_EPS)
    cos = dot / (ns * nt)
    weight = torch.full_like(cos, soft_weight)
    if labels is not None:
        weight = weight.masked_fill(labels == ignore_index, 0.0)
    rows = weight * (1 - cos)
    if not compute_grad:
        return rows, None
    g = sf * (weight * cos / (ns * ns)).unsqueeze(1)
    g.addcmul_(tf, (-weight / (ns * nt)).unsqueeze(1))
    return rows, g


def cross_entropy_rows(s, stats, labels, ignore_index: int) -> torch.Tensor:
    """Per row ``logsumexp(s) - s[label]`` (0 where ignored), with the log-sum-exp from the
    kernel's statistics when it kept one (``stats`` [C, 7], column 4), else computed."""
    acc = torch.float64 if s.dtype == torch.float64 else torch.float32
    keep = labels != ignore_index
    picked = s.gather(1, labels.where(keep, 0).unsqueeze(1)).squeeze(1).to(acc)
    lse = stats[:, 4] if stats is not None else torch.logsumexp(s.to(acc), dim=-1)
    return (lse - picked).where(keep, 0.0)
