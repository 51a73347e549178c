"""Continual learning built for pretrained models, by mechanism and by what it learns on the
digits protocol (docs/incremental.md): APER adapts a copy of the backbone on the first task
and classifies by prototypes of the pretrained and adapted features side by side; L2P
prompts a frozen timm ViT with prompts its own query features choose."""
import functools
import json

import pytest
import torch
import torch.nn.functional as F
from test_distill import one_thread  # noqa: F401  (autouse: tiny models run best on one thread)
from test_incremental_helpers import (cli_config, interrupt_at, make, mean_over_seeds, pretrained,
                                      scenario)

from ptcore import engine
from ptcore.data import class_tasks, digits_dataset, train_val_test_split
from ptcore.models import StagedModel
from ptcore.strategies import Incremental
from ptcore.strategies.incremental import aper as A
from ptcore.strategies.incremental import l2p as L
from ptcore.strategies.incremental.features import embed


def _class_mean(feats, labels, row):
    return feats[labels == row].double().mean(0)


# -- APER -------------------------------------------------------------------------------------
def test_aper_prototypes_concatenate_pretrained_and_adapted_means():
    train, test = scenario()
    inc = make("aper", aper_adapt="full")
    torch.manual_seed(0)
    res = inc.fit(train[:2], test[:2])
    aper, original = inc.methods["aper"], StagedModel(pretrained())
    # the pretrained half is the model as given, the adapted half moved on the first task
    kept = A.pretrained_backbone(original).state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in aper.pretrained.state_dict().items())
    moved = [k for k, v in original.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, inc.model.state_dict()[k])]
    assert any("features.1" in k for k in moved)  # a convolution trained
    assert res["history"][0] and res["history"][1] == []  # first task only
    # each prototype: [mean pretrained feature, mean adapted feature], normalised
    data = inc.plan.remap(train[1])
    old, labels = embed(original, data, device="cpu")
    new, _ = embed(inc.model, data, device="cpu")
    for row in (2, 3):
        want = F.normalize(torch.cat([_class_mean(old, labels, row),
                                      _class_mean(new, labels, row)]), dim=0)
        torch.testing.assert_close(aper.means[row].double(), want, rtol=1e-5, atol=1e-6)


def test_aper_bn_adapts_only_batchnorm_and_the_head():
    train, test = scenario()
    inc = make("aper", aper_adapt="bn")
    torch.manual_seed(0)
    inc.fit(train[:1], test[:1])
    before, after = StagedModel(pretrained()).state_dict(), inc.model.state_dict()
    moved = {k for k, v in before.items()
             if v.is_floating_point() and not torch.equal(v, after[k])}
    bn = {n for n, m in inc.model.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert moved and all(k.rsplit(".", 1)[0] in bn or k.startswith("classifier.3.")
                         for k in moved), sorted(moved)
    assert any(k.endswith(".weight") and k.rsplit(".", 1)[0] in bn for k in moved)


def test_aper_is_deterministic_and_resumes(tmp_path, monkeypatch):
    train, test = scenario()
    reference = make("aper")
    torch.manual_seed(0)
    full = reference.fit(train[:3], test[:3])
    again = make("aper")
    torch.manual_seed(0)
    again.fit(train[:3], test[:3])
    assert torch.equal(again.methods["aper"].means, reference.methods["aper"].means)

    real = interrupt_at(monkeypatch, A.APER, "after_task", 2)
    interrupted_run = make("aper")
    torch.manual_seed(0)  # the adaptation's dropout draws from the global generator
    with pytest.raises(KeyboardInterrupt):
        interrupted_run.fit(train[:3], test[:3], out_dir=tmp_path)
    monkeypatch.setattr(A.APER, "after_task", real)
    resumed = make("aper")
    got = resumed.fit(train[:3], test[:3], out_dir=tmp_path, resume=True)
    assert got["accuracy_matrix"] == full["accuracy_matrix"]
    assert torch.equal(resumed.methods["aper"].means, reference.methods["aper"].means)


def test_aper_options_are_checked():
    with pytest.raises(ValueError, match="aper_adapt must be one of"):
        make("aper", aper_adapt="adapter")
    with pytest.raises(ValueError, match="'aper' cannot be combined"):
        make("aper+replay")


def test_aper_beats_simplecil_from_the_same_pretrained_model():
    """Means over seeds 0-2, APER adapting for 10 epochs (docs/incremental.md: AIA
    53.3/55.6/53.0 against SimpleCIL's 47.6/49.4/49.6, final 28.1/30.0/28.9 against
    22.0/25.4/22.5). At the protocol's 4 epochs the lead is smaller and not on every seed."""
    def gain(key):
        return (mean_over_seeds("aper", key, protocol="class", epochs=10)
                - mean_over_seeds("simplecil", key, protocol="class"))

    assert gain("average_incremental_accuracy") > 0.03
    assert gain("final_accuracy") > 0.03


def test_cli_aper_from_a_config(tmp_path):
    from ptcore.cli import main

    cfg = cli_config(tmp_path / "aper.toml", tmp_path / "aper",
                     'method = "aper"\naper_adapt = "bn"', batch_size=8)
    assert main(["incremental", "--config", cfg, "--no-progress"]) == 0
    res = json.loads((tmp_path / "aper" / "results.json").read_text())
    assert res["method"] == "aper" and res["history"][0] and res["history"][1] == []


# -- L2P --------------------------------------------------------------------------------------
def tiny_vit(seed: int = 0):
    """A two-block timm ViT (dim 32, 4×4 patches of 16×16 images, ~30k parameters)."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                             mlp_ratio=2.0, num_classes=2)


@functools.lru_cache(maxsize=None)
def vit_pretrained_state(seed: int = 0) -> dict:
    """The tiny ViT trained on all training images of task 1 (20 epochs: a ViT learns
    slower than the CNN the helpers pretrain for 5)."""
    train, _, _ = train_val_test_split(digits_dataset(16), 0.0, 0.25, seed=seed)
    model = tiny_vit(seed)
    with torch.enable_grad():
        engine.fit(model, class_tasks(train, 5)[0], torch.optim.AdamW(model.parameters(), 3e-3),
                   epochs=20, batch_size=32, seed=seed, progress=False)
    return model.state_dict()


def make_l2p(seed: int = 0, pretrained: bool = True, **kw) -> Incremental:
    """L2P on the tiny ViT: :func:`vit_pretrained_state`, or (``pretrained=False``) as
    initialised by ``seed``."""
    model = tiny_vit(seed)
    if pretrained:
        model.load_state_dict(vit_pretrained_state(seed))
    kw = {"classes": [0, 1], "epochs": 2, "batch_size": 16, "lr": 3e-2, "seed": seed,
          "progress": False, **kw}
    return Incremental(model, method="l2p", **kw)


def test_l2p_trains_only_prompts_keys_and_head_and_selects_by_query():
    train, test = scenario()
    inc = make_l2p()
    torch.manual_seed(0)
    res = inc.fit(train[:2], test[:2])
    before, after = vit_pretrained_state(), inc.model.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items() if not k.startswith("head"))
    pool = inc.methods["l2p"].pool
    fresh = L.PromptPool(10, 5, 5, 32, seed=0)
    assert not torch.equal(pool.prompts, fresh.prompts) and not torch.equal(pool.keys, fresh.keys)
    # the keys are pulled towards the queries that choose them
    first = res["history"][0]
    assert first[-1]["train_match"] > first[0]["train_match"]
    # only the prompts, the keys and the head get gradients
    model = L.Prompted(inc.model.model, pool).train()
    x = torch.stack([train[1][i][0] for i in range(4)])
    query = torch.nn.functional.normalize(torch.randn(4, 32), dim=1)
    logits, idx, match = model(x, query)
    (logits.sum() + match).backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got == {"pool.prompts", "pool.keys", "vit.head.weight", "vit.head.bias"}
    # selection: a query equal to key k picks k first; unchosen prompts change nothing
    with torch.no_grad():
        _, idx, _ = pool(pool.keys[3:4].detach().repeat(4, 1))
        assert (idx[:, 0] == 3).all()
        out = model(x, query)[0]
        unused = sorted(set(range(10)) - set(model(x, query)[1].flatten().tolist()))
        g = torch.Generator().manual_seed(0)  # not a constant: LayerNorm would remove it
        pool.prompts[unused] += torch.randn(len(unused), 5, 32, generator=g)
        assert torch.equal(model(x, query)[0], out)
        pool.prompts[model(x, query)[1][0, 0]] += torch.randn(5, 32, generator=g)
        assert not torch.allclose(model(x, query)[0], out)


def test_l2p_is_deterministic_and_resumes(tmp_path, monkeypatch):
    train, test = scenario()
    reference = make_l2p(epochs=1)
    torch.manual_seed(0)
    full = reference.fit(train[:3], test[:3])
    real = interrupt_at(monkeypatch, L.L2P, "after_training", 2)
    stopped = make_l2p(epochs=1)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        stopped.fit(train[:3], test[:3], out_dir=tmp_path)
    monkeypatch.setattr(L.L2P, "after_training", real)
    resumed = make_l2p(epochs=1)
    got = resumed.fit(train[:3], test[:3], out_dir=tmp_path, resume=True)
    assert got["accuracy_matrix"] == full["accuracy_matrix"]
    assert torch.equal(resumed.methods["l2p"].pool.prompts, reference.methods["l2p"].pool.prompts)


def test_l2p_needs_a_vit_and_checks_its_options():
    train, test = scenario()
    with pytest.raises(TypeError, match="timm VisionTransformer"):
        make("l2p").fit(train[:1], test[:1])
    with pytest.raises(ValueError, match="l2p_top"):
        make_l2p(l2p_top=11)
    with pytest.raises(ValueError, match="l2p_length must be a positive int"):
        make_l2p(l2p_length=0)


def test_l2p_ends_above_fine_tuning_the_head_alone():
    """Seeds 0/1/2 (docs/incremental.md): final accuracy 20.0/20.9/23.8 against the head
    alone's 13.4/13.6/17.2; below SimpleCIL's 24.7/25.8/28.2 on this tiny ViT (why: there)."""
    train, test = scenario()
    head_only = make_l2p(epochs=4)
    head_only = Incremental(head_only.model.model, method="naive", freeze="head_drop",
                            classes=[0, 1], epochs=4, batch_size=16, lr=3e-3, progress=False)
    torch.manual_seed(0)
    naive = head_only.fit(train, test)
    l2p = make_l2p(epochs=4)
    torch.manual_seed(0)
    got = l2p.fit(train, test)
    assert got["final_accuracy"] > naive["final_accuracy"] + 0.04
