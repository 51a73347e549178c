"""Pure-PyTorch definitions of every ptcore op: the specification that the native
kernels are tested and benchmarked against, and the fallback when they cannot load.

They favour clarity and numerical safety over speed (float32 math, N×V temporaries)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ptcore import _kd_args

__all__ = ["kd_loss", "kd_loss_rows", "kd_loss_topk", "fused_linear_kd_loss", "quantize_rows",
           "gather_rows", "kd_row_signals", "kd_topk_row_signals"]


def _log_softmax(x: torch.Tensor, temperature: float) -> torch.Tensor:
    # Subtract the row max before dividing by T: x/T alone overflows for |x| ~ 3e38, T < 1.
    shifted = x - x.amax(dim=-1, keepdim=True).detach()
    return torch.log_softmax(shifted / temperature, dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, with 0 · log 0 = 0 (masked entries contribute nothing; a NaN
    probability is not masked: NaN in, NaN out, in the loss and in its gradient)."""
    has_mass = log_p != -math.inf
    diff = torch.where(has_mass, log_p - log_q, torch.zeros_like(log_p))
    return (log_p.exp() * diff).sum(dim=-1)


def _log_mixture(log_pt: torch.Tensor, log_ps: torch.Tensor, beta: float) -> torch.Tensor:
    """log(β p_t + (1-β) p_s) in log space: in linear space two subnormal probabilities mix
    to 0 and their KL terms become infinite. Entries where both are 0 give -inf, with a
    zero (not NaN) gradient."""
    a = math.log(beta) + log_pt
    b = math.log1p(-beta) + log_ps
    empty = (a == -math.inf) & (b == -math.inf)
    log_m = torch.logaddexp(a.masked_fill(empty, 0.0), b.masked_fill(empty, 0.0))
    return log_m.masked_fill(empty, -math.inf)


def kd_loss_rows(student, teacher, labels, temperature, divergence, beta, hard_weight,
                 soft_weight, ignore_index, scale_by_t2):
    """Per-row loss [N] (float32) for [N, V] logits; see ptcore.ops.kd_loss for the maths."""
    acc = torch.float64 if student.dtype == torch.float64 else torch.float32
    s = student.to(acc)
    t = teacher.detach().to(acc)
    log_ps = _log_softmax(s, temperature)
    log_pt = _log_softmax(t, temperature)
    if divergence == "forward_kl":
        div = _kl(log_pt, log_ps)
    elif divergence == "reverse_kl":
        div = _kl(log_ps, log_pt)
    else:
        log_m = _log_mixture(log_pt, log_ps, beta)
        div = beta * _kl(log_pt, log_m) + (1.0 - beta) * _kl(log_ps, log_m)
    loss = soft_weight * (temperature ** 2 if scale_by_t2 else 1.0) * div
    return _hard_term(loss, s, labels, hard_weight, ignore_index)


def _hard_term(loss, s, labels, hard_weight, ignore_index):
    """Adds hard_weight · CE(softmax(s), label) and zeroes the rows labelled ignore_index."""
    if labels is not None:
        valid = labels != ignore_index
        V = s.shape[-1]
        bad = valid & ((labels < 0) | (labels >= V))
        if not torch.compiler.is_compiling() and bool(bad.any()):
            raise ValueError(f"labels must be in [0, {V}) or ignore_index={ignore_index}, got "
                             f"{labels[bad][0].item()}")
        if hard_weight != 0.0:
            ce = F.cross_entropy(s, labels.masked_fill(~valid, 0), reduction="none")
            loss = loss + hard_weight * ce
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    return loss.to(s.dtype)


def kd_loss_topk_rows(student, teacher_values, teacher_indices, labels, temperature,
                      hard_weight, soft_weight, ignore_index, scale_by_t2, tail_bucket=False):
    """Per-row loss [N] for [N, V] student logits against a top-K teacher ([N, K] values and
    class indices): forward KL from softmax(values / T) over the K classes to the student;
    with ``tail_bucket``, over K + 1 bins, the last one the mass the K log-probabilities
    leave, against the student's mass off the K classes."""
    acc = torch.float64 if student.dtype == torch.float64 else torch.float32
    s = student.to(acc)
    V = s.shape[-1]
    idx = teacher_indices
    # Data-dependent checks read values back to Python: under torch.compile they would
    # break the graph, so a compiled reference (the benchmarks' baseline) skips them.
    if not torch.compiler.is_compiling():
        if bool(((idx < 0) | (idx >= V)).any()):
            raise ValueError(f"teacher_indices must be in [0, {V})")
        if idx.shape[-1] > 1 and bool((idx.sort(dim=-1).values.diff(dim=-1) == 0).any()):
            raise ValueError("teacher_indices must not repeat a class within a row")
    if tail_bucket:
        div = _tail_bucket_kl(s, teacher_values.detach().to(acc), idx, temperature)
    elif idx.shape[-1] == 0:  # a teacher that kept no class teaches nothing
        div = s[..., :0].sum(dim=-1)  # zeros, with a (zero) gradient
    else:
        log_pt = _log_softmax(teacher_values.detach().to(acc), temperature)
        div = _kl(log_pt, _log_softmax(s, temperature).gather(-1, idx))
    loss = soft_weight * (temperature ** 2 if scale_by_t2 else 1.0) * div
    return _hard_term(loss, s, labels, hard_weight, ignore_index)


# Sums of K rounded probabilities are good to about this near 1: a teacher's rest below it
# is empty, a student's is at least this.
_EMPTY_TAIL = 2.0 ** -20


def _tail_log_q(log_probs, temperature):
    """The teacher's K + 1 bins at T (its K log-probabilities and the rest of its mass,
    tempered together), and that rest [N, 1] (0 where empty)."""
    rest = 1.0 - log_probs.exp().sum(dim=-1, keepdim=True)
    rest = torch.where(rest < _EMPTY_TAIL, 0.0, rest)
    return torch.log_softmax(torch.cat([log_probs, rest.log()], dim=-1) / temperature, dim=-1), rest


def _tail_bucket_kl(s, log_probs, idx, temperature):
    """KL over K + 1 bins: the teacher's K log-probabilities and the rest of its mass,
    against the student's probabilities of the K classes and the sum of its probabilities
    over every other class (summed, not 1 − Σ: no cancellation here)."""
    log_q, rest = _tail_log_q(log_probs, temperature)
    p_s = torch.softmax(s / temperature, dim=-1)
    off_k = torch.ones_like(p_s).scatter(-1, idx, 0.0)
    # Where the teacher's tail is empty the student's is not looked at (no 0 · log 0 gradient).
    p_tail = torch.where(rest > 0, (p_s * off_k).sum(dim=-1, keepdim=True), 1.0)
    p_tail = p_tail.clamp_min(_EMPTY_TAIL)
    log_p = torch.cat([p_s.gather(-1, idx), p_tail], dim=-1).log()
    return _kl(log_q, log_p)


def _top_probability(log_p):
    """Each row's largest probability; 0 for a row with no classes (a teacher that kept none)."""
    if log_p.shape[-1] == 0:
        return log_p.new_zeros(log_p.shape[:-1])
    return log_p.amax(dim=-1).exp()


def kd_row_signals(student, teacher, temperature, divergence, beta):
    """(teacher confidence, student confidence, divergence) per row of [N, V] logits: the top
    probabilities of softmax(· / T) and D(p_t, p_s), what ptcore.ops.RowSignals holds (for
    JSD its student half KL(p_s ‖ m))."""
    acc = torch.float64 if student.dtype == torch.float64 else torch.float32
    log_ps = _log_softmax(student.detach().to(acc), temperature)
    log_pt = _log_softmax(teacher.detach().to(acc), temperature)
    if divergence == "forward_kl":
        div = _kl(log_pt, log_ps)
    elif divergence == "reverse_kl":
        div = _kl(log_ps, log_pt)
    else:
        div = _kl(log_ps, _log_mixture(log_pt, log_ps, beta))
    return _top_probability(log_pt), _top_probability(log_ps), div


def kd_topk_row_signals(student, teacher_values, teacher_indices, temperature, tail_bucket):
    """kd_row_signals for a top-k teacher: its confidence over its K bins (K + 1 with the
    tail bucket), the student's over all V classes."""
    acc = torch.float64 if student.dtype == torch.float64 else torch.float32
    s, v = student.detach().to(acc), teacher_values.detach().to(acc)
    div = kd_loss_topk_rows(s, v, teacher_indices, None, temperature, 0.0, 1.0, -100, False,
                            tail_bucket)
    log_q = _tail_log_q(v, temperature)[0] if tail_bucket else _log_softmax(v, temperature)
    return (_top_probability(log_q), _top_probability(_log_softmax(s, temperature)), div)


def kd_loss(student_logits, teacher_logits, *, temperature=1.0, reduction="batchmean",
            divergence="forward_kl", beta=0.5, labels=None, hard_weight=0.0, soft_weight=1.0,
            ignore_index=-100, scale_by_t2=True):
    """Reference for ptcore.kd_loss: same signature, same results, plain PyTorch."""
    _kd_args.check_hyper(temperature, reduction, divergence, beta, hard_weight, soft_weight,
                         ignore_index)
    s, t, lab, lead = _kd_args.flatten(student_logits, teacher_logits, labels)
    rows = kd_loss_rows(s, t, lab, float(temperature), divergence, float(beta),
                        float(hard_weight), float(soft_weight), ignore_index, bool(scale_by_t2))
    return _kd_args.reduce_rows(rows, lab, ignore_index, reduction, s.shape[-1], lead)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for ptcore.ops.quantize_rows: [M, D] float → (int8 codes [M, D], scales [M]).

    scale = max|x| / 127 per row (float32), code = round-half-even(x / scale) clamped to
    ±127. All-zero rows, and rows holding inf/NaN (scale inf/NaN), get zero codes."""
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D, got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    xf = x.float()
    amax = xf.abs().amax(dim=1) if x.shape[1] else xf.new_zeros(x.shape[0])
    scales = amax / 127
    usable = torch.isfinite(scales) & (scales > 0)
    divisor = torch.where(usable, scales, torch.ones_like(scales))
    codes = torch.round(xf / divisor[:, None]).clamp_(-127, 127)
    codes = torch.where(usable[:, None], codes, torch.zeros_like(codes))
    return codes.to(torch.int8), scales


def gather_rows(store: torch.Tensor, scales: torch.Tensor | None, indices: torch.Tensor,
                dtype: torch.dtype, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Reference for ptcore.ops.gather_rows: rows ``store[indices]`` as ``dtype``, times
    their per-row scale when ``store`` is int8; written into ``out`` ([B, D] of ``dtype``)
    when given."""
    bad = ((indices < 0) | (indices >= store.shape[0])).nonzero()
    if bad.numel():
        pos = int(bad[0])
        m = store.shape[0]
        raise IndexError(f"indices[{pos}] = {int(indices[pos])} is out of range for a store of "
                         f"{m} rows (valid: 0 to {m - 1}; negative indices are not accepted)")
    rows = store.index_select(0, indices).float()
    if store.dtype == torch.int8:
        if scales is None:
            raise ValueError("scales are required when store is int8")
        rows = rows * scales.index_select(0, indices)[:, None]
    if out is None:
        return rows.to(dtype)
    if out.shape != rows.shape or out.dtype != dtype or out.device != store.device:
        raise ValueError(f"out must be a {list(rows.shape)} {dtype} tensor on {store.device}, "
                         f"got {list(out.shape)} {out.dtype} on {out.device}")
    return out.copy_(rows)


def kd_loss_topk(student_logits, teacher_values, teacher_indices, *, temperature=1.0,
                 reduction="batchmean", labels=None, hard_weight=0.0, soft_weight=1.0,
                 ignore_index=-100, scale_by_t2=True, tail_bucket=False):
    """Reference for ptcore.kd_loss_topk: same signature, same results, plain PyTorch."""
    _kd_args.check_hyper(temperature, reduction, "forward_kl", 0.5, hard_weight, soft_weight,
                         ignore_index)
    s, v, i, lab, lead = _kd_args.flatten_topk(student_logits, teacher_values, teacher_indices,
                                               labels)
    rows = kd_loss_topk_rows(s, v, i, lab, float(temperature), float(hard_weight),
                             float(soft_weight), ignore_index, bool(scale_by_t2),
                             bool(tail_bucket))
    return _kd_args.reduce_rows(rows, lab, ignore_index, reduction, s.shape[-1], lead)


def fused_linear_kd_loss(student_hidden, student_weight, student_bias=None, *,
                         teacher_hidden=None, teacher_weight=None, teacher_bias=None,
                         teacher_values=None, teacher_indices=None, teacher_probs=None,
                         teacher_log_probs=None, vocab_size=None, chunk_size=None,
                         tail_bucket=False, fp32_logits=False, **options):
    """Reference for ptcore.fused_linear_kd_loss: the logits materialised, then the KD loss
    (chunk_size and fp32_logits change nothing here). A dense target's log-probabilities
    are the teacher's logits; with ``vocab_size`` the teacher keeps its first rows and the
    student's rows beyond get a teacher logit of -inf (0 for the cosine loss)."""
    logits = F.linear(student_hidden, student_weight, student_bias)
    if teacher_values is None:
        V = logits.shape[-1]
        if teacher_hidden is not None:
            rows = V if vocab_size is None else vocab_size
            teacher = F.linear(teacher_hidden, teacher_weight[:rows],
                               None if teacher_bias is None else teacher_bias[:rows])
        else:
            teacher = teacher_probs.log() if teacher_probs is not None else teacher_log_probs
        fill = 0.0 if options.get("divergence") == "cosine" else float("-inf")
        teacher = F.pad(teacher.detach(), (0, V - teacher.shape[-1]), value=fill)
        if options.get("divergence") == "cosine":
            return _cosine_loss(logits, teacher.to(logits.dtype), **options)
        return kd_loss(logits, teacher.to(logits.dtype), **options)
    if options.pop("divergence", "forward_kl") != "forward_kl":
        raise ValueError("a top-k teacher supports divergence='forward_kl' only")
    options.pop("beta", None)
    return kd_loss_topk(logits, teacher_values, teacher_indices, tail_bucket=tail_bucket,
                        **options)


def _cosine_loss(s, t, *, labels=None, hard_weight=0.0, soft_weight=1.0, ignore_index=-100,
                 reduction="batchmean", divergence="cosine", **_temperature_and_t2):
    """soft_weight · (1 - cos(s, t)) + hard_weight · CE(s, y) per row, reduced as kd_loss."""
    V = s.shape[-1]
    s, t = s.reshape(-1, V), t.reshape(-1, V)
    rows = soft_weight * (1 - F.cosine_similarity(s, t, dim=-1, eps=1e-8))
    count = s.shape[0]
    if labels is not None:
        y = labels.reshape(-1)
        keep = y != ignore_index
        ce = F.cross_entropy(s, y.where(keep, 0), reduction="none")
        rows = (rows + hard_weight * ce).where(keep, 0.0)
        count = keep.sum().clamp_min(1)
    if reduction == "none":
        return rows.reshape(labels.shape if labels is not None else s.shape[:-1])
    total = rows.sum()
    return {"sum": total, "batchmean": total / count, "mean": total / (count * V)}[reduction]
