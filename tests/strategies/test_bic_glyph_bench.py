"""benchmarks/bic_glyph_resnet18.py for real at a tiny scale: its runs start from the shipped
glyph ResNet-18 (not random weights) with a new head grown over the 5 digit tasks, and print
their table (docs/incremental.md, "BiC from the glyph-pretrained ResNet-18")."""
import sys
from pathlib import Path

import torch
from test_distill import one_thread  # noqa: F401  (autouse: tiny models run best on one thread)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bic_glyph_resnet18 as B  # noqa: E402

from ptcore.demo.backbones import SHIPPED  # noqa: E402


def test_runs_start_from_the_shipped_backbone_and_print_their_table(monkeypatch, capsys):
    seen = []
    original = B.Incremental

    def spy(model, **kw):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return original(model, **kw)

    monkeypatch.setattr(B, "Incremental", spy)
    r = B.run("bic+replay", 0, 3, epochs=1, memory=20)
    assert r["method"] == "bic+replay" and len(r["accuracy_matrix"]) == 5
    assert 0 < r["exemplars"] <= 20  # the memory, less BiC's held-out slice
    shipped = torch.load(SHIPPED, map_location="cpu")
    key = "layer1.0.conv1.weight"
    assert torch.equal(seen[0][key], shipped[key].float())  # the glyph weights, loaded
    monkeypatch.setattr(sys, "argv", ["bic", "--seeds", "0", "--shots", "2",
                                      "--methods", "naive"])
    B.main()
    out = capsys.readouterr().out
    assert "| naive |" in out and out.count("| naive |") == 1
