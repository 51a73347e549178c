"""ptcore.fused_linear_kd_loss: the KD loss of a linear head (an LM's lm_head) without the
[N, V] logits: rows go in chunks through matmul and the fused row kernels.

Per chunk of C rows: the student's logits by one matmul (and the teacher's, when it is given
as hidden states + weight), the row kernel's loss and logit gradient in one pass, then the
chunk's gradient for the hidden states and its share of the weight's (and bias's) gradient.
All of it happens in the forward, when autograd will want it (the loss is the graph's last
node), so that the backward only scales what is ready. Peak extra memory is O(C·V + V·H)
instead of O(N·V). The row maths stays in the kernels (csrc/kd_math.h)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ptcore import _kd_args, reference
from ptcore._extension import has_native
from ptcore.ops._row_signals import RowSignals, from_stats

__all__ = ["fused_linear_kd_loss", "RowSignals"]

@dataclass(frozen=True)
class _Options:
    temperature: float
    divergence: str
    beta: float
    hard_weight: float
    soft_weight: float
    ignore_index: int
    scale_by_t2: bool
    tail_bucket: bool
    reduction: str
    chunk: int
    dtype: torch.dtype  # of the matmuls (autocast's, or the inputs')
    weight_grad_dtype: torch.dtype  # of the weight gradient's sum over chunks


def _default_chunk(n: int, hidden: int, classes: int) -> int:
    """Rows per chunk: the chunk's logits about as large as the hidden states (N·H), and at
    least 256 rows so that each matmul stays efficient."""
    return max(256, math.ceil(n * hidden / classes))


def _row_pass(s, teacher, labels, o: _Options, compute_grad: bool):
    """(rows [C], stats [C, 7] or None, d rows / d logits [C, V] or None) for one chunk."""
    if has_native():
        if len(teacher) == 1:
            return torch.ops.ptcore.kd_loss_rows(
                s, teacher[0], labels, o.temperature, o.divergence, o.beta, o.hard_weight,
                o.soft_weight, o.ignore_index, o.scale_by_t2, 1.0, compute_grad)
        return torch.ops.ptcore.kd_loss_topk_rows(
            s, *teacher, labels, o.temperature, o.hard_weight, o.soft_weight, o.ignore_index,
            o.scale_by_t2, o.tail_bucket, 1.0, compute_grad)
    with torch.enable_grad():  # the reference, differentiated chunk by chunk
        s = s.detach().requires_grad_(compute_grad)
        args = (o.temperature, o.hard_weight, o.soft_weight, o.ignore_index, o.scale_by_t2)
        rows = (reference.kd_loss_rows(s, teacher[0], labels, o.temperature, o.divergence,
                                       o.beta, *args[1:]) if len(teacher) == 1
                else reference.kd_loss_topk_rows(s, *teacher, labels, *args, o.tail_bucket))
        grad = torch.autograd.grad(rows.sum(), s)[0] if compute_grad else None
    return rows.detach(), None, grad


def _chunks(x, w, b, teacher, labels, o: _Options, needs, row_scale=None):
    """One pass over the rows. ``needs`` = (hidden, weight, bias) gradients wanted; each
    row's loss gets gradient 1, or ``row_scale[i]``. Returns rows [N], stats [N, 7] (None
    without the native library) and the three gradients (None where not wanted; the
    weight's summed in ``o.weight_grad_dtype``, the bias's in float32)."""
    n = x.shape[0]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    rows = x.new_empty((n,), dtype=acc)
    stats = x.new_empty((n, 7), dtype=acc) if has_native() else None
    gx = torch.empty_like(x) if needs[0] else None
    gw = torch.zeros(w.shape, dtype=o.weight_grad_dtype, device=w.device) if needs[1] else None
    gb = torch.zeros(w.shape[0], dtype=acc, device=w.device) if needs[2] else None
    for a in range(0, n, o.chunk):
        e = min(n, a + o.chunk)
        xc = x[a:e]
        s = xc @ w.t() if b is None else torch.addmm(b, xc, w.t())
        rows[a:e], st, g = _row_pass(s, teacher(a, e, s.dtype), None if labels is None
                                     else labels[a:e], o, any(needs))
        if stats is not None:
            stats[a:e] = st
        del s  # the chunk's logits (and the teacher's) are spent: the next chunk reuses them
        if any(needs):
            if row_scale is not None:
                g.mul_(row_scale[a:e, None].to(g.dtype))
            if gx is not None:
                torch.mm(g, w, out=gx[a:e])
            if gw is not None:
                _add_weight_grad(gw, g, xc)
            if gb is not None:
                gb += g.sum(0, dtype=acc)
        del g  # before the next chunk's logits, not after: one gradient buffer at a time
    return rows, stats, gx, gw, gb


def _add_weight_grad(gw, g, xc):
    """gw [V, H] += g.T @ xc: in place when the dtypes agree. Half-precision products into a
    float32 sum go through a temporary in their own dtype, one block of rows of V about the
    size of the chunk's logits at a time (all of V at once would be a [V, H] temporary:
    1 GiB in bfloat16 at V = 128256, H = 4096)."""
    if g.dtype == gw.dtype:
        gw.addmm_(g.t(), xc)
        return
    V, H = gw.shape
    block = max(1, g.numel() // H)
    for v in range(0, V, block):
        gw[v:v + block] += g[:, v:v + block].t() @ xc


def _cast(x, w, b, dtype):
    """The matmuls' operands: cast inside the autograd function, so that a float32 weight
    under autocast gets its float32 gradient as summed, not rounded through bfloat16."""
    return x.to(dtype), w.to(dtype), None if b is None else b.to(dtype)


class _FusedLinearKD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, labels, o: _Options, teacher_fn, count):
        needs = ctx.needs_input_grad[:3]
        early = any(needs) and o.reduction != "none"  # gradients now; the backward scales
        rows, stats, *grads = _chunks(*_cast(x, w, b, o.dtype), teacher_fn, labels, o,
                                      needs if early else (False,) * 3)
        ctx.o, ctx.teacher_fn, ctx.count, ctx.grads = o, teacher_fn, count, grads if early else None
        ctx.save_for_backward(x, w, b, labels)
        ctx.set_materialize_grads(False)
        loss = rows if o.reduction == "none" else rows.sum()
        if o.reduction in ("batchmean", "mean"):
            loss = loss / count
        if stats is None:
            stats = rows.new_empty((0, 7))
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        nones = (None,) * 4
        if grad_loss is None:
            return (None,) * 3 + nones
        x, w, b, labels = ctx.saved_tensors
        o, grads, ctx.grads = ctx.o, ctx.grads, None
        row_scale = None
        if o.reduction == "none":
            row_scale, scale = grad_loss.reshape(-1), None
        else:
            scale = grad_loss / ctx.count if o.reduction in ("batchmean", "mean") else grad_loss
        if grads is None:  # not computed in the forward, or used by an earlier backward
            needs = ctx.needs_input_grad[:3]
            _, _, *grads = _chunks(*_cast(x, w, b, o.dtype), ctx.teacher_fn, labels, o, needs,
                                   row_scale)
        out = []
        for g, like in zip(grads, (x, w, b)):
            if g is not None and scale is not None:
                g = g.mul_(scale.to(g.dtype))
            out.append(None if g is None else g.to(like.dtype))
        return (*out, *nones)


def _teacher_source(x, teacher_hidden, teacher_weight, teacher_bias, values, indices, n):
    """A function (a, e, dtype) → the teacher of rows [a, e): its logits (by matmul, in
    `dtype`) or its (values, indices)."""
    full = teacher_hidden is not None or teacher_weight is not None
    topk = values is not None or indices is not None
    if full == topk:
        raise ValueError("give the teacher either as teacher_hidden and teacher_weight or as "
                         "teacher_values and teacher_indices")
    if full:
        if teacher_hidden is None or teacher_weight is None:
            raise ValueError("teacher_hidden and teacher_weight go together")
        th = _check_2d_pair(teacher_hidden, teacher_weight, teacher_bias, "teacher", x)
        if th.shape[0] != n:
            raise ValueError(f"teacher_hidden must have {n} rows (the student's), got "
                             f"{th.shape[0]}")
        tw, tb = teacher_weight.detach(), None if teacher_bias is None else teacher_bias.detach()

        def logits(a, e, dtype):
            t = th[a:e] @ tw.t() if tb is None else torch.addmm(tb, th[a:e], tw.t())
            return (t.to(dtype),)
        return logits, tw.shape[0]
    if values is None or indices is None:
        raise ValueError("teacher_values and teacher_indices go together")
    return None, None


def _topk_teacher(values, indices, lead, V, x):
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
    return values.detach().reshape(-1, k).to(acc), indices.reshape(-1, k)


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


def _compute_dtype(x, w, b):
    """The matmuls' dtype: autocast's when it is on, else the inputs' (which must agree)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    for name, t in (("student_weight", w), ("student_bias", b)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{name} must have student_hidden's dtype {x.dtype}, got {t.dtype} "
                            "(or run under torch.autocast)")
    return x.dtype


def _weight_grad_dtype(weight: torch.Tensor, fp32: bool) -> torch.dtype:
    """The weight gradient's sum: float32 (float64 for float64 weights), or with ``fp32``
    False the weight's dtype."""
    if not isinstance(fp32, bool):
        raise TypeError(f"fp32_weight_grad must be a bool, got {type(fp32).__name__}")
    return torch.float32 if fp32 and weight.dtype != torch.float64 else weight.dtype


@torch.compiler.disable  # a graph break: the chunk loop runs eagerly (docs/llm.md)
def fused_linear_kd_loss(student_hidden: torch.Tensor, student_weight: torch.Tensor,
                         student_bias: torch.Tensor | None = None, *,
                         teacher_hidden: torch.Tensor | None = None,
                         teacher_weight: torch.Tensor | None = None,
                         teacher_bias: torch.Tensor | None = None,
                         teacher_values: torch.Tensor | None = None,
                         teacher_indices: torch.Tensor | None = None,
                         chunk_size: int | None = None, temperature: float = 1.0,
                         reduction: str = "batchmean", divergence: str = "forward_kl",
                         beta: float = 0.5, labels: torch.Tensor | None = None,
                         hard_weight: float = 0.0, soft_weight: float = 1.0,
                         ignore_index: int = -100, scale_by_t2: bool = True,
                         tail_bucket: bool = False, return_row_signals: bool = False,
                         fp32_weight_grad: bool = True):
    r"""``kd_loss(student_hidden @ student_weight.T + student_bias, teacher logits)`` without
    materialising the ``[N, V]`` logits: the rows go through in chunks.

    Shapes: ``student_hidden`` ``[..., H]`` (leading dims are rows, N in all),
    ``student_weight`` ``[V, H]``, ``student_bias`` ``[V]``. The teacher is either
    ``teacher_hidden`` ``[..., Ht]`` with ``teacher_weight`` ``[V, Ht]`` (and
    ``teacher_bias``), its logits computed chunk by chunk too and given no gradient, or its
    top-K ``teacher_values``/``teacher_indices`` ``[..., K]`` as in
    :func:`ptcore.kd_loss_topk` (``divergence`` must then be ``"forward_kl"``;
    ``tail_bucket`` as there). Every other option is :func:`ptcore.kd_loss`'s, and the loss
    is the same up to float rounding.

    ``chunk_size``: rows per chunk (default: about N·H / V, at least 256). Peak extra memory
    is about ``chunk_size × V`` logits (×2 with a full teacher) plus their gradient, against
    ``N × V`` logits and gradient unfused; the weight's gradient is summed over the chunks in
    a ``[V, H]`` buffer that becomes ``student_weight.grad``.

    Dtypes: float32, float64, or float16/bfloat16 (directly or under ``torch.autocast``:
    the matmuls run in autocast's dtype, the row maths in float32). ``fp32_weight_grad``: the
    weight's gradient is summed over the chunks in float32 (default), so a half-precision
    weight costs a float32 ``[V, H]`` buffer (2 bytes a weight more than its gradient);
    ``False`` sums in the weight's own dtype, in place: one half-precision rounding per chunk
    where the unfused matmul rounds once (bfloat16, 32 chunks: 0.7% relative error in the
    gradient's norm, against 0.3-0.5% for the float32 sum and for the unfused path).
    Gradients flow to ``student_hidden``, ``student_weight`` and ``student_bias``.

    With ``return_row_signals=True`` returns ``(loss, RowSignals)``: per-row teacher and
    student confidence and divergence, read from the statistics the kernels keep anyway.
    Under ``torch.compile`` this function is a graph break (it runs eagerly).
    """
    _kd_args.check_hyper(temperature, reduction, divergence, beta, hard_weight, soft_weight,
                         ignore_index)
    x = _check_2d_pair(student_hidden, student_weight, student_bias, "student", student_hidden)
    n, lead = x.shape[0], student_hidden.shape[:-1]
    V, H = student_weight.shape
    if V < 1:
        raise ValueError("student_weight must have at least one class (V >= 1)")
    if not isinstance(tail_bucket, bool):
        raise TypeError(f"tail_bucket must be a bool, got {type(tail_bucket).__name__}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if labels is not None:
        labels = _kd_args.check_labels(labels, lead, x.device)
    teacher_fn, tv = _teacher_source(student_hidden, teacher_hidden, teacher_weight,
                                     teacher_bias, teacher_values, teacher_indices, n)
    if teacher_fn is not None:
        if tv != V:
            raise ValueError(f"teacher_weight has {tv} classes, student_weight {V}")
        if tail_bucket:
            raise ValueError("tail_bucket applies to a top-k teacher only")
    else:
        if divergence != "forward_kl":
            raise ValueError("a top-k teacher supports divergence='forward_kl' only")
        values, indices = _topk_teacher(teacher_values, teacher_indices, lead, V, x)

        def teacher_fn(a, e, _dtype):
            return values[a:e], indices[a:e]
    o = _Options(float(temperature), divergence, float(beta), float(hard_weight),
                 float(soft_weight), int(ignore_index), bool(scale_by_t2), tail_bucket,
                 reduction, chunk_size or _default_chunk(n, H, V),
                 _compute_dtype(x, student_weight, student_bias),
                 _weight_grad_dtype(student_weight, fp32_weight_grad))
    count = (max(n, 1) if labels is None
             else (labels != ignore_index).sum().clamp_min(1)) * (V if reduction == "mean" else 1)
    loss, stats = _FusedLinearKD.apply(student_hidden.reshape(-1, H), student_weight,
                                       student_bias, labels, o, teacher_fn, count)
    if reduction == "none":
        loss = loss.reshape(lead)
    if not return_row_signals:
        return loss
    if stats.shape[0] != n:
        raise RuntimeError("row signals need ptcore's native library")
    return loss, from_stats(stats, lead)
