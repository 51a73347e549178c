"""`ptcore distill-lm`: distil a Hugging Face causal LM into another that shares its
tokenizer, through the fused linear KD loss (no [tokens, vocab] logits), online (the teacher
runs beside the student) or offline (the teacher's top-k per token is computed once into a
store that later runs reuse without loading the teacher). Writes the run folder of the
other commands (run.json, last.pt, metrics.jsonl, summary.json) and the distilled student
under OUT/student, loadable with AutoModelForCausalLM.from_pretrained. Needs the hf extra."""
from ptcore.commands._run_folder import open_run_folder
from ptcore.commands.options import add_options

_LOOP = ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "momentum", "nesterov",
         "schedule", "amp", "num_workers", "device", "seed", "out", "resume", "overwrite",
         "ddp_timeout", "no_progress")
_LOGGING = ("log", "log_every", "save_every", "keep_last", "deterministic")


def add_parser(sub):
    p = sub.add_parser(
        "distill-lm", help="distil a Hugging Face causal LM (transformers checkpoints)",
        description="Tokenize --data with the student's tokenizer into windows of --length "
        "tokens (the last --val of them held out), train --student against --teacher's "
        "next-token distributions through ptcore's fused linear KD loss, and report the "
        "held-out cross-entropy. --mode offline runs the teacher once into --store (top-k "
        "log-probabilities per token, with the tail bucket); a later run with the same "
        "--store and data needs no --teacher. --mode labels trains the same student on the "
        "next tokens alone (the baseline). Hub ids work where transformers can reach the "
        "network; offline, give local folders (save_pretrained).")
    add_options(p, "distill-lm", "teacher", "student", "data")
    p.add_argument("--text-column", default="text", help="the datasets column with the text")
    p.add_argument("--length", type=int, default=256, help="tokens per training window")
    add_options(p, "distill-lm", "val")
    add_options(p, "distill-lm", "mode")
    p.add_argument("--store", help="offline: the teacher store folder (default OUT/"
                   "teacher-store); reused by every run on the same data and tokenizer")
    add_options(p, "distill-lm", "topk", "temperature", "divergence", "beta", "soft_weight",
                "hard_weight")
    p.add_argument("--chunk-size", type=int, help="rows per chunk of the fused loss")
    add_options(p, "distill-lm", *_LOOP, group="training loop")
    add_options(p, "distill-lm", *_LOGGING, group="logging and checkpoints")
    p.set_defaults(func=run)


def _check(args) -> None:
    from ptcore.config import ConfigError

    if args.out is None:
        raise ConfigError("--out is required")
    if args.mode == "online" and args.teacher is None:
        raise ConfigError("--mode online needs --teacher")
    if args.mode != "online" and args.divergence != "forward_kl":
        raise ConfigError(f"--divergence {args.divergence} needs --mode online (a top-k "
                          "teacher is forward KL)")
    if args.topk < 1:
        raise ConfigError(f"--topk must be >= 1, got {args.topk}")


def run(args) -> int:
    from ptcore.runtime.distributed import is_main
    from ptcore.runtime.rng import seed_everything

    _check(args)
    seed_everything(args.seed)
    summary = _distill_lm(args)
    if is_main():
        print(f"{args.student}: held-out cross-entropy {summary['held_out_loss']:.4f} nats per "
              f"token ({args.mode}); the student is in {summary['student']}")
    return 0


def _load(path, progress: bool, **model_options):
    import warnings

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    (logging.enable_progress_bar if progress else logging.disable_progress_bar)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notices about unused config keys
        return (AutoModelForCausalLM.from_pretrained(path, **model_options),
                AutoTokenizer.from_pretrained(path))


def _teacher_source(args, train, tokenizer, student, device):
    """(teacher model or None, store or None) for the mode."""
    from pathlib import Path

    from ptcore.integrations.hf import (build_teacher_store, check_same_vocabulary,
                                        open_teacher_store)

    if args.mode == "labels":
        return None, None
    teacher = teacher_tokenizer = None
    if args.teacher is not None:
        teacher, teacher_tokenizer = _load(args.teacher, not args.no_progress)
        check_same_vocabulary(teacher_tokenizer, tokenizer)
        teacher.to(device).eval().requires_grad_(False)
    if args.mode == "online":
        return teacher, None
    store = Path(args.store or Path(args.out) / "teacher-store")
    vocab = student.get_output_embeddings().weight.shape[0]
    if teacher is None:
        return None, open_teacher_store(store, train, tokenizer=tokenizer, vocab_size=vocab)
    built = build_teacher_store(store, teacher, train, k=args.topk, tokenizer=teacher_tokenizer,
                                vocab_size=vocab, batch_size=args.batch_size,
                                progress=not args.no_progress)
    return None, built  # the teacher is no longer needed


def _distill_lm(args) -> dict:
    import torch

    from ptcore.engine import fit, make_optimizer
    from ptcore.integrations.hf import LMDistillLoss, held_out_loss
    from ptcore.integrations.hf.model import vocabulary_size
    from ptcore.integrations.hf.data import held_out_split, read_texts, token_windows
    from ptcore.errors import UserError
    from ptcore.runtime.distributed import is_main, resolve_device, world_size
    from ptcore.strategies._param_groups import weight_decay_groups

    device = resolve_device(args.device)
    # float32 master weights (--amp runs the matmuls in bfloat16); the teacher keeps its dtype
    student, tokenizer = _load(args.student, not args.no_progress, dtype=torch.float32)
    windows = token_windows(read_texts(args.data, args.text_column), tokenizer, args.length)
    train, held = held_out_split(windows, args.val)
    run = open_run_folder(args, "distill-lm")  # after the checks: a bad option leaves --out
    if world_size() > 1:
        raise UserError("ptcore distill-lm runs in one process for now (the fused loss calls "
                        "the student's base model past the DDP wrapper)")
    teacher, store = _teacher_source(args, train, tokenizer, student, device)
    labels_only = args.mode == "labels"
    loss_fn = LMDistillLoss(student, teacher, temperature=args.temperature,
                            divergence=args.divergence, beta=args.beta,
                            hard_weight=1.0 if labels_only else args.hard_weight,
                            soft_weight=0.0 if labels_only else args.soft_weight,
                            tail_bucket=store is not None, chunk_size=args.chunk_size,
                            # heads padded beyond the shared tokenizer's ids (online)
                            vocab_size=None if teacher is None else vocabulary_size(tokenizer))

    def step(model, batch):
        ids, index = batch
        teacher_kw = {}
        if store is not None:
            values, indices = store.get(index.cpu(), device=ids.device)
            teacher_kw = {"teacher_values": values, "teacher_indices": indices}
        loss, parts = loss_fn(ids, return_parts=True, **teacher_kw)
        # the KD term and the cross-entropy before their weights, logged beside the loss
        out = {"loss": loss, "hard_loss": parts["hard"]}
        return out if labels_only else {**out, "soft_loss": parts["soft"]}

    optimizer = make_optimizer(weight_decay_groups(student, args.weight_decay), args.optimizer,
                               momentum=args.momentum, nesterov=args.nesterov, lr=args.lr)
    data = torch.utils.data.TensorDataset(train, torch.arange(train.shape[0]))
    history = fit(student, data, optimizer, epochs=args.epochs, batch_size=args.batch_size,
                  step_fn=step, schedule=args.schedule, out_dir=run, resume=run.resume,
                  amp=args.amp, seed=args.seed, device=device, progress=not args.no_progress,
                  num_workers=args.num_workers, log=args.log, log_every=args.log_every,
                  save_every=args.save_every, keep_last=args.keep_last,
                  deterministic=args.deterministic,
                  meta={"student": args.student, "mode": args.mode})
    out = run.path
    summary = {"mode": args.mode, "student": str(out / "student"), "history": history,
               "train_windows": list(train.shape), "held_out_windows": list(held.shape),
               "held_out_loss": held_out_loss(student, held, batch_size=args.batch_size)
               if len(held) else None}
    if store is not None:
        summary["store"] = {"path": str(store.path), "k": store.k,
                            "bytes_per_token": store.bytes_per_token,
                            "fingerprint": store.fingerprint}
    if is_main():
        student.save_pretrained(out / "student")
        tokenizer.save_pretrained(out / "student")
    run.write_summary(summary)
    return summary
