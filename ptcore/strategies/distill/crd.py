"""The term "crd": contrastive representation distillation (Tian, Krishnan & Isola, ICLR 2020,
"Contrastive Representation Distillation"). The student's and the teacher's penultimate
embeddings each go through a trained linear head to ``crd_dim`` dimensions and are
L2-normalised; a memory bank per side keeps one such embedding per training sample
(``bank ← normalise(m·bank + (1 − m)·new)``, ``crd_momentum`` m). Each sample's student
embedding is contrasted with the teacher bank's row of the same sample (the positive)
against ``crd_negatives`` rows of other samples drawn uniformly from that bank, and the
teacher's embedding likewise against the student bank, at temperature ``crd_temperature``:
by the paper's NCE loss with the critic exp(s·t/τ)/Z (Z estimated on the first batch, then
fixed), or, with ``crd_objective="infonce"``, by the softmax cross-entropy over the
positive and the negatives (CMC's NCESoftmaxLoss). The heads and banks are one module
trained with the student (:meth:`Term.attach`): optimised, checkpointed and resumed with it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ptcore._kd_args import check_float
from ptcore.runtime import distributed as D
from ptcore.strategies.distill.terms import Option, Step, Term, register

__all__ = ["CRD", "ContrastMemory", "contrast_indices", "bank_scores", "nce_loss",
           "infonce_loss", "update_bank"]

OBJECTIVES = ("nce", "infonce")
EPS = 1e-7  # the paper code's, in the NCE's denominators


def contrast_indices(index: torch.Tensor, num_samples: int, negatives: int) -> torch.Tensor:
    """``[B, 1 + K]``: each row's own index (the positive), then K indices drawn uniformly,
    with replacement, from the other ``num_samples - 1`` samples (torch's generator of
    ``index``'s device, saved in checkpoints)."""
    drawn = torch.randint(num_samples - 1, (len(index), negatives), device=index.device)
    drawn = drawn + (drawn >= index[:, None]).long()  # skip the positive
    return torch.cat([index[:, None], drawn], 1)


def nce_loss(scores: torch.Tensor, z: torch.Tensor, num_samples: int) -> torch.Tensor:
    """The paper's NCE loss of scores s·t/τ ``[B, 1 + K]`` (column 0 the positive): with
    P = exp(score)/Z and the noise probability K/N of a uniform draw,
    −mean over rows of [log P₊/(P₊ + K/N) + Σ log (K/N)/(P₋ + K/N)]."""
    p = scores.exp() / z
    noise = (scores.shape[1] - 1) / num_samples
    positive = (p[:, 0] / (p[:, 0] + noise + EPS)).log()
    negative = (noise / (p[:, 1:] + noise + EPS)).log().sum(1)
    return -(positive + negative).mean()


def infonce_loss(scores: torch.Tensor) -> torch.Tensor:
    """−mean log softmax(scores)[0]: the positive against the negatives."""
    return F.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long,
                                               device=scores.device))


def bank_scores(bank: torch.Tensor, contrast: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``[B, 1 + K]``: ``bank[contrast[b, k]] · e[b]``. Where the bank is at most 16× the rows
    drawn, one product with the whole bank and a gather beats gathering B·(1 + K) bank rows
    (a GEMM against a memory-bound copy and B small products); the backward keeps a copy of
    the bank (no more memory than the gathered rows from batches of 16 on), which the update
    after the step may change in place."""
    if len(bank) <= 16 * contrast.shape[1]:
        return (e @ bank.to(e.dtype, copy=True).t()).gather(1, contrast)
    rows = bank.index_select(0, contrast.flatten()).view(*contrast.shape, -1)
    return torch.bmm(rows.to(e.dtype), e[:, :, None]).squeeze(2)


@torch.no_grad()
def update_bank(bank: torch.Tensor, index: torch.Tensor, new: torch.Tensor,
                momentum: float) -> None:
    """``bank[index] ← normalise(momentum·bank[index] + (1 − momentum)·new)``, in place."""
    rows = bank[index] * momentum + new.to(bank.dtype) * (1 - momentum)
    bank.index_copy_(0, index, F.normalize(rows, dim=1))


class ContrastMemory(nn.Module):
    """The two embedding heads (linear, ``student_dim``/``teacher_dim`` → ``dim``) and the two
    memory banks ``[num_samples, dim]`` (buffers, so checkpoints carry them), initialised
    as the paper's code does (uniform in ±1/√(dim/3), ~unit norm); ``z`` holds the NCE's
    normalisers (student side, teacher side), 0 until the first batch sets them."""

    def __init__(self, student_dim: int, teacher_dim: int, dim: int, num_samples: int,
                 seed: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed_student = nn.Linear(student_dim, dim)
            self.embed_teacher = nn.Linear(teacher_dim, dim)
            bound = 1 / (dim / 3) ** 0.5
            self.register_buffer("bank_student",
                                 torch.rand(num_samples, dim) * 2 * bound - bound)
            self.register_buffer("bank_teacher",
                                 torch.rand(num_samples, dim) * 2 * bound - bound)
        self.register_buffer("z", torch.zeros(2))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor):
        """Normalised embeddings of the student's and the teacher's features (in the heads'
        dtype; the teacher's carry no gradient back to it)."""
        dtype = self.embed_student.weight.dtype
        return (F.normalize(self.embed_student(student.flatten(1).to(dtype)), dim=1),
                F.normalize(self.embed_teacher(teacher.detach().flatten(1).to(dtype)), dim=1))


def _layers(value, name: str):
    """None, or one (student layer, teacher layer) pair: "student.path:teacher.path" or
    ``("student.path", "teacher.path")`` (alone or as a one-item list)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    pair = tuple(value.split(":")) if isinstance(value, str) else \
        tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(pair) != 2 or not all(isinstance(p, str) and p for p in pair):
        raise ValueError(f"{name} must be None or one (student layer, teacher layer) pair, "
                         f"'student.path:teacher.path', got {value!r}")
    return pair


def _positive(value, name: str) -> float:
    return check_float(value, name, positive=True)


def _nonneg(value, name: str) -> float:
    return check_float(value, name, nonneg=True)


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _momentum(value, name: str) -> float:
    if not 0.0 <= check_float(value, name) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def _objective(value, name: str) -> str:
    if value not in OBJECTIVES:
        raise ValueError(f"{name} must be one of {OBJECTIVES}, got {value!r}")
    return value


class _Tap:
    """Keeps the latest input (``of_input``) or output of ``module``, flattened."""

    def __init__(self, module: nn.Module, of_input: bool):
        self.value = None
        self.handle = module.register_forward_hook(self._keep)
        self.of_input = of_input

    def _keep(self, module, args, output):
        self.value = (args[0] if self.of_input else output).flatten(1)


def _tap(model: nn.Module, path: str | None, what: str) -> _Tap:
    """The output of the layer at ``path``, or (None) the input of the last nn.Linear."""
    if path is not None:
        try:
            return _Tap(model.get_submodule(path), of_input=False)
        except AttributeError as e:
            raise ValueError(f"crd_layers: the {what} has no layer {path!r} ({e})") from None
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"crd: the {what} has no nn.Linear whose input is its penultimate "
                         "embedding; name the layers with crd_layers='student.path:"
                         "teacher.path'")
    return _Tap(linear[-1], of_input=True)


def _all_gather(t: torch.Tensor) -> torch.Tensor:
    """``t`` from every process, concatenated (itself when not distributed)."""
    if not D.is_distributed():
        return t
    out = t.new_empty((D.world_size() * len(t), *t.shape[1:]))
    # all_gather_single: torch 2.14's name (all_gather_into_tensor warns there)
    dist = torch.distributed
    getattr(dist, "all_gather_single", dist.all_gather_into_tensor)(out, t.contiguous())
    return out


@register
class CRD(Term):
    name, kind = "crd", "contrast"
    help = ("contrastive representation distillation of the penultimate embeddings with a "
            "memory bank (crd_weight, crd_dim, crd_negatives, crd_temperature, crd_momentum, "
            "crd_objective, crd_layers)")
    options = {"crd_weight": Option(0.8, _nonneg), "crd_dim": Option(128, _count),
               "crd_negatives": Option(4096, _count),
               "crd_temperature": Option(0.07, _positive),
               "crd_momentum": Option(0.5, _momentum),
               "crd_objective": Option("nce", _objective),
               "crd_layers": Option(None, _layers)}
    index = True

    def __init__(self, setup, options):
        super().__init__(setup, options)
        self.memory: ContrastMemory | None = None
        self.taps: list[_Tap] = []
        self.fixed_z = False  # Z known (set, or restored from a checkpoint) this fit

    def check(self) -> None:
        if self.setup.mode == "offline":
            raise ValueError("crd reads the teacher's penultimate embedding every step, so it "
                             "needs mode='online'")

    def attach(self, student, teacher, probe, num_samples, seed):
        if num_samples < 2:
            raise ValueError("crd contrasts each sample with others: it needs at least 2 "
                             "training samples")
        layers = self.options["crd_layers"] or (None, None)
        self.taps = [_tap(student, layers[0], "student"), _tap(teacher, layers[1], "teacher")]
        self.fixed_z = False
        m = self.memory
        if m is None or len(m.bank_student) != num_samples:
            probe()
            dims = [tap.value.shape[1] for tap in self.taps]
            if m is None:
                m = ContrastMemory(*dims, self.options["crd_dim"], num_samples, seed)
            else:  # other data: the heads go on, the banks start afresh
                fresh = ContrastMemory(*dims, self.options["crd_dim"], num_samples, seed)
                m.bank_student, m.bank_teacher = fresh.bank_student, fresh.bank_teacher
                m.z.zero_()
            self.memory = m
        return m

    def detach(self) -> None:
        for tap in self.taps:
            tap.handle.remove()
        self.taps = []

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        m, opt = self.memory, self.options
        n = len(m.bank_student)
        with torch.autocast(step.logits.device.type, enabled=False):
            e_s, e_t = m(self.taps[0].value, self.taps[1].value)
            contrast = contrast_indices(step.index, n, min(opt["crd_negatives"], n - 1))
            tau = opt["crd_temperature"]
            # the student against the teacher bank, the teacher against the student bank
            s_scores = bank_scores(m.bank_teacher, contrast, e_s) / tau
            t_scores = bank_scores(m.bank_student, contrast, e_t) / tau
            if opt["crd_objective"] == "infonce":
                contrastive = infonce_loss(s_scores) + infonce_loss(t_scores)
            else:
                if not self.fixed_z:  # the paper's Z = N·mean exp(score) of the first batch
                    with torch.no_grad():
                        first = torch.stack([s_scores.exp().mean(), t_scores.exp().mean()])
                        first = D.all_sum(first * n) / D.world_size()
                        m.z.copy_(torch.where(m.z > 0, m.z, first))
                    self.fixed_z = True
                contrastive = nce_loss(s_scores, m.z[0], n) + nce_loss(t_scores, m.z[1], n)
            index = _all_gather(step.index)
            update_bank(m.bank_student, index, _all_gather(e_s.detach()), opt["crd_momentum"])
            update_bank(m.bank_teacher, index, _all_gather(e_t.detach()), opt["crd_momentum"])
        return {"loss": opt["crd_weight"] * contrastive, "crd": contrastive.detach()}
