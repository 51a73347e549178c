"""The data-dependent input checks of the native ops (label and index ranges, repeated
top-k classes), and the explicit opt-out for users who have validated their data.

On CPU the checks are fused into the kernels and always run. On CUDA they run on the
device and cost one device-to-host read per call (a stream sync); with them off, a bad
label or index is read out of bounds instead of raising ``ValueError``/``IndexError``.
"""
from __future__ import annotations

import contextlib

from ptcore._extension import has_native, native_library

__all__ = ["set_input_checks", "input_checks", "input_checks_enabled"]

_python_setting = True  # mirrors the native switch when the library did not load


def set_input_checks(enabled: bool) -> bool:
    """Turn the CUDA kernels' data-dependent input checks on (the default) or off; returns
    the previous setting. Process-wide, like ``torch.backends`` flags."""
    global _python_setting
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    previous = _python_setting
    if has_native():
        previous = bool(native_library()._set_input_checks(enabled))
    _python_setting = enabled
    return previous


@contextlib.contextmanager
def input_checks(enabled: bool):
    """Turn the checks on or off for calls from this thread, within the block (other
    threads keep the process setting of :func:`set_input_checks`); restored on exit."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    if not has_native():
        yield
        return
    previous = native_library()._set_thread_input_checks(int(enabled))
    try:
        yield
    finally:
        native_library()._set_thread_input_checks(previous)


def input_checks_enabled() -> bool:
    """Whether the CUDA input checks run for calls from this thread."""
    return bool(native_library()._input_checks_enabled()) if has_native() else _python_setting
