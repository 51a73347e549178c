"""benchmarks/lm_distill_table.py on a tiny shape: every provider runs, the paired providers
compute the same loss (ptcore's and TRL's JSD differ by ptcore's T² factor), and ptcore's step
allocates less than the materialised-logits path."""
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl.experimental.gkd", reason="TRL is not installed: pip install trl")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import lm_distill_table as bench  # noqa: E402


def test_lm_distill_table_runs_and_pairs_agree(monkeypatch, capsys):
    monkeypatch.setitem(bench.SHAPES, "tiny", (2, 64))
    import torch

    out = bench.measure("tiny", 2000, 1, bench.PROVIDERS, torch.device("cpu"))
    assert out["ptcore-kl"]["loss"] == pytest.approx(out["hf-kl"]["loss"], rel=1e-4)
    assert out["ptcore-jsd"]["loss"] == pytest.approx(out["trl-gkd"]["loss"] * bench.T ** 2,
                                                      rel=1e-4)
    for fused, materialised in bench.PAIRS:
        assert out[fused]["peak_mib"] < out[materialised]["peak_mib"]
    text = bench.table({"tiny": out}, 2000)
    assert "ptcore-kl" in text and "× hf-kl" in text
