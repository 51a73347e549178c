"""Text that ships with every Python: the docstrings of standard-library modules, for
language-model examples and tests that must run offline (no download, no fixture files)."""
from __future__ import annotations

import importlib
import inspect
import warnings

__all__ = ["stdlib_text"]


def stdlib_text(modules) -> str:
    """The docstrings of the standard-library ``modules`` (names) and of their public
    members, each once, joined by blank lines (the same text on every machine of one Python
    version)."""
    parts = []
    with warnings.catch_warnings():  # deprecated members (typing.re) warn when touched
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in modules:
            module = importlib.import_module(name)
            for obj in [module] + [getattr(module, a) for a in sorted(dir(module))
                                   if not a.startswith("_")]:
                doc = inspect.getdoc(obj)
                if doc and doc not in parts:
                    parts.append(doc)
    return "\n\n".join(parts)
