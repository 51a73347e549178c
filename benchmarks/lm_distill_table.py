"""One distillation training step of a Hugging Face causal LM, the way a user would otherwise
write it against ptcore's: step time and peak memory per token, side by side in one process.

Providers (teacher forward under no_grad + student forward + loss + backward, T = 2):
  hf-kl       the models' own logits (``model(...).logits``, what a Trainer.compute_loss
              override gets) and a forward KL by F.kl_div, × T²
  trl-gkd     the same logits into TRL's GKD loss (GKDTrainer.generalized_jsd_loss, β = 0.5)
  ptcore-kl   ptcore.integrations.hf.LMDistillLoss, forward KL (no [tokens, V] logits)
  ptcore-jsd  the same with divergence="jsd", β = 0.5 (TRL's setting)
Liger-Kernel's fused linear JSD is Triton (CUDA only): on a GPU it is what the fused op was
measured against (fused_linear_table.py --liger); here a line says why it is not run.

Tiny Llama-family models built from configs (student H = 256, teacher H = 384, 2 layers,
V = 32000 by default, random weights: the cost of the head and the loss, not of the model,
is the point), batches of --batch sequences of --length tokens. Time: median of --rounds
after a warm-up, the providers in a fresh random order each round. Memory: the peak tensor
bytes allocated during one step above what was allocated before it (fused_linear_cases.
peak_bytes: CUDA's allocator peak, or the CPU profiler's memory events), parameter
gradients included (the same for every provider).

    PYTHONPATH=. python benchmarks/lm_distill_table.py --shape small medium
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fused_linear_cases import liger_available, peak_bytes  # noqa: E402

# name -> (sequences, length): 2,046 and 8,184 predicted tokens
SHAPES = {"small": (2, 1024), "medium": (8, 1024)}
PROVIDERS = ("hf-kl", "trl-gkd", "ptcore-kl", "ptcore-jsd")
PAIRS = (("ptcore-kl", "hf-kl"), ("ptcore-jsd", "trl-gkd"))
T = 2.0
MiB = 2 ** 20


def model(hidden: int, vocab: int, length: int, seed: int):
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=length, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.LlamaForCausalLM(config)


def steps(student, teacher) -> dict:
    """provider -> step(ids): one forward + backward, returning the loss."""
    from ptcore.integrations.hf import LMDistillLoss

    def logits(ids):
        s = student(input_ids=ids).logits[:, :-1]
        with torch.no_grad():
            t = teacher(input_ids=ids).logits[:, :-1]
        return s, t

    def hf_kl(ids):
        s, t = logits(ids)
        return F.kl_div(F.log_softmax(s / T, -1).flatten(0, 1), F.log_softmax(t / T, -1)
                        .flatten(0, 1), log_target=True, reduction="batchmean") * T * T

    def trl_gkd(ids):
        from trl.experimental.gkd import GKDTrainer

        s, t = logits(ids)
        return GKDTrainer.generalized_jsd_loss(s, t, labels=ids[:, 1:], beta=0.5,
                                               temperature=T)

    kl = LMDistillLoss(student, teacher, temperature=T)
    jsd = LMDistillLoss(student, teacher, temperature=T, divergence="jsd", beta=0.5)
    fns = {"hf-kl": hf_kl, "trl-gkd": trl_gkd, "ptcore-kl": kl, "ptcore-jsd": jsd}

    def run(name):
        def step(ids):
            student.zero_grad(set_to_none=True)
            loss = fns[name](ids)
            loss.backward()
            return loss.detach()
        return step

    return {name: run(name) for name in fns}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(shape: str, vocab: int, rounds: int, providers, device, seed: int = 0) -> dict:
    b, length = SHAPES[shape]
    student = model(256, vocab, length, seed).to(device).train()
    teacher = model(384, vocab, length, seed + 1).to(device).eval()
    ids = torch.randint(3, vocab, (b, length), generator=torch.Generator().manual_seed(seed))
    ids = ids.to(device)
    tokens = b * (length - 1)
    fns = steps(student, teacher)
    out = {p: {"tokens": tokens, "times": []} for p in providers}
    for p in providers:  # warm-up, and the loss each gives
        out[p]["loss"] = float(fns[p](ids))
    order = list(providers)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for p in order:
            _sync(device)
            began = time.perf_counter()
            fns[p](ids)
            _sync(device)
            out[p]["times"].append(time.perf_counter() - began)
    for p in providers:
        out[p]["s"] = statistics.median(out[p]["times"])
        out[p]["peak_mib"] = peak_bytes(lambda: fns[p](ids), device)[0] / MiB
    return out


def table(results: dict, vocab: int) -> str:
    lines = ["| shape | provider | step (s) | peak MiB | KiB / token | time vs pair | "
             "memory vs pair |", "|---|---|---:|---:|---:|---:|---:|"]
    pair = {a: b for a, b in PAIRS}
    for shape, rows in results.items():
        for p, r in rows.items():
            other = rows.get(pair.get(p))
            vs = (f"{r['s'] / other['s']:.2f}× {pair[p]}", f"1/{other['peak_mib'] / r['peak_mib']:.1f}"
                  ) if other else ("", "")
            lines.append(f"| {shape} ({r['tokens']} tok × {vocab}) | {p} | {r['s']:.2f} | "
                         f"{r['peak_mib']:.0f} | {r['peak_mib'] * 1024 / r['tokens']:.1f} | "
                         f"{vs[0]} | {vs[1]} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs="+", default=["small", "medium"], choices=SHAPES)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}")
    why_not = liger_available() if device.type == "cuda" else "Liger-Kernel is Triton, CUDA only"
    print(f"liger: {'not run: ' + why_not if why_not else 'see fused_linear_table.py --liger'}")
    results = {}
    for shape in args.shape:
        results[shape] = measure(shape, args.vocab, args.rounds, args.providers, device)
        for name, r in results[shape].items():
            print(f"{shape} {name:11s} loss {r['loss']:.5f} step {r['s']:.3f} s "
                  f"(rounds {', '.join(f'{t:.2f}' for t in r['times'])}) "
                  f"peak {r['peak_mib']:.0f} MiB", flush=True)
    print(table(results, args.vocab))


if __name__ == "__main__":
    main()
