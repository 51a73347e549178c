"""What the fused loss needs of a Hugging Face causal LM: its last hidden states, computed by
its base model so that ``lm_head`` never runs, and the ``lm_head`` weight and bias (the
embedding matrix itself where they are tied), with the constant factor some families put on
their logits. Families whose logits are not an affine map of the last hidden state are
refused, and a one-off probe of 8 positions checks the rest against the model's own logits."""
from __future__ import annotations

import torch

from ptcore.cache.build import inference
from ptcore.errors import UserError

__all__ = ["CausalLM", "UnsupportedModelError", "VocabularyMismatchError",
           "check_same_vocabulary", "teacher_rows", "vocabulary_size"]

# config attribute -> factor on the logits, from its value (model families that scale them)
_SCALES = {
    "logit_scale": lambda v: v,              # Cohere: logits * logit_scale
    "logits_scaling": lambda v: 1.0 / v,     # Granite: logits / logits_scaling
    "lm_head_multiplier": lambda v: v,       # Falcon-H1: lm_head(h) * lm_head_multiplier
}
# config attribute -> what it does to the logits that no linear head can reproduce
_REFUSED = {"final_logit_softcapping": "tanh soft-capping of the logits (Gemma 2 and later)"}
_PROBE = 8  # positions the construction-time check runs the model's own head on


class UnsupportedModelError(UserError, ValueError):
    """A model whose logits the fused loss cannot compute from its last hidden state."""


class VocabularyMismatchError(UserError, ValueError):
    """A teacher and a student that do not share one tokenizer vocabulary."""


def _configs(model):
    config = model.config
    return [c for c in (config, getattr(config, "text_config", None)) if c is not None]


def _logit_scale(model) -> float:
    scale = 1.0
    for config in _configs(model):
        for name, why in _REFUSED.items():
            if getattr(config, name, None) is not None:
                raise UnsupportedModelError(
                    f"{type(model).__name__} applies {why} ({name}="
                    f"{getattr(config, name)}): ptcore's fused loss computes logits as "
                    "lm_head(hidden state) and cannot apply it; distil this family with "
                    "materialised logits instead")
        for name, factor in _SCALES.items():
            value = getattr(config, name, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scale *= float(factor(value))
    return scale


class CausalLM:
    """A ``transformers`` causal LM (``AutoModelForCausalLM``) seen as last hidden states +
    a linear head. ``hidden(input_ids, attention_mask)`` is ``[B, L, H]``, already multiplied
    by the family's logit factor, so that ``hidden @ weight.T + bias`` are the model's logits.
    ``check``: compare that with the model's own logits on a probe of 8 positions once
    (the only time its ``lm_head`` runs); a mismatch is refused, naming the model class."""

    def __init__(self, model: torch.nn.Module, *, check: bool = True):
        if isinstance(model, torch.nn.parallel.DistributedDataParallel) or not hasattr(
                model, "base_model"):
            raise UnsupportedModelError(
                f"expected an unwrapped transformers causal LM (AutoModelForCausalLM), got "
                f"{type(model).__name__}; DDP/FSDP-wrapped models are not supported yet")
        head = model.get_output_embeddings()
        if not isinstance(getattr(head, "weight", None), torch.Tensor) or head.weight.dim() != 2:
            raise UnsupportedModelError(f"{type(model).__name__} has no linear output head "
                                        "(get_output_embeddings() with a [V, H] weight)")
        self.model, self.head = model, head
        self.scale = _logit_scale(model)
        if check:
            self._check()

    @property
    def weight(self) -> torch.Tensor:
        return self.head.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.head, "bias", None)

    @property
    def vocab_size(self) -> int:
        return self.head.weight.shape[0]

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
               ) -> torch.Tensor:
        out = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                    use_cache=False)
        h = out[0]
        return h if self.scale == 1.0 else h * self.scale

    def hidden_through(self, wrapper: torch.nn.Module, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`hidden`, computed by calling ``wrapper`` (the model wrapped by DDP), so that
        the wrapper sees the forward it must (DDP readies its gradient all-reduce there). The
        wrapped model's head runs on the last position only (``logits_to_keep=1``); the base
        model's output is taken by a forward hook."""
        seen = []
        hook = self.model.base_model.register_forward_hook(
            lambda module, args, out: seen.append(out[0]))
        try:
            wrapper(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                    logits_to_keep=1)
        finally:
            hook.remove()
        if len(seen) != 1:
            raise UnsupportedModelError(f"{type(self.model).__name__}'s forward ran its base "
                                        f"model {len(seen)} times, expected once")
        return seen[0] if self.scale == 1.0 else seen[0] * self.scale

    def _check(self) -> None:
        device = self.weight.device
        ids = torch.arange(min(_PROBE, self.vocab_size), device=device)[None]
        with inference(self.model):
            theirs = self.model(input_ids=ids).logits.double()
            h = self.hidden(ids)
            ours = torch.nn.functional.linear(h, self.weight, self.bias).double()
        exact = self.weight.dtype in (torch.float32, torch.float64)
        tol = (1e-4 if exact else 2e-2) * (1.0 + float(theirs.abs().max()))
        if theirs.shape != ours.shape or float((theirs - ours).abs().max()) > tol:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}'s logits are not lm_head(last hidden state)"
                + (f" × {self.scale}" if self.scale != 1.0 else "")
                + " (checked on a probe of 8 positions): this family transforms them in a "
                "way ptcore does not know, so the fused loss would train against other "
                "logits; pass check=False only if you know the difference is benign")


def _id_to_token(tokenizer) -> dict[int, str]:
    vocab = tokenizer if isinstance(tokenizer, dict) else tokenizer.get_vocab()
    return {int(i): str(t) for t, i in vocab.items()}


def check_same_vocabulary(teacher_tokenizer, student_tokenizer) -> int:
    """Refuse a teacher and a student whose tokenizers map some id to different tokens (or
    one has an id the other lacks), naming the first such id; returns the vocabulary's size.
    Either may be a tokenizer or its ``get_vocab()`` dict. Distillation across tokenizers is
    out of scope: the two models' rows of ``lm_head`` must mean the same tokens."""
    t, s = _id_to_token(teacher_tokenizer), _id_to_token(student_tokenizer)
    for i in sorted(set(t) | set(s)):
        if t.get(i) != s.get(i):
            raise VocabularyMismatchError(
                f"the teacher's and the student's tokenizers differ first at token id {i}: "
                f"{t.get(i, '<none>')!r} for the teacher, {s.get(i, '<none>')!r} for the "
                f"student ({len(t)} and {len(s)} tokens); ptcore distils between models that "
                "share one tokenizer (cross-tokenizer distillation is out of scope)")
    return len(t)


def teacher_rows(teacher: CausalLM, student_vocab: int, vocab_size: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's head restricted to the real vocabulary: ``vocab_size`` rows (the shared
    tokenizer's size) when given, else the student's ``student_vocab``. Heads padded beyond
    it (e.g. Qwen's, rounded up to a multiple of 128; no token id reaches the extra rows)
    are accepted on either side: the teacher loses its extra rows, and its softmax is taken
    over the real ones. Refused, as real mismatches: a teacher with fewer rows than that, or
    a student head smaller than ``vocab_size``."""
    w, b = teacher.weight, teacher.bias
    vocab = student_vocab if vocab_size is None else vocab_size
    if vocab_size is not None and vocab_size > student_vocab:
        raise VocabularyMismatchError(
            f"the student's lm_head has {student_vocab} rows, fewer than the vocabulary's "
            f"{vocab_size} tokens: some token ids have no row")
    if w.shape[0] < vocab:
        who = "the student's" if vocab_size is None else "the vocabulary's"
        raise VocabularyMismatchError(
            f"the teacher's lm_head has {w.shape[0]} rows, fewer than {who} {vocab}: the "
            "rows beyond it would have no target (a student padded larger than its teacher "
            "needs vocab_size, the tokenizer's size)")
    if w.shape[0] > vocab:
        w, b = w[:vocab], None if b is None else b[:vocab]
    return w, b


def vocabulary_size(tokenizer) -> int:
    """The rows a head needs for ``tokenizer``: its largest token id + 1."""
    return max(int(i) for i in tokenizer.get_vocab().values()) + 1
