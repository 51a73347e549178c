"""The training engine: one explicit loop driven by a strategy's step function, with AMP,
gradient accumulation, LR schedules, evaluation, JSONL/CSV/TensorBoard logs, tqdm, atomic
checkpoints (every N steps too) with a keep/best/early-stopping policy, exact resume
(mid-epoch too) and DDP (torchrun; gloo on CPU, NCCL on GPU)."""
from ptcore.engine.checkpoint import (CheckpointError, is_checkpoint, load_checkpoint,
                                      save_checkpoint, state_digest)
from ptcore.engine.loaders import make_loader, resolve_num_workers
from ptcore.engine.loop import classification_step, evaluate, fit, resolve_amp
from ptcore.engine.metrics import MetricsLog, read_metrics
from ptcore.engine.options import RUN_OPTIONS, run_options
from ptcore.engine.optim import (OPTIMIZERS, check_label_smoothing, check_optimizer,
                                 make_optimizer)
from ptcore.engine.schedules import SCHEDULES, make_schedule
from ptcore.runtime import distributed
from ptcore.runtime.files import (UnreadableFileError, atomic_torch_save, atomic_write_bytes,
                                  atomic_write_json, read_torch_file)
from ptcore.runtime.rng import deterministic_algorithms, seed_everything
from ptcore.runtime.run_folder import CHECKPOINT, METRICS, RunFolder, RunFolderError

__all__ = [
    "fit", "evaluate", "classification_step", "resolve_amp", "CHECKPOINT", "METRICS",
    "RUN_OPTIONS", "run_options", "make_loader", "resolve_num_workers",
    "OPTIMIZERS", "check_optimizer", "make_optimizer", "check_label_smoothing",
    "RunFolder", "RunFolderError", "save_checkpoint", "load_checkpoint", "is_checkpoint",
    "state_digest",
    "CheckpointError", "atomic_write_bytes", "atomic_write_json", "atomic_torch_save",
    "read_torch_file", "UnreadableFileError",
    "MetricsLog", "read_metrics", "SCHEDULES", "make_schedule", "seed_everything",
    "deterministic_algorithms",
    "distributed",
]
