"""Builds a FeatureCache slowly, committing after every batch (run as a script by
test_cache_faults.py, which kills it with SIGKILL mid-build)."""
import sys
import time

import torch

from cache_fixtures import CountingNet, Images


class SlowNet(CountingNet):
    def forward(self, x):
        time.sleep(0.05)
        return super().forward(x)


def slow_net() -> SlowNet:
    torch.manual_seed(0)
    return SlowNet()


if __name__ == "__main__":
    from ptcore import FeatureCache
    from ptcore.cache import feature_cache

    feature_cache._COMMIT_EVERY_S = 0.0
    FeatureCache(slow_net(), Images(n=400), path=sys.argv[1], batch_size=8, progress=False,
                 dtype=torch.int8).build()
