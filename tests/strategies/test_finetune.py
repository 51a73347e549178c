"""FineTune on real tiny data: a backbone pretrained on digits 0–4 adapts to 5–9 from a few
labels better than the same model trained from scratch; cached == uncached; frozen layers
stay exactly as loaded; layer-wise LRs; gradual unfreezing; the seed's architectures; CLI."""
import json

import pytest
import torch

from ptcore.cli import main
from ptcore.data import class_subset, digits_dataset, k_shot, train_val_test_split
from ptcore.engine import fit, read_metrics
from ptcore.models import create_model, split_model
from ptcore.strategies import FineTune
from tests.helpers import stage_config

SIZE = 16  # digits are 8×8: 16×16 keeps the tests fast and still has room for ResNet's strides


@pytest.fixture(scope="module")
def digits():
    train, _, test = train_val_test_split(digits_dataset(SIZE), 0.0, 0.3, seed=0)
    return {"source": class_subset(train, range(5)), "target": class_subset(train, range(5, 10)),
            "test": class_subset(test, range(5, 10))}


@pytest.fixture(scope="module")
def pretrained(digits, tmp_path_factory):
    """resnet18 trained on digits 0–4: the 'pretrained backbone' of the transfer tests."""
    model = create_model("resnet18", num_classes=5)
    fit(model, digits["source"], torch.optim.AdamW(model.parameters(), 1e-3), epochs=2,
        batch_size=32, schedule="cosine", warmup=0.1, progress=False)
    path = tmp_path_factory.mktemp("pretrained") / "resnet18_digits04.pt"
    torch.save(model.state_dict(), path)
    return path


def _finetune(weights, train, test, *, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = create_model("resnet18", num_classes=5, weights=weights)
    kwargs = {"epochs": 15, "batch_size": len(train), "progress": False, "seed": seed, **kwargs}
    ft = FineTune(model, **kwargs)
    summary = ft.fit(train)
    return ft.evaluate(test)["accuracy"], ft, summary


def test_pretrained_then_finetuned_beats_scratch_with_few_labels(digits, pretrained):
    results = {"scratch": [], "partial": [], "linear": []}
    for seed in (0, 1):
        shots, _ = k_shot(digits["target"], 3, seed=seed)
        results["scratch"].append(_finetune(None, shots, digits["test"], seed=seed,
                                            mode="full", layer_decay=1.0)[0])
        results["partial"].append(_finetune(pretrained, shots, digits["test"], seed=seed,
                                            mode="partial", freeze="layer2")[0])
        results["linear"].append(_finetune(pretrained, shots, digits["test"], seed=seed,
                                           mode="linear", lr=1e-2)[0])
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    print("accuracy, 3 labels per class:", json.dumps(mean))
    assert mean["partial"] >= mean["scratch"] + 0.03, mean
    assert mean["linear"] > 0.2 + 0.2, mean  # chance is 0.2


def test_cached_and_uncached_reach_the_same_accuracy(digits, pretrained):
    shots, _ = k_shot(digits["target"], 5, seed=0)
    acc_u, _, s_u = _finetune(pretrained, shots, digits["test"], mode="partial",
                              freeze="layer3", cache=False, epochs=8)
    acc_c, _, s_c = _finetune(pretrained, shots, digits["test"], mode="partial",
                              freeze="layer3", cache=True, epochs=8)
    print(f"accuracy, 5 labels per class, frozen through layer3: uncached {acc_u:.3f}, "
          f"cached {acc_c:.3f}")
    assert s_u["cached_epochs"] == [] and s_c["cached_epochs"] == list(range(8))
    assert acc_c == pytest.approx(acc_u, abs=0.03)
    assert acc_c > 0.5


def test_frozen_prefix_is_bitwise_unchanged(digits, pretrained):
    shots, _ = k_shot(digits["target"], 2, seed=0)
    before = create_model("resnet18", num_classes=5, weights=pretrained)
    _, ft, _ = _finetune(pretrained, shots, digits["test"], mode="partial", freeze="layer2",
                         epochs=2, cache=False)
    frozen, _ = split_model(before, "layer2")
    after = ft.model.state_dict()
    prefix_keys = [k for k in before.state_dict() if k.split(".")[0] in
                   ("conv1", "bn1", "layer1", "layer2")]
    assert any(k.endswith("running_mean") for k in prefix_keys)
    for k in prefix_keys:
        assert torch.equal(after[k], before.state_dict()[k]), k
    assert not torch.equal(after["layer3.0.conv1.weight"], before.layer3[0].conv1.weight)


def test_layer_decay_groups_get_the_right_lrs():
    ft = FineTune(create_model("resnet18", num_classes=5), mode="full", lr=1e-2,
                  layer_decay=0.5, weight_decay=0.1, progress=False)
    by_stage = {}
    for g in ft.optimizer.param_groups:
        by_stage.setdefault(g["stages"][0], set()).add((g["lr"], g["weight_decay"]))
    assert by_stage["fc"] == {(1e-2, 0.1), (1e-2, 0.0)}  # weight and bias
    assert by_stage["layer4"] == {(5e-3, 0.1), (5e-3, 0.0)}
    assert by_stage["layer1"] == {(1e-2 / 16, 0.1), (1e-2 / 16, 0.0)}
    assert by_stage["conv1"] == {(1e-2 / 32, 0.1), (1e-2 / 32, 0.0)}  # conv1 + bn1
    for g in ft.optimizer.param_groups:
        if g["weight_decay"]:
            assert all(p.ndim > 1 for p in g["params"])  # no decay on biases and norms
    n = sum(len(g["params"]) for g in ft.optimizer.param_groups)
    assert n == len(list(ft.model.parameters()))


def test_gradual_unfreezing_moves_the_split_and_the_cache(digits, pretrained):
    shots, _ = k_shot(digits["target"], 2, seed=0)
    model = create_model("resnet18", num_classes=5, weights=pretrained)
    l1 = model.layer1[0].conv1.weight.detach().clone()
    l3 = model.layer3[0].conv1.weight.detach().clone()
    ft = FineTune(model, mode="partial", freeze="layer3", unfreeze_every=1, epochs=3,
                  batch_size=10, progress=False)
    names = [ft.split_at(e) for e in range(3)]
    assert names[0] > names[1] > names[2] > 0
    summary = ft.fit(shots)
    assert summary["cached_epochs"] == [0, 1, 2]
    assert summary["frozen_through"] == "layer1"
    assert not torch.equal(model.layer3[0].conv1.weight, l3)  # unfrozen at epoch 1
    assert torch.equal(model.layer1[0].conv1.weight, l1)  # never unfrozen


@pytest.mark.parametrize("name,freeze,size", [("resnet50", "layer3", 32),
                                              ("alexnet", "features", 64)])
def test_seed_architectures_smoke(name, freeze, size):
    data = digits_dataset(size)
    few = torch.utils.data.Subset(data, range(4))
    model = create_model(name, num_classes=10)
    head = model.get_submodule("fc" if name == "resnet50" else "classifier.6")
    w = head.weight.detach().clone()
    first = next(model.parameters()).detach().clone()
    ft = FineTune(model, mode="partial", freeze=freeze, epochs=1, batch_size=4,
                  progress=False, cache=False)
    summary = ft.fit(few)
    assert len(summary["history"]) == 1 and summary["history"][0]["train_loss"] > 0
    assert not torch.equal(head.weight, w) and torch.equal(next(model.parameters()), first)


def test_finetune_argument_errors():
    model = create_model("resnet18", num_classes=3)
    with pytest.raises(ValueError, match="freeze"):
        FineTune(model, mode="partial")
    with pytest.raises(ValueError, match="freeze"):
        FineTune(model, mode="linear", freeze="layer3")
    with pytest.raises(ValueError, match="mode must be"):
        FineTune(model, mode="half")
    with pytest.raises(ValueError, match="unknown split point"):
        FineTune(model, freeze="layer5")
    with pytest.raises(ValueError, match="layer_decay"):
        FineTune(model, mode="full", layer_decay=0)
    with pytest.raises(ValueError, match="unfreeze_every"):
        FineTune(model, mode="full", unfreeze_every=0)


def test_cli_finetune_writes_outputs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["finetune", "--model", "resnet18", "--data", "digits", "--image-size", str(SIZE),
            "--classes", "0,1,2", "--shots", "2", "--freeze", "layer3", "--batch-size", "6",
            "--out", str(out), "--quiet"]
    assert main(args + ["--epochs", "1"]) == 0
    written = {p.name for p in out.iterdir()}
    assert {"last.pt", "metrics.jsonl", "model.pt", "summary.json"} <= written
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["count"] > 0 and summary["args"]["freeze"] == "layer3"
    reloaded = create_model("resnet18", weights=out / "model.pt")
    assert reloaded.fc.out_features == 3


def test_cli_finetune_from_a_config(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = stage_config(tmp_path, "finetune", out, model={"name": "resnet18"},
                       data={"dataset": "digits", "image_size": SIZE, "classes": [0, 1, 2],
                             "shots": 2},
                       engine={"epochs": 3, "batch_size": 6, "warmup": 0.0},
                       strategy={"mode": "partial", "freeze": "layer3", "layer_decay": 0.7})
    assert main(["finetune", "--config", cfg, "--epochs", "1", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["history"]) == 1  # the command line wins over the file
    assert summary["frozen_through"] == "layer3" and summary["test"]["count"] > 0
    assert summary["args"]["classes"] == [0, 1, 2] and summary["args"]["shots"] == 2
    assert summary["args"]["config_options"] == {"warmup": 0.0}  # no option: passed through
    assert summary["args"]["layer_decay"] == 0.7


@pytest.mark.parametrize("text, extra, message", [
    ("engine: {epochs: 0}\n", ["--model", "resnet18"], "engine.epochs must be a positive int"),
    ("data: {shots: 2}\n", [], "needs --model"),
    ("stage: distill\n", [], "a 'distill' config given to `ptcore finetune`"),
])
def test_cli_finetune_config_errors_before_training(tmp_path, capsys, text, extra, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert main(["finetune", "--config", str(cfg), "--out", str(tmp_path / "run"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
