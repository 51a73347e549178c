"""ptcore.fused_linear_kd_loss: the KD loss of a linear head (an LM's lm_head) without the
[N, V] logits: rows go in chunks through matmul and the fused row kernels.

Per chunk of C rows: the student's logits by one matmul (and the teacher's, when it is given
as hidden states + weight), the row kernel's loss and logit gradient in one pass, then the
chunk's gradient for the hidden states and its share of the weight's (and bias's) gradient.
All of it happens in the forward, when autograd will want it (the loss is the graph's last
node), so that the backward only scales what is ready. Peak extra memory is O(C·V + V·H)
instead of O(N·V). The row maths stays in the kernels (csrc/kd_math.h)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ptcore import _kd_args, reference
from ptcore._extension import has_native
from ptcore.ops._fused_linear_targets import (_check_2d_pair, chunk_logits, cosine_rows,
                                              cross_entropy_rows, teacher_source)
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
    fp32_logits: bool = False  # half-precision matmuls give float32 logits
    parts: bool = False  # also the rows' cross-entropy, to split the loss


def _default_chunk(n: int, hidden: int, classes: int) -> int:
    """Rows per chunk: the chunk's logits about as large as the hidden states (N·H), and at
    least 256 rows so that each matmul stays efficient."""
    return max(256, math.ceil(n * hidden / classes))


def _row_pass(s, teacher, labels, o: _Options, compute_grad: bool):
    """(rows [C], stats [C, 7] or None, d rows / d logits [C, V] or None) for one chunk."""
    if o.divergence == "cosine":  # in Python; the kernel adds the hard term
        rows, grad = cosine_rows(s, teacher[0], labels, o.soft_weight, o.ignore_index,
                                 compute_grad)
        stats = None
        if labels is not None and o.hard_weight > 0:
            hard = dataclasses.replace(o, divergence="forward_kl", soft_weight=0.0)
            h, stats, g = _row_pass(s, teacher, labels, hard, compute_grad)
            rows += h
            if compute_grad:
                grad += g
        return rows, stats, grad
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
    weight's summed in ``o.weight_grad_dtype``, the bias's in float32), and with
    ``o.parts`` each row's cross-entropy [N] (else None)."""
    n = x.shape[0]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    rows = x.new_empty((n,), dtype=acc)
    stats = x.new_empty((n, 7), dtype=acc) if has_native() and o.divergence != "cosine" else None
    ce = x.new_zeros((n,), dtype=acc) if o.parts and labels is not None else None
    wl = w  # the logits' weight: its float32 image once for float32 logits off CUDA
    if o.fp32_logits and w.dtype in (torch.float16, torch.bfloat16) and w.device.type != "cuda":
        wl = w.float()
    gx = torch.empty_like(x) if needs[0] else None
    gw = torch.zeros(w.shape, dtype=o.weight_grad_dtype, device=w.device) if needs[1] else None
    gb = torch.zeros(w.shape[0], dtype=acc, device=w.device) if needs[2] else None
    for a in range(0, n, o.chunk):
        e = min(n, a + o.chunk)
        xc = x[a:e]
        s = chunk_logits(xc, wl, b, o.fp32_logits)
        lab = None if labels is None else labels[a:e]
        rows[a:e], st, g = _row_pass(s, teacher(a, e, s.dtype), lab, o, any(needs))
        if stats is not None and st is not None:
            stats[a:e] = st
        if ce is not None:
            ce[a:e] = cross_entropy_rows(s, st if o.hard_weight > 0 else None, lab,
                                         o.ignore_index)
        del s  # the chunk's logits (and the teacher's) are spent: the next chunk reuses them
        if any(needs):
            if row_scale is not None:
                g.mul_(row_scale[a:e, None].to(g.dtype))
            if g.dtype != xc.dtype:  # float32 logits of half-precision matmuls
                g = g.to(xc.dtype)
            if gx is not None:
                torch.mm(g, w, out=gx[a:e])
            if gw is not None:
                _add_weight_grad(gw, g, xc)
            if gb is not None:
                gb += g.sum(0, dtype=acc)
        del g  # before the next chunk's logits, not after: one gradient buffer at a time
    return rows, stats, ce, gx, gw, gb


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
        rows, stats, ce, *grads = _chunks(*_cast(x, w, b, o.dtype), teacher_fn, labels, o,
                                          needs if early else (False,) * 3)
        parts = rows.new_empty((0,))
        if o.parts:  # [2, N]: each row's soft term (unweighted) and cross-entropy
            ce = torch.zeros_like(rows) if ce is None else ce
            soft = ((rows - o.hard_weight * ce) / o.soft_weight if o.soft_weight > 0
                    else torch.full_like(rows, math.nan))
            parts = torch.stack([soft, ce])
        ctx.o, ctx.teacher_fn, ctx.count, ctx.grads = o, teacher_fn, count, grads if early else None
        ctx.save_for_backward(x, w, b, labels)
        ctx.set_materialize_grads(False)
        loss = rows if o.reduction == "none" else rows.sum()
        if o.reduction in ("batchmean", "mean"):
            loss = loss / count
        if stats is None:
            stats = rows.new_empty((0, 7))
        ctx.mark_non_differentiable(stats, parts)
        return loss, stats, parts

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats, _grad_parts):
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
            _, _, _, *grads = _chunks(*_cast(x, w, b, o.dtype), ctx.teacher_fn, labels,
                                      dataclasses.replace(o, parts=False), needs, row_scale)
        out = []
        for g, like in zip(grads, (x, w, b)):
            if g is not None and scale is not None:
                g = g.mul_(scale.to(g.dtype))
            out.append(None if g is None else g.to(like.dtype))
        return (*out, *nones)


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
                         teacher_probs: torch.Tensor | None = None,
                         teacher_log_probs: torch.Tensor | None = None,
                         chunk_size: int | None = None, temperature: float = 1.0,
                         reduction: str = "batchmean", divergence: str = "forward_kl",
                         beta: float = 0.5, labels: torch.Tensor | None = None,
                         hard_weight: float = 0.0, soft_weight: float = 1.0,
                         ignore_index: int = -100, scale_by_t2: bool = True,
                         tail_bucket: bool = False, return_row_signals: bool = False,
                         fp32_weight_grad: bool = True, vocab_size: int | None = None,
                         fp32_logits: bool = False, return_parts: bool = False):
    r"""``kd_loss(student_hidden @ student_weight.T + student_bias, teacher logits)`` without
    materialising the ``[N, V]`` logits: the rows go through in chunks.

    Shapes: ``student_hidden`` ``[..., H]`` (leading dims are rows, N in all),
    ``student_weight`` ``[V, H]``, ``student_bias`` ``[V]``. The teacher is one of:
    ``teacher_hidden`` ``[..., Ht]`` with ``teacher_weight`` ``[V, Ht]`` (and
    ``teacher_bias``), its logits computed chunk by chunk too and given no gradient; its
    top-K ``teacher_values``/``teacher_indices`` ``[..., K]`` as in
    :func:`ptcore.kd_loss_topk` (``divergence`` must then be ``"forward_kl"``;
    ``tail_bucket`` as there); or a dense soft-label target ``teacher_probs`` (or
    ``teacher_log_probs``) ``[..., V]``, read a chunk of rows at a time, whose
    log-probabilities act as the teacher's logits (at T = 1 the target itself; at T != 1
    tempered like logits, ∝ p^(1/T); a zero probability is a -inf logit). Every other
    option is :func:`ptcore.kd_loss`'s, and the loss is the same up to float rounding.

    ``divergence="cosine"`` (a full teacher only): each row's soft term is
    ``1 - cos(s, t)`` between the student's and the teacher's logit vectors (Liger-Kernel's
    fused linear cosine-similarity loss), with no temperature or T² (a cosine ignores
    scale); ignored rows count for nothing, the hard term is as for the KL family.

    ``vocab_size``: the real vocabulary when a head is padded beyond it (Qwen-style
    embeddings rounded up; no token id reaches the extra rows). The teacher's rows from
    ``vocab_size`` on are dropped (``teacher_weight`` may then have more rows than the
    student's); the student's, when ``student_weight`` has more than ``vocab_size``, stay in
    its softmax with a teacher probability of 0 (its loss pushes them down, as
    cross-entropy does; ``reverse_kl`` is refused there: its loss would be infinite).
    Without it the teacher's rows must equal the student's.

    ``chunk_size``: rows per chunk (default: about N·H / V, at least 256). Peak extra memory
    is about ``chunk_size × V`` logits (×2 with a full teacher) plus their gradient, against
    ``N × V`` logits and gradient unfused; the weight's gradient is summed over the chunks in
    a ``[V, H]`` buffer that becomes ``student_weight.grad``.

    Dtypes: float32, float64, or float16/bfloat16 (directly or under ``torch.autocast``:
    the matmuls run in autocast's dtype, the row maths in float32). ``fp32_logits``: the
    half-precision matmuls give float32 logits (products summed in float32 and not rounded
    to the half dtype: ``torch.mm(out_dtype=float32)`` on CUDA; off CUDA a float32 matmul of
    the operands' exact float32 images, which costs a float32 copy of the weight); the
    gradients' matmuls stay in the half dtype. ``fp32_weight_grad``: the
    weight's gradient is summed over the chunks in float32 (default), so a half-precision
    weight costs a float32 ``[V, H]`` buffer (2 bytes a weight more than its gradient);
    ``False`` sums in the weight's own dtype, in place: one half-precision rounding per chunk
    where the unfused matmul rounds once (bfloat16, 32 chunks: 0.7% relative error in the
    gradient's norm, against 0.3-0.5% for the float32 sum and for the unfused path).
    Gradients flow to ``student_hidden``, ``student_weight`` and ``student_bias``.

    With ``return_row_signals=True`` also returns ``RowSignals``: per-row teacher and
    student confidence and divergence, read from the statistics the kernels keep anyway
    (the KL family only). With ``return_parts=True`` also returns (last) ``{"soft": ...,
    "hard": ...}``, detached and reduced as the loss: the soft term before ``soft_weight``
    (with its T²; NaN when ``soft_weight`` is 0) and the cross-entropy before
    ``hard_weight`` (0 without labels), so ``loss = soft_weight·soft + hard_weight·hard``.
    Under ``torch.compile`` this function is a graph break (it runs eagerly).
    """
    cosine = divergence == "cosine"
    _kd_args.check_hyper(temperature, reduction, "forward_kl" if cosine else divergence, beta,
                         hard_weight, soft_weight, ignore_index)
    x = _check_2d_pair(student_hidden, student_weight, student_bias, "student", student_hidden)
    n, lead = x.shape[0], student_hidden.shape[:-1]
    V, H = student_weight.shape
    if V < 1:
        raise ValueError("student_weight must have at least one class (V >= 1)")
    for name, flag in (("tail_bucket", tail_bucket), ("fp32_logits", fp32_logits),
                       ("return_parts", return_parts)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    _check_vocab_size(vocab_size, V, divergence)
    if labels is not None:
        labels = _kd_args.check_labels(labels, lead, x.device)
    teacher_fn, form = teacher_source(
        student_hidden, lead, V, hidden=teacher_hidden, weight=teacher_weight,
        bias=teacher_bias, values=teacher_values, indices=teacher_indices, probs=teacher_probs,
        log_probs=teacher_log_probs, vocab=vocab_size, divergence=divergence,
        fp32_logits=fp32_logits)
    if form != "topk" and tail_bucket:
        raise ValueError("tail_bucket applies to a top-k teacher only")
    if form == "topk" and divergence != "forward_kl":
        raise ValueError("a top-k teacher supports divergence='forward_kl' only")
    if cosine and return_row_signals:
        raise ValueError("return_row_signals is for the KL family, not divergence='cosine'")
    o = _Options(float(temperature), divergence, float(beta), float(hard_weight),
                 float(soft_weight), int(ignore_index), bool(scale_by_t2), tail_bucket,
                 reduction, chunk_size or _default_chunk(n, H, V),
                 _compute_dtype(x, student_weight, student_bias),
                 _weight_grad_dtype(student_weight, fp32_weight_grad), fp32_logits, return_parts)
    count = (max(n, 1) if labels is None
             else (labels != ignore_index).sum().clamp_min(1)) * (V if reduction == "mean" else 1)
    loss, stats, parts = _FusedLinearKD.apply(student_hidden.reshape(-1, H), student_weight,
                                              student_bias, labels, o, teacher_fn, count)
    if reduction == "none":
        loss = loss.reshape(lead)
    out = (loss,)
    if return_row_signals:
        if stats.shape[0] != n:
            raise RuntimeError("row signals need ptcore's native library")
        out += (from_stats(stats, lead),)
    if return_parts:
        reduce = {"none": lambda r: r.reshape(lead), "sum": torch.sum,
                  "batchmean": lambda r: r.sum() / count, "mean": lambda r: r.sum() / count}
        out += ({"soft": reduce[reduction](parts[0]), "hard": reduce[reduction](parts[1])},)
    return out[0] if len(out) == 1 else out


def _check_vocab_size(vocab_size, V: int, divergence: str) -> None:
    if vocab_size is None:
        return
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not 1 <= vocab_size <= V:
        raise ValueError(f"vocab_size must be an int in [1, {V}] (student_weight's rows), got "
                         f"{vocab_size!r}")
    if vocab_size < V and divergence == "reverse_kl":
        raise ValueError(f"divergence='reverse_kl' with student rows beyond vocab_size "
                         f"({V} > {vocab_size}): the teacher gives them probability 0, so "
                         "KL(p_s || p_t) is infinite; use forward_kl or jsd")
