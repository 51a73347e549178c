"""One parity sweep: every native op, the same cases, on every available device, against a
float64 reference computed on the CPU (the CUDA column runs when a GPU is present).

Tolerances follow what float32 arithmetic can deliver: losses at 1e-5 relative, plus an
absolute term of one-millionth of the magnitudes a row's loss is computed from (log V,
the logits' range over T, times T²); gradients at 1e-5 relative to their largest entry,
half-precision gradients at their rounding. NaN must be NaN and ±inf the same inf.
"""
import math
import zlib

import pytest
import torch

import ptcore
from ptcore import reference

from tests.helpers import DEVICES, requires_native

pytestmark = requires_native

VS = [1, 3, 31, 32, 33, 4095, 4096, 32001, 50257, 128256, 256000]
NS = [0, 1, 7, 4099]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TEMPS = [0.05, 1.0, 20.0]
DIVS = ["forward_kl", "reverse_kl", "jsd"]
REDUCTIONS = ["none", "sum", "batchmean", "mean"]
# Special inputs, run on a few shapes: every kind of value the kernels must treat as the
# reference does.
VARIANTS = ["wide", "huge", "mask", "nan_s", "nan_t", "inf_s", "inf_t", "nan_grad",
            "inf_grad", "labels", "noncontig"]
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
INF = math.inf


def _shapes():
    """(N, V): every V at N in {0, 1, 7}; N = 4099 where a row is short."""
    out = [(n, v) for n in (0, 1, 7) for v in VS]
    out += [(4099, v) for v in VS if v <= 33]
    return out


def _cases():
    cases = []
    for n, v in _shapes():
        big = n * v > 300_000
        for dtype in DTYPES:
            for ti, temp in enumerate(TEMPS):
                if big and ti != 1:  # large rows: one temperature is enough per dtype
                    continue
                k = len(cases)
                op = ("kd_loss", DIVS[k % 3]) if k % 4 else ("topk", None)
                cases.append((op, n, v, dtype, temp, "randn", REDUCTIONS[k % 4]))
    for v in (33, 4096, 50257):
        for variant in VARIANTS:
            for dtype in DTYPES:
                for div in DIVS + ["topk"]:
                    op = ("topk", None) if div == "topk" else ("kd_loss", div)
                    temp = 1.0 if variant != "huge" else 0.05
                    cases.append((op, 7, v, dtype, temp, variant, "none"))
    for v in (5, 64):  # top-k edge cases: K = 0, K = V, an all -inf or NaN teacher row
        for variant in ("k0", "kv", "t_all_ninf", "nan_t"):
            for dtype in DTYPES:
                cases.append((("topk", None), 4, v, dtype, 2.0, variant, "none"))
    return cases


def _case_id(case):
    (op, div), n, v, dtype, temp, variant, red = case
    return f"{op}-{div or ''}-{n}x{v}-{str(dtype)[6:]}-T{temp}-{variant}-{red}"


CASES = _cases()


def _inputs(case):
    """float64 inputs on the CPU, already rounded to the case's dtype (what both sides see)."""
    (op, div), n, v, dtype, temp, variant, red = case
    g = torch.Generator().manual_seed(zlib.crc32(_case_id(case).encode()))
    scale = {"wide": 30.0, "huge": 1e4}.get(variant, 3.0)
    s = torch.randn(n, v, generator=g, dtype=torch.float64) * scale
    t = torch.randn(n, v, generator=g, dtype=torch.float64) * scale
    if variant == "mask" and n:
        mask = torch.zeros(n, v, dtype=torch.bool)
        mask[:, ::3] = True
        mask[0, : int(0.7 * v)] = True  # a long masked prefix: online maxima start at -inf
        mask[1, :] = True               # a whole masked row
        s, t = s.masked_fill(mask, -INF), t.masked_fill(mask, -INF)
    special = {"nan_s": (0, math.nan), "nan_t": (1, math.nan), "inf_s": (0, INF),
               "inf_t": (1, INF)}
    if variant in special and n and op == "kd_loss":
        which, value = special[variant]
        (s, t)[which][0, v // 2] = value
    s, t = s.to(dtype).double(), t.to(dtype).double()
    labels = None
    if variant == "labels":
        labels = torch.randint(0, v, (n,), generator=g)
        labels[::3] = -100
    return s, t, labels


def _topk_teacher(t, case):
    (_, _), n, v, dtype, temp, variant, red = case
    k = {"k0": 0, "kv": v}.get(variant, min(v, 8))
    values, indices = t.topk(k, dim=-1) if k else (t[:, :0], t[:, :0].long())
    values = values.clone()
    if variant == "t_all_ninf" and n:
        values[0] = -INF
    if variant == "nan_t" and n and k:
        values[1 % n, k // 2] = math.nan
    return values, indices


def _upstream(case, n):
    (_, _), _, _, _, _, variant, red = case
    if red != "none":
        return torch.tensor(0.75, dtype=torch.float64)
    g = torch.linspace(-1.5, 2.0, n, dtype=torch.float64)
    if variant == "nan_grad" and n:
        g[0] = math.nan
    if variant == "inf_grad" and n:
        g[0] = INF
    return g


def _kwargs(case, labels):
    (op, div), n, v, dtype, temp, variant, red = case
    kw = dict(temperature=temp, reduction=red)
    if op == "kd_loss":
        kw.update(divergence=div, beta=0.3 if div == "jsd" else 0.5)
    if labels is not None:
        kw.update(labels=labels, hard_weight=0.5, soft_weight=0.7)
    return kw


def _reduce(rows, labels, reduction, v):
    """The reductions, written here apart from ptcore's own helper."""
    if reduction == "none":
        return rows
    total = rows.sum()
    counted = rows.shape[0] if labels is None else int((labels != -100).sum())
    if reduction == "sum":
        return total
    return total / (max(counted, 1) * (v if reduction == "mean" else 1))


def _run_reference(case, s, t, labels):
    (op, div), n, v, dtype, temp, variant, red = case
    x = s.clone().requires_grad_()
    kw = _kwargs(case, labels)
    hard, soft = kw.get("hard_weight", 0.0), kw.get("soft_weight", 1.0)
    if op == "kd_loss":
        rows = reference.kd_loss_rows(x, t, labels, temp, div, kw["beta"], hard, soft, -100, True)
    else:
        values, indices = _topk_teacher(t, case)
        rows = reference.kd_loss_topk_rows(x, values, indices, labels, temp, hard, soft, -100, True)
    loss = _reduce(rows, labels, red, v)
    (loss * _upstream(case, n)).sum().backward()
    return loss.detach(), x.grad


def _run_native(case, s, t, labels, device):
    (op, div), n, v, dtype, temp, variant, red = case

    def place(x):
        x = x.to(dtype)
        if variant == "noncontig":  # rows at an odd offset: a misaligned base pointer
            wide = torch.zeros(x.shape[0], x.shape[1] + 1, dtype=dtype)
            wide[:, 1:] = x
            x = wide.to(device)[:, 1:]
            assert not x.is_contiguous()
            return x
        return x.to(device)

    x = place(s).requires_grad_()
    lab = labels.to(device) if labels is not None else None
    kw = _kwargs(case, lab)
    if op == "kd_loss":
        loss = ptcore.kd_loss(x, place(t), **kw)
    else:
        values, indices = _topk_teacher(t, case)
        loss = ptcore.kd_loss_topk(x, values.to(dtype).to(device), indices.to(device), **kw)
    assert loss.dtype == torch.float32
    (loss * _upstream(case, n).float().to(device)).sum().backward()
    assert x.grad.dtype == dtype
    return loss.detach().double().cpu(), x.grad.double().cpu()


def _finite_max(x):
    x = x[torch.isfinite(x)]
    return x.abs().max().item() if x.numel() else 0.0


def _loss_atol(case, s, t, labels):
    """One-millionth of the magnitudes each row's loss is made of (see the module doc)."""
    (op, div), n, v, dtype, temp, variant, red = case
    kw = _kwargs(case, labels)
    finite = _finite_max
    spread = (finite(s) + finite(t)) / temp
    mag = kw.get("soft_weight", 1.0) * temp ** 2 * (1 + math.log(v) + spread)
    mag += kw.get("hard_weight", 0.0) * (1 + math.log(v) + finite(s))
    if red in ("sum",):
        mag *= max(n, 1)
    if red == "mean":
        mag /= v
    return 1e-6 * mag


def _grad_atol(case, s, t, ref_grad, labels):
    """Each entry is c · (a difference of probabilities, each <= 1), c = upstream gradient ·
    (soft_weight · T + hard_weight) · the reduction's 1/count: float32 gets 1e-6 · c;
    half types also their rounding of the largest entry and their smallest subnormal."""
    (op, div), n, v, dtype, temp, variant, red = case
    kw = _kwargs(case, labels)
    up = _upstream(case, n)
    up = up[torch.isfinite(up)].abs().max().item() if torch.isfinite(up).any() else 0.0
    counted = n if labels is None else int((labels != -100).sum())
    per_row = {"none": 1.0, "sum": 1.0, "batchmean": 1 / max(counted, 1),
               "mean": 1 / (max(counted, 1) * v)}[red]
    c = up * per_row * (kw.get("soft_weight", 1.0) * temp + kw.get("hard_weight", 0.0))
    # Reverse KL and JSD weigh probabilities by log-probability differences.
    if div in ("reverse_kl", "jsd"):
        c *= 1 + math.log(v) + (_finite_max(s) + _finite_max(t)) / temp
    finite = ref_grad[torch.isfinite(ref_grad)]
    top = finite.abs().max().item() if finite.numel() else 0.0
    info = torch.finfo(dtype)
    half = 0.0 if dtype == torch.float32 else GRAD_RTOL[dtype] * top + info.tiny * info.eps
    return 1e-6 * c + half + 1e-30


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_parity(case, device):
    (op, div), n, v, dtype, temp, variant, red = case
    s, t, labels = _inputs(case)
    ref_loss, ref_grad = _run_reference(case, s, t, labels)
    loss, grad = _run_native(case, s, t, labels, device)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=_loss_atol(case, s, t, labels),
                               equal_nan=True)
    if variant == "inf_grad" and n:
        # Expected to differ: an infinite gradient on row 0's loss has no meaningful gradient
        # for its logits. The reference's autograd gives a mix of ±inf and NaN (inf - inf in
        # the softmax backward); ptcore gives NaN for the whole row. Both are non-finite.
        assert not torch.isfinite(ref_grad[0]).any() and torch.isnan(grad[0]).all()
        grad, ref_grad = grad[1:], ref_grad[1:]
    torch.testing.assert_close(grad, ref_grad, rtol=GRAD_RTOL[dtype],
                               atol=_grad_atol(case, s, t, ref_grad, labels), equal_nan=True)


def test_sweep_covers_the_issue_grid():
    """The grid the sweep promises: every V and N, dtype, temperature and variant."""
    assert {c[2] for c in CASES} >= set(VS) and {c[1] for c in CASES} >= set(NS) - {4099} | {4099}
    assert {c[3] for c in CASES} == set(DTYPES) and {c[4] for c in CASES} >= set(TEMPS)
    assert {c[5] for c in CASES} >= set(VARIANTS) and {c[6] for c in CASES} == set(REDUCTIONS)
    assert {c[0] for c in CASES} == {("kd_loss", d) for d in DIVS} | {("topk", None)}


def _bad_calls():
    """(name, call(device), exception): every data-dependent or argument check."""
    def kd(kw):
        def call(dev):
            s, t = torch.randn(4, 10, device=dev), torch.randn(4, 10, device=dev)
            return ptcore.kd_loss(s, t, **(kw(dev) if callable(kw) else kw))
        return call

    def topk(indices, values=None, **kw):
        def call(dev):
            s = torch.randn(3, 300, device=dev)
            i = torch.as_tensor(indices).to(dev)
            v = torch.randn(i.shape, device=dev) if values is None else values.to(dev)
            return ptcore.kd_loss_topk(s, v, i, **{k: f(dev) if callable(f) else f
                                                   for k, f in kw.items()})
        return call

    def labels(values):
        return lambda dev: torch.tensor(values, device=dev)

    repeat_big = torch.arange(3 * 200).reshape(3, 200) % 290  # K = 200 > 128, row 2 repeats
    repeat_big[0] = torch.randperm(290)[:200]
    repeat_big[1] = torch.randperm(290)[:200]
    repeat_big[2, 150] = repeat_big[2, 3]
    out_of_range = torch.stack([torch.arange(8), torch.arange(8), torch.arange(8)])
    out_of_range[1, 5] = 300
    negative = out_of_range.clone()
    negative[1, 5] = 1
    negative[2, 0] = -1

    def gather(indices):
        def call(dev):
            store = torch.randn(5, 16, device=dev)
            return ptcore.ops.gather_rows(store, None, torch.tensor(indices, device=dev))
        return call

    return [
        ("label_too_big_soft_only", kd(lambda d: dict(labels=labels([0, 1, 10, 2])(d))), ValueError),
        ("label_too_big_hard", kd(lambda d: dict(labels=labels([0, 1, 10, 2])(d), hard_weight=1.0)),
         ValueError),
        ("label_negative", kd(lambda d: dict(labels=labels([0, -3, 1, -100])(d))), ValueError),
        ("topk_repeat_small_k", topk([[1, 2, 3], [4, 4, 5], [6, 7, 8]]), ValueError),
        ("topk_repeat_k200", topk(repeat_big), ValueError),
        ("topk_out_of_range", topk(out_of_range), ValueError),
        ("topk_negative", topk(negative), ValueError),
        ("topk_label_out_of_range", topk(torch.arange(24).reshape(3, 8),
                                         labels=labels([0, 300, 1]), hard_weight=0.5),
         ValueError),
        ("gather_too_big", gather([0, 4, 5, 1]), IndexError),
        ("gather_negative", gather([0, -1]), IndexError),
        ("labels_float", kd(lambda d: dict(labels=torch.zeros(4, device=d))), TypeError),
        ("labels_wrong_shape", kd(lambda d: dict(labels=labels([0, 1])(d))), ValueError),
        ("teacher_other_shape", lambda d: ptcore.kd_loss(torch.randn(4, 10, device=d),
                                                        torch.randn(4, 11, device=d)), ValueError),
        ("teacher_other_dtype", lambda d: ptcore.kd_loss(
            torch.randn(4, 10, device=d), torch.randn(4, 10, device=d, dtype=torch.float16)),
         TypeError),
        ("integer_logits", lambda d: ptcore.kd_loss(torch.ones(4, 10, dtype=torch.long, device=d),
                                                   torch.ones(4, 10, dtype=torch.long, device=d)),
         TypeError),
        ("topk_k_above_v", lambda d: ptcore.kd_loss_topk(
            torch.randn(2, 5, device=d), torch.randn(2, 6, device=d),
            torch.arange(6, device=d).repeat(2, 1)), ValueError),
        ("gather_int8_without_scales", lambda d: ptcore.ops.gather_rows(
            torch.zeros(3, 4, dtype=torch.int8, device=d), None, torch.tensor([0], device=d)),
         ValueError),
        ("temperature_zero", kd(dict(temperature=0.0)), ValueError),
        ("beta_one", kd(dict(divergence="jsd", beta=1.0)), ValueError),
        ("hard_weight_nan", kd(dict(hard_weight=math.nan)), ValueError),
    ]


BAD = _bad_calls()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,call,exc", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_the_same_error_everywhere(name, call, exc, device):
    torch.manual_seed(0)
    with pytest.raises(exc) as cpu_error:
        call("cpu")
    if name.startswith("topk_repeat_k200"):
        assert "row 2" in str(cpu_error.value)
    if device == "cpu":
        return
    torch.manual_seed(0)
    with pytest.raises(exc) as dev_error:
        call(device)
    assert str(dev_error.value).splitlines()[0] == str(cpu_error.value).splitlines()[0]
    # The CUDA context survives: the next op runs and is right.
    s, t = torch.randn(3, 7, device=device), torch.randn(3, 7, device=device)
    torch.testing.assert_close(ptcore.kd_loss(s, t).cpu(), reference.kd_loss(s.cpu(), t.cpu()))


def test_input_checks_switch_is_per_thread_in_a_block_and_per_process_otherwise():
    import threading

    from ptcore.ops.checks import input_checks_enabled

    assert input_checks_enabled()
    seen = {}
    entered, release = threading.Event(), threading.Event()

    def other():
        entered.wait(10)
        seen["other"] = input_checks_enabled()
        release.set()

    worker = threading.Thread(target=other)
    worker.start()
    with ptcore.input_checks(False):
        assert not input_checks_enabled()
        entered.set()
        release.wait(10)
    worker.join(10)
    assert seen["other"] and input_checks_enabled()
    previous = ptcore.set_input_checks(False)
    try:
        assert previous and not input_checks_enabled()
        with ptcore.input_checks(True):
            assert input_checks_enabled()
        assert not input_checks_enabled()
    finally:
        ptcore.set_input_checks(True)
    with pytest.raises(TypeError):
        ptcore.set_input_checks(1)
