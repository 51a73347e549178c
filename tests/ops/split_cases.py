"""What the split-path tests share, on a GPU (tests/ops/test_kd_loss_split.py) and under the
emulation (tests/emulated/test_split_emulated.py): the cases, the float64 reference, and the
tolerances (as tests/ops/test_parity.py sets them)."""
import math

import torch

from ptcore import reference

DIVS = ["forward_kl", "reverse_kl", "jsd"]
VARIANTS = ["plain", "labels", "mask"]
NS = [1, 2, 8]
TEMPERATURE = 2.0
GRAD_SCALE = 0.75
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _args(div, labels):
    """kd_loss_rows' arguments after the labels: T, divergence, β, hard and soft weights,
    ignore_index, scale_by_t2."""
    hard, soft = (0.5, 0.7) if labels is not None else (0.0, 1.0)
    return (TEMPERATURE, div, 0.3, hard, soft, -100, True)


def _reference(s, t, labels, div, grad_rows):
    """float64 rows, and the student's gradients for GRAD_SCALE and for grad_rows."""
    x = s.clone().requires_grad_()
    rows = reference.kd_loss_rows(x, t, labels, *_args(div, labels))
    grad_f, = torch.autograd.grad(GRAD_SCALE * rows.sum(), x, retain_graph=True)
    grad_b, = torch.autograd.grad((rows * grad_rows).sum(), x)
    return rows.detach(), grad_f, grad_b


def _finite_max(x):
    x = x[torch.isfinite(x)]
    return x.abs().max().item() if x.numel() else 0.0


def _loss_atol(s, t, labels):
    """One-millionth of the magnitudes a row's loss is made of (as in test_parity)."""
    _, _, _, hard, soft, _, _ = _args("forward_kl", labels)
    log_v = math.log(s.shape[1])
    spread = (_finite_max(s) + _finite_max(t)) / TEMPERATURE
    return 1e-6 * (soft * TEMPERATURE ** 2 * (1 + log_v + spread)
                   + hard * (1 + log_v + _finite_max(s)))


def _grad_atol(ref, s, t, labels, div, up, dtype):
    """As test_parity: 1e-6 of the largest coefficient an entry is made of; half types also
    their rounding of the largest entry."""
    _, _, _, hard, soft, _, _ = _args(div, labels)
    c = up * (soft * TEMPERATURE + hard)
    if div in ("reverse_kl", "jsd"):
        c *= 1 + math.log(s.shape[1]) + (_finite_max(s) + _finite_max(t)) / TEMPERATURE
    half = 0.0
    if dtype != torch.float32:
        info = torch.finfo(dtype)
        half = GRAD_RTOL[dtype] * _finite_max(ref) + info.tiny * info.eps
    return 1e-6 * c + half + 1e-30


def _bits(x):
    return x.view({2: torch.int16, 4: torch.int32}[x.element_size()])


def _inputs(n, v, dtype, variant, seed=0):
    """float64 inputs on the CPU, rounded to dtype; labels with ignored rows, or -inf masks
    (row 0's first 70 % masked: whole blocks of it see only -inf; row 1 entirely)."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, v, generator=g, dtype=torch.float64) * 3).to(dtype).double()
    t = (torch.randn(n, v, generator=g, dtype=torch.float64) * 3).to(dtype).double()
    labels = None
    if variant == "labels":
        labels = torch.randint(0, v, (n,), generator=g)
        labels[1::3] = -100
    if variant == "mask":
        mask = torch.zeros(n, v, dtype=torch.bool)
        mask[:, ::3] = True
        mask[0, : int(0.7 * v)] = True
        mask[1:2] = True
        s, t = s.masked_fill(mask, -math.inf), t.masked_fill(mask, -math.inf)
    return s, t, labels
