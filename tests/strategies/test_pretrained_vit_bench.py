"""benchmarks/pretrained_vit_incremental.py for real at a tiny scale: the glyph-pretrained
ViT is trained seeded, cached and reused; the runs from it print their table
(docs/incremental.md, "Methods for pretrained models on a glyph-pretrained ViT")."""
import sys
from pathlib import Path

import pytest
import torch
from test_distill import one_thread  # noqa: F401  (autouse: tiny models run best on one thread)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import pretrained_vit_incremental as B  # noqa: E402

TINY = {"glyphs": 800, "epochs": 3}  # 12 steps of 64 glyphs


def test_the_backbone_is_pretrained_seeded_then_reused_from_its_file(tmp_path, monkeypatch):
    first = B.pretrained_vit(tmp_path / "a.pt", **TINY)
    losses = [h["train_loss"] for h in first["history"]]
    assert losses[-1] < losses[0] - 0.05, losses  # it learnt something about the glyphs
    init = B.vit(first["state"]["head.weight"].shape[0]).state_dict()
    assert not torch.equal(first["state"]["blocks.0.attn.qkv.weight"],
                           init["blocks.0.attn.qkv.weight"])
    again = B.pretrained_vit(tmp_path / "b.pt", **TINY)  # the same seed: the same weights
    assert all(torch.equal(v, again["state"][k]) for k, v in first["state"].items())

    saved = (tmp_path / "a.pt").read_bytes()

    def no_training(*args, **kw):
        raise AssertionError("the cached backbone was trained again")

    monkeypatch.setattr(B.engine, "fit", no_training)
    reused = B.pretrained_vit(tmp_path / "a.pt", **TINY)
    assert (tmp_path / "a.pt").read_bytes() == saved
    assert all(torch.equal(v, reused["state"][k]) for k, v in first["state"].items())
    with pytest.raises(ValueError, match="pass another --cache file"):
        B.pretrained_vit(tmp_path / "a.pt", **{**TINY, "epochs": 4})


def test_the_benchmark_prints_its_table_and_aper_bn_is_simplecil_on_a_vit(
        tmp_path, monkeypatch, capsys):
    """A ViT has no BatchNorm: APER's "bn" adaptation trains the head alone, so its
    adapted features are the pretrained ones and its prototypes classify as SimpleCIL's."""
    monkeypatch.setattr(B, "RECIPE", {**B.RECIPE, **TINY})
    monkeypatch.setattr(sys, "argv", ["bench", "--seeds", "0", "--cache", str(tmp_path / "v.pt"),
                                      "--methods", "simplecil", "aper (bn)"])
    B.main()
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:4] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}
    assert set(rows) == {"simplecil", "aper (bn)"}
    assert rows["aper (bn)"] == rows["simplecil"]
    final = float(rows["simplecil"][1].split()[0])
    assert 13.0 < final < 100.0  # above the 10% of guessing among the 10 digits
