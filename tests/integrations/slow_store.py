"""Builds a teacher store slowly, committing after every batch (run as a script by
test_hf_store.py, which kills it with SIGKILL mid-pass). argv: store path."""
import sys
import time

import torch

from ptcore.cache import feature_cache
from ptcore.integrations.hf import store
from tests.integrations.hf_fixtures import store_case

if __name__ == "__main__":
    torch.set_num_threads(1)  # as conftest.py does for the tests
    feature_cache._COMMIT_EVERY_S = 0.0
    forward = store._TopK.forward

    def slow(self, windows):
        time.sleep(0.2)
        return forward(self, windows)
    store._TopK.forward = slow
    teacher, tokenizer, windows = store_case()
    store.build_teacher_store(sys.argv[1], teacher, windows, k=8, tokenizer=tokenizer,
                              batch_size=2)
