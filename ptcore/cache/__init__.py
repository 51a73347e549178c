"""Frozen-layer feature cache: outputs of a frozen module per sample, stored compactly
(float16/bfloat16/float32 or int8 with per-row scales) in GPU memory, host memory or a
memory-mapped file, fingerprinted and persisted. See docs/cache.md."""
from ptcore.cache.feature_cache import FeatureCache

__all__ = ["FeatureCache"]
