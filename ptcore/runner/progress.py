"""Progress for `ptcore demo` and `ptcore run` when stderr is not a terminal (a log file, a
pipe, CI): tqdm's carriage-return redraws would pile up into one enormous line, so each
redraw becomes a plain line, at most one every few seconds. Other output passes through.
"""
from __future__ import annotations

import contextlib
import sys
import time

__all__ = ["plain_progress", "LineProgress"]

EVERY_S = 5.0


class LineProgress:
    """A text stream over ``stream`` that turns the status lines tqdm writes (each starts
    with a carriage return) into plain lines, at most one every ``every`` seconds, and
    drops the blank redraws with which tqdm clears a finished bar."""

    def __init__(self, stream, every: float = EVERY_S, clock=time.monotonic):
        self._stream, self._every, self._clock = stream, every, clock
        self._last = None  # when the last status line went out
        self._after_status = False

    def write(self, text: str) -> int:
        head, *statuses = text.split("\r")
        if head:
            # A bare newline right after a status is tqdm closing its bar.
            if head.strip() or not self._after_status:
                self._stream.write(head)
            self._after_status = False
        if statuses:
            self._after_status = True
        for status in statuses:
            status = status.strip()
            now = self._clock()
            if status and (self._last is None or now - self._last >= self._every):
                self._stream.write(status + "\n")
                self._last = now
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name):  # encoding, fileno, ... of the real stream
        return getattr(self._stream, name)


@contextlib.contextmanager
def plain_progress():
    """Within the block, progress on a non-terminal stderr comes as plain lines."""
    if sys.stderr.isatty():
        yield
        return
    real = sys.stderr
    sys.stderr = LineProgress(real)
    try:
        yield
    finally:
        sys.stderr = real
