"""Offline distillation of a causal LM from a cached top-k teacher
(ptcore.strategies.sequence_distill and examples/distill_lm.py at its --tiny settings)."""
import importlib.util
from pathlib import Path

import pytest
import torch

from ptcore import engine
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


def _lm_case():
    ex = _example()
    torch.manual_seed(0)
    windows = torch.randint(0, 256, (12, 9))
    return ex, windows, sd.cache_teacher(ex.TinyLM(16, 1, 2, 8).eval(), windows, 4)


def test_training_runs_on_the_engine_and_resumes_bit_for_bit(tmp_path):
    ex, windows, cache = _lm_case()

    def student():
        torch.manual_seed(1)
        return ex.TinyLM(8, 1, 2, 8)

    kw = dict(cache=cache, steps=3, batch_size=4, temperature=2.0, seed=3)
    full = student()
    full_losses = sd.train_student(full, windows, epochs=2, out_dir=tmp_path / "full", **kw)
    assert len(full_losses) == 6
    part = student()
    assert len(sd.train_student(part, windows, epochs=1, out_dir=tmp_path / "b", **kw)) == 3
    assert engine.load_checkpoint(tmp_path / "b" / engine.CHECKPOINT)["epoch"] == 1
    resumed = student()  # a new process would start from a fresh student too
    losses = sd.train_student(resumed, windows, epochs=2, out_dir=tmp_path / "b", resume=True,
                              **kw)
    assert losses == full_losses[3:]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    records = engine.read_metrics(tmp_path / "b" / engine.METRICS)
    assert [r["epoch"] for r in records] == [0, 1]
    assert [r["train_loss"] for r in records] == \
        [r["train_loss"] for r in engine.read_metrics(tmp_path / "full" / engine.METRICS)]
    assert records[1]["train_loss"] == pytest.approx(sum(losses) / 3, rel=1e-6)
    assert records[1]["lr"] == 3e-3  # constant, as the former loop
    with pytest.raises(engine.CheckpointError, match="temperature"):  # other loss settings
        sd.train_student(student(), windows, epochs=3, out_dir=tmp_path / "b", resume=True,
                         **{**kw, "temperature": 1.0})


def test_each_step_draws_its_windows_from_the_seeded_pool():
    """The epoch's steps × batch_size windows are the seeded generator's draws (the former
    loop drew the same ones, a batch at a time), shuffled into batches by the engine."""
    ex, windows, _ = _lm_case()
    seen = []

    class Recording(ex.TinyLM):
        def hidden_states(self, tokens):
            seen.append(tokens)
            return super().hidden_states(tokens)

    sd.train_student(Recording(8, 1, 2, 8), windows, cache=None, steps=5, batch_size=4,
                     seed=7)
    drawn = torch.randint(0, 12, (20,), generator=torch.Generator().manual_seed(7))
    assert [len(t) for t in seen] == [4] * 5
    got = sorted(map(tuple, torch.cat(seen).tolist()))
    assert got == sorted(map(tuple, windows[drawn, :-1].tolist()))
    with pytest.raises(ValueError, match="steps must be"):
        sd.train_student(Recording(8, 1, 2, 8), windows, cache=None, steps=0)
