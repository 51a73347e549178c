"""fit()'s run options: what is logged, which checkpoints are written and kept, and
whether torch's deterministic algorithms are used. Strategies take them as
``**run_options`` and pass them to fit untouched, after checking them at construction."""
from __future__ import annotations

import functools

from ptcore.engine.ema import check_ema
from ptcore.engine.loggers import check_loggers
from ptcore.engine.policy import CheckpointPolicy
from ptcore.runtime.rng import deterministic_algorithms

__all__ = ["RUN_OPTIONS", "run_options", "deterministic_option"]

# Name -> default.
RUN_OPTIONS = {"log": ("jsonl",), "log_every": 50, "save_every": 0, "keep_last": 0,
               "keep_best": 0, "best_metric": "val_loss", "best_mode": "min",
               "patience": None, "ema": None, "deterministic": False}


def run_options(options: dict, *, has_val: bool | None = None) -> dict:
    """``options`` checked as fit() will check them, for a strategy's constructor (before
    any training). ``has_val``: False where the strategy never validates per epoch, so a
    policy ranking by a val_ metric is refused now; None: not known yet (fit checks it)."""
    unknown = sorted(set(options) - set(RUN_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; run options are "
                        f"{sorted(RUN_OPTIONS)}")
    kw = {**RUN_OPTIONS, **options}
    _check_deterministic(kw["deterministic"])
    check_loggers(kw["log"], kw["log_every"])
    check_ema(kw["ema"])
    CheckpointPolicy(**{k: kw[k] for k in ("save_every", "keep_last", "keep_best",
                                           "best_metric", "best_mode", "patience")}
                     ).check(has_val=has_val is not False, has_out=True)
    return dict(options)


def _check_deterministic(value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"deterministic must be True or False, got {value!r}")


def deterministic_option(train):
    """fit's ``deterministic`` (a run option): the whole run, caches built for its epochs
    included, under :func:`ptcore.runtime.rng.deterministic_algorithms`."""
    @functools.wraps(train)
    def fit_with(*args, deterministic: bool = False, **kwargs):
        _check_deterministic(deterministic)
        with deterministic_algorithms(deterministic):
            return train(*args, **kwargs)
    return fit_with
