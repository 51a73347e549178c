"""Offline distillation of a causal LM from a cached top-k teacher
(ptcore.strategies.sequence_distill and examples/distill_lm.py at its --tiny settings)."""
import importlib.util
from pathlib import Path

import pytest
import torch

from ptcore.strategies import sequence_distill as sd

from tests.helpers import requires_native

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distill_lm.py"


def _example():
    spec = importlib.util.spec_from_file_location("distill_lm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@requires_native
def test_kd_from_the_cached_teacher_beats_labels_only():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # models this small gain nothing from threads on a shared CPU
    try:
        result = _example().run(tiny=True, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert result["teacher"] < result["kd"] < result["labels_only"] - 0.02, result


def test_the_cache_holds_the_teachers_top_k_log_probs(tmp_path):
    ex = _example()
    torch.manual_seed(0)
    teacher = ex.TinyLM(16, 1, 2, 8).eval()
    windows = torch.randint(0, 256, (5, 9))
    cache = sd.cache_teacher(teacher, windows, 4, path=tmp_path / "c")
    rows = cache.get(torch.arange(5))
    with torch.no_grad():
        want = teacher(windows[:, :-1]).log_softmax(-1).topk(4, dim=-1)
    torch.testing.assert_close(rows[..., :4], want.values)
    assert torch.equal(rows[..., 4:].long(), want.indices)
    again = sd.cache_teacher(teacher, windows, 4, path=tmp_path / "c")  # loaded, not rebuilt
    assert torch.equal(again.get(torch.arange(5)), rows)
    with pytest.raises(ValueError, match="float32"):
        sd.cache_teacher(teacher, windows, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match="k must be"):
        sd.TopKTokenTeacher(teacher, 0)
    with pytest.raises(ValueError, match="rows"):
        sd.train_student(ex.TinyLM(8, 1, 2, 8), windows[:3], cache=cache, steps=1)
