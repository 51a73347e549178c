"""The one base class of errors a user causes and can fix (a bad option, a damaged or
foreign file, a run folder that belongs to another run). The `ptcore` command prints their
message on one line and exits 2; anything else is a bug and keeps its traceback."""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Raised for a cause outside ptcore's code; the message names the key, file or option."""
