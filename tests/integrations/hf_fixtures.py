"""Tiny Hugging Face causal LMs built from configs (random weights, a few layers), a BPE
tokenizer trained on the spot, and text from the Python standard library's docstrings:
everything offline."""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="the 'hf' extra is not installed: pip install 'ptcore[hf]'")
tokenizers = pytest.importorskip("tokenizers", reason="the 'hf' extra is not installed")

from ptcore.data.text import stdlib_text  # noqa: F401  (the tests read it from here)


def bpe_tokenizer(text: str, vocab: int = 384):
    """A byte-level BPE tokenizer trained on ``text`` (with <pad>, <eos>, <unk>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<pad>", "<eos>", "<unk>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


def tiny(family: str, vocab: int, *, seed: int = 0, hidden: int = 32, layers: int = 2,
         **overrides):
    """A randomly initialised causal LM of ``family``, without dropout (llama: untied head;
    qwen2: tied embeddings; gpt2: tied, learned positions; phi: a head with bias; cohere: a
    logit scale; gemma2: logit soft-capping)."""
    t = transformers
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=256,
                  pad_token_id=0, bos_token_id=1, eos_token_id=1)
    configs = {
        "llama": lambda: t.LlamaConfig(**common, num_key_value_heads=2),
        "qwen2": lambda: t.Qwen2Config(**common, num_key_value_heads=2, tie_word_embeddings=True),
        "gpt2": lambda: t.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=4,
                                     n_positions=256, bos_token_id=1, eos_token_id=1,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        "phi": lambda: t.PhiConfig(**common, resid_pdrop=0.0, embd_pdrop=0.0),
        "cohere": lambda: t.CohereConfig(**common, logit_scale=0.5),
        "gemma2": lambda: t.Gemma2Config(**common, head_dim=8),
    }
    classes = {"llama": t.LlamaForCausalLM, "qwen2": t.Qwen2ForCausalLM,
               "gpt2": t.GPT2LMHeadModel, "phi": t.PhiForCausalLM,
               "cohere": t.CohereForCausalLM, "gemma2": t.Gemma2ForCausalLM}
    config = configs[family]()
    for k, v in overrides.items():
        setattr(config, k, v)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = classes[family](config)
    return model.eval()


def token_windows(tokenizer, text: str, length: int) -> torch.Tensor:
    """Non-overlapping windows ``[M, length]`` of the tokenized ``text``."""
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    m = ids.numel() // length
    return ids[:m * length].reshape(m, length)


def store_case():
    """(teacher, tokenizer, windows [24, 32]) of the teacher-store tests, the same in every
    process."""
    text = stdlib_text(("json", "textwrap"))
    tokenizer = bpe_tokenizer(text, vocab=320)
    return (tiny("qwen2", len(tokenizer), seed=3), tokenizer,
            token_windows(tokenizer, text, 32)[:24])


@contextmanager
def no_logits(*models, probe: int = 8):
    """Fail if any model's lm_head runs on more than ``probe`` positions (the one-off check
    of ptcore.integrations.hf.CausalLM): the [tokens, V] logits are never made."""
    def fail(_module, args, _out):
        rows = args[0].shape[:-1].numel()
        assert rows <= probe, f"lm_head ran on {rows} positions: the logits were materialised"
    hooks = [m.get_output_embeddings().register_forward_hook(fail) for m in models]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def trainer_case():
    """(student, teacher, tokenizer, 4 tokenised sequences of different lengths) of the
    Trainer tests, the same in every process."""
    text = stdlib_text(("json",))
    tokenizer = bpe_tokenizer(text, vocab=320)
    data = [tokenizer(text[a:a + n]) for a, n in ((0, 90), (500, 40), (900, 160), (1500, 60))]
    V = len(tokenizer)
    return tiny("llama", V, seed=1), tiny("llama", V, seed=2, hidden=48), tokenizer, data
