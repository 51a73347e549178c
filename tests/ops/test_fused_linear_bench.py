"""benchmarks/fused_linear_table.py (what benchmarks/gpu_check.sh runs on a GPU at
8192×4096×128256) on a tiny CPU shape: every mode runs, the memory accounting counts what
it should (the fused path's extra memory is its chunk's logits, teacher logits and gradient,
whatever N), and Liger is skipped with a line where it cannot run."""
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import requires_native

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fused_linear_table  # noqa: E402

H, V, CHUNK = 16, 64, 5


@requires_native
def test_memory_accounting_and_scaling(tmp_path, capsys):
    rows = fused_linear_table.main(["--h", str(H), "--v", str(V), "--n", "24", "96",
                                    "--chunk", str(CHUNK), "--rounds", "1", "--liger",
                                    "--json", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    if not torch.cuda.is_available():
        assert "liger: skipped" in out
    assert (tmp_path / "rows.json").exists() and len(rows) == 4
    for row in rows:
        n, f, u = row["n"], row["fused"], row["unfused"]
        assert f["s"] > 0 and u["s"] > 0
        # float32 gradients of the hidden states and the weight, returned by both paths
        assert f["grads_mib"] == u["grads_mib"] == (n * H + V * H) * 4 / 2 ** 20
        chunk_bytes = (3 if row["teacher"] == "full" else 2) * CHUNK * V * 4
        # the chunk's buffers, plus per-row losses and statistics (8 floats a row)
        assert chunk_bytes <= f["extra_mib"] * 2 ** 20 <= chunk_bytes + 8 * 4 * n + 1024
    small, large = rows[0]["unfused"]["extra_mib"], rows[1]["unfused"]["extra_mib"]
    assert large > 3.5 * small  # the unfused logits grow with N


@requires_native
@pytest.mark.parametrize("mode", [["--dtype", "bfloat16"],
                                  ["--dtype", "bfloat16", "--weight-dtype-sum"],
                                  ["--dtype", "bfloat16", "--autocast"]])
def test_half_precision_modes_run(mode):
    rows = fused_linear_table.main(["--h", str(H), "--v", str(V), "--n", "24", "--teachers",
                                    "top64", "--memory-only", *mode])
    f = rows[0]["fused"]
    assert "s" not in f and f["extra_mib"] > 0
    weight_grad = V * H * (4 if "--autocast" in mode else 2)
    assert f["grads_mib"] * 2 ** 20 == weight_grad + 24 * H * (4 if "--autocast" in mode else 2)


@requires_native
def test_a_failing_liger_is_reported_not_fatal(monkeypatch, capsys):
    """Liger claimed available but failing (here: not installed, or Triton without a GPU):
    the row says so and the table goes on."""
    monkeypatch.setattr(fused_linear_table, "liger_available", lambda: None)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # its import fails
    rows = fused_linear_table.main(["--h", str(H), "--v", str(V), "--n", "12", "--teachers",
                                    "full", "--memory-only", "--liger"])
    assert "error" in rows[0]["liger"] and rows[0]["fused"]["extra_mib"] > 0
    assert "liger failed" in capsys.readouterr().out
