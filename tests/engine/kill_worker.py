"""Trains the tiny net for 3 epochs into OUT and stalls inside the write of epoch 2's
checkpoint (after the temp file is written, before it is renamed), announcing it with
OUT/stalled; test_checkpoint_faults.py kills it there with SIGKILL."""
import os
import sys
import time

import torch

from ptcore.engine import fit
from ptcore.runtime import files
from tests.engine.tiny import tiny_digits, tiny_net

EPOCHS = 3


def train(out, resume=False):
    model = tiny_net()
    fit(model, tiny_digits(48), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        epochs=EPOCHS, batch_size=16, out_dir=out, resume=resume, progress=False)
    return model


if __name__ == "__main__":
    out = sys.argv[1]
    real_fsync, writes = os.fsync, []

    def stalling_fsync(fd):
        real_fsync(fd)
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.pt."):
            writes.append(fd)
            if len(writes) == 2:
                open(os.path.join(out, "stalled"), "w").close()
                time.sleep(600)

    files.os.fsync = stalling_fsync
    train(out)
