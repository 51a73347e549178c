"""Records what ptxas reports for each CUDA kernel of a build (registers, spills, stack)
into csrc/generated/ptxas_usage.json, so that a test can check without a GPU that every
kernel stays launchable at its block size (tests/test_cuda_build.py). setup.py runs the
build inside `captured()` with nvcc's --resource-usage; this module parses the output."""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile

_COMPILE = re.compile(r"nvcc\b.*\s-c\s+(\S+\.cu)\b")
_ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+a?)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")


def parse(text: str) -> dict:
    """{source file: {"kernel@arch": {"registers", "stack", "spill_stores", "spill_loads"}}}"""
    usage: dict = {}
    source = entry = None
    for line in text.splitlines():
        m = _COMPILE.search(line)
        if m:
            source = os.path.basename(m.group(1))
            usage.setdefault(source, {})
            continue
        m = _ENTRY.search(line)
        if m and source:
            entry = f"{m.group(1)}@{m.group(2)}"
            usage[source][entry] = {"registers": 0, "stack": 0, "spill_stores": 0, "spill_loads": 0}
            continue
        if entry is None or source is None:
            continue
        m = _PROPS.search(line)
        if m:
            usage[source][entry].update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                                        spill_loads=int(m.group(3)))
        m = _USED.search(line)
        if m:
            usage[source][entry]["registers"] = int(m.group(1))
    return usage


def update(path: str, text: str) -> None:
    """Merges this build's report into ``path``: files recompiled now replace their entries
    (ninja recompiles only what changed), the others keep theirs."""
    fresh = parse(text)
    if not fresh:
        return
    old = {}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    old.update(fresh)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(old, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


@contextlib.contextmanager
def captured(path: str):
    """Runs the block with stdout/stderr (the compilers' too) going to a temporary file,
    replays it to the console afterwards and records the ptxas report into ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            log.seek(0)
            text = log.read().decode(errors="replace")
            sys.stdout.write(text)
            sys.stdout.flush()
    update(path, text)
