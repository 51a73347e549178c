"""Distil Hugging Face ``transformers`` causal LMs with ptcore's fused linear KD loss
(docs/llm.md): a loss adapter (:class:`LMDistillLoss`), a ``transformers.Trainer`` subclass
(:class:`DistillTrainer`) and a teacher store (the teacher's top-k per token, computed once,
memory-mapped: :func:`build_teacher_store`, :func:`open_teacher_store`). Needs the ``hf``
extra: ``pip install 'ptcore[hf]'``."""
try:
    import transformers  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("ptcore.integrations.hf needs the transformers library: "
                      "pip install 'ptcore[hf]'") from e

from ptcore.integrations.hf.loss import LMDistillLoss, held_out_loss, next_token_labels
from ptcore.integrations.hf.model import (CausalLM, UnsupportedModelError,
                                          VocabularyMismatchError, check_same_vocabulary,
                                          vocabulary_size)
from ptcore.integrations.hf.store import (TeacherStore, TeacherStoreError, build_teacher_store,
                                          open_teacher_store)
from ptcore.integrations.hf.trainer import DistillTrainer

__all__ = ["CausalLM", "DistillTrainer", "LMDistillLoss", "held_out_loss", "next_token_labels",
           "UnsupportedModelError", "VocabularyMismatchError", "check_same_vocabulary",
           "vocabulary_size", "TeacherStore", "TeacherStoreError", "build_teacher_store",
           "open_teacher_store"]
