"""The teacher store: the teacher's top-k log-probabilities per token, computed once; equal
to the top-k of its materialised logits; read back without a teacher; a pass killed with
SIGKILL resumes from its committed rows and ends equal to an uninterrupted one; stores made
for other windows, tokenizers or vocabularies, or incomplete, are refused by name."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import kill_when_committed
from tests.integrations.hf_fixtures import bpe_tokenizer, no_logits, store_case

from ptcore.integrations.hf import store as store_module
from ptcore.integrations.hf.store import (TeacherStoreError, build_teacher_store,
                                          open_teacher_store)

ROOT = Path(__file__).parents[2]


def test_the_store_holds_the_top_k_of_the_teachers_logits_and_opens_without_it(tmp_path,
                                                                              monkeypatch):
    teacher, tokenizer, windows = store_case()
    monkeypatch.setattr(store_module, "_CHUNK_ELEMS", 10 * len(tokenizer))  # 10-row chunks
    with no_logits(teacher):
        built = build_teacher_store(tmp_path / "s", teacher, windows, k=8, tokenizer=tokenizer)
    assert built.bytes_per_token == 64 and len(built) == 24
    with torch.no_grad():
        lp = teacher(input_ids=windows).logits[:, :-1].double().log_softmax(-1)
    want_values, want_ids = lp.topk(8, dim=-1)
    opened = open_teacher_store(tmp_path / "s", windows, tokenizer=tokenizer)  # no teacher
    assert opened.fingerprint == built.fingerprint and opened.cache.tier == "disk"
    values, ids = opened.get(range(24))
    assert values.shape == (24, 31, 8) and ids.dtype == torch.int64
    torch.testing.assert_close(values.double(), want_values, rtol=0, atol=1e-5)
    # ids agree wherever the teacher's k-th and (k+1)-th values are not tied to rounding
    assert (ids == want_ids).float().mean() > 0.99


def test_stores_for_other_windows_tokenizers_or_vocabularies_are_refused(tmp_path):
    teacher, tokenizer, windows = store_case()
    with pytest.raises(TeacherStoreError, match="no teacher store"):
        open_teacher_store(tmp_path / "s", windows)
    build_teacher_store(tmp_path / "s", teacher, windows, k=4, tokenizer=tokenizer)
    with pytest.raises(TeacherStoreError, match="other token windows"):
        open_teacher_store(tmp_path / "s", windows[:20])
    with pytest.raises(TeacherStoreError, match=f"covers {len(tokenizer)} tokens"):
        open_teacher_store(tmp_path / "s", windows, vocab_size=len(tokenizer) + 8)
    other = bpe_tokenizer("a different corpus, a different vocabulary " * 50, vocab=300)
    with pytest.raises(ValueError, match="differ first at token id"):
        open_teacher_store(tmp_path / "s", windows, tokenizer=other)


def _killed_pass(path: Path, rows: int) -> dict:
    """Start slow_store.py, SIGKILL it once ``rows`` windows are committed; its progress."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("slow_store.py")),
                             str(path)], env=env, cwd=ROOT)
    return kill_when_committed(proc, path / "topk" / "progress.json", rows,
                               what="teacher pass", timeout=240)


def test_a_killed_teacher_pass_resumes_and_ends_equal_to_an_uninterrupted_one(tmp_path,
                                                                              monkeypatch):
    progress = _killed_pass(tmp_path / "killed", rows=6)
    teacher, tokenizer, windows = store_case()
    with pytest.raises(TeacherStoreError, match="incomplete"):
        open_teacher_store(tmp_path / "killed", windows)
    seen = []
    forward = store_module._TopK.forward
    monkeypatch.setattr(store_module._TopK, "forward",
                        lambda self, w: seen.append(len(w)) or forward(self, w))
    with pytest.warns(UserWarning, match="resuming"):
        resumed = build_teacher_store(tmp_path / "killed", teacher, windows, k=8,
                                      tokenizer=tokenizer, batch_size=2)
    assert sum(seen) == 24 - progress["rows_done"]
    fresh = build_teacher_store(tmp_path / "fresh", teacher, windows, k=8, tokenizer=tokenizer)
    assert resumed.fingerprint == fresh.fingerprint
    assert torch.equal(resumed.cache.get(range(24)), fresh.cache.get(range(24)))
