"""Distil a small causal language model into a smaller one from a cached top-k teacher.

Text: the docstrings of Python's own standard library (nothing downloaded), as bytes
(a 256-token vocabulary). A teacher transformer, randomly initialised, is first trained on
all the training text; its top-k log-probabilities for every token are cached once
(ptcore.strategies.sequence_distill.cache_teacher, a FeatureCache); then the same smaller
student is trained twice on a small share of the text, from the labels alone and with
the cached teacher through ptcore.fused_linear_kd_loss (tail bucket on), and both are
scored by next-token cross-entropy on held-out text.

    PYTHONPATH=. python examples/distill_lm.py            # about a minute on a laptop CPU
    PYTHONPATH=. python examples/distill_lm.py --tiny     # seconds (what the test runs)
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn as nn

from ptcore.data.text import stdlib_text
from ptcore.strategies.sequence_distill import cache_teacher, next_token_loss, train_student

MODULES = ("argparse", "collections", "functools", "itertools", "json", "pathlib", "re",
           "string", "textwrap", "typing", "inspect", "dataclasses", "unittest", "logging")


def windows(text: str, context: int) -> torch.Tensor:
    """Non-overlapping byte windows [M, context + 1] (inputs and their next tokens)."""
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
    m = (data.numel() - 1) // context
    return torch.stack([data[i * context:i * context + context + 1] for i in range(m)])


class TinyLM(nn.Module):
    """A pre-norm causal transformer: ``hidden_states(tokens)`` [B, L, dim], ``lm_head``."""

    def __init__(self, dim: int, layers: int, heads: int, context: int, vocab: int = 256):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
        block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm, self.lm_head = nn.LayerNorm(dim), nn.Linear(dim, vocab)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        L = tokens.shape[1]
        x = self.embed(tokens) + self.pos(torch.arange(L, device=tokens.device))
        mask = nn.Transformer.generate_square_subsequent_mask(L, device=tokens.device)
        return self.norm(self.blocks(x, mask=mask, is_causal=True))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.hidden_states(tokens))


SETTINGS = {  # (full run, --tiny)
    "context": (64, 32), "teacher_dim": (128, 64), "teacher_layers": (3, 2),
    "student_dim": (48, 32), "teacher_steps": (1500, 150), "student_steps": (600, 80),
    "student_windows": (256, 32), "k": (16, 8),
}


def run(tiny: bool = False, seed: int = 0) -> dict:
    cfg = {name: values[1 if tiny else 0] for name, values in SETTINGS.items()}
    torch.manual_seed(seed)
    data = windows(stdlib_text(MODULES), cfg["context"])
    n_val = max(16, data.shape[0] // 10)
    train, val = data[:-n_val], data[-n_val:]
    teacher = TinyLM(cfg["teacher_dim"], cfg["teacher_layers"], 4, cfg["context"])
    train_student(teacher, train, cache=None, steps=cfg["teacher_steps"], seed=seed)
    teacher.eval()
    few = train[torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))
                [:cfg["student_windows"]]]
    cache = cache_teacher(teacher, few, cfg["k"])
    result = {"teacher": next_token_loss(teacher, val), "tokens": int(data.numel()), **cfg}
    for name, teacher_cache in (("labels_only", None), ("kd", cache)):
        torch.manual_seed(seed + 1)  # the same student initialisation for both
        student = TinyLM(cfg["student_dim"], 1, 2, cfg["context"])
        train_student(student, few, cache=teacher_cache, steps=cfg["student_steps"],
                      seed=seed, temperature=1.0, soft_weight=1.0, hard_weight=1.0)
        result[name] = next_token_loss(student, val)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the seconds-long test settings")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.tiny, args.seed)
    print(json.dumps(result, indent=2))
    print(f"held-out cross-entropy (nats/byte): teacher {result['teacher']:.3f}, student "
          f"labels-only {result['labels_only']:.3f}, student with KD {result['kd']:.3f}")
    return result


if __name__ == "__main__":
    main()
