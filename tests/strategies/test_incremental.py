"""ptcore.strategies.Incremental, the parts checked by themselves: metrics on a hand-made
accuracy matrix, herding, the EWC penalty and Fisher, and the errors bad input gets before
any training. (Learning on digits: test_incremental_learning.py; resume and the CLI:
test_incremental_resume.py; DDP: test_incremental_ddp.py.)"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_incremental_helpers import make, pretrained, scenario

from ptcore import engine
from ptcore.data import LabeledSubset, class_subset, hide_labels
from ptcore.strategies import Incremental
from ptcore.strategies.incremental.ewc import EWC
from ptcore.strategies.incremental.features import embed
from ptcore.strategies.incremental.memory import ExemplarMemory, herding
from ptcore.strategies.incremental.metrics import summarize
from ptcore.strategies.incremental import parse_method


# -- metrics -------------------------------------------------------------------------------
def test_metrics_of_a_hand_made_matrix():
    R = [[0.9, None, None],
         [0.95, 0.8, None],  # task 0 improves after task 1: its best is 0.95, not 0.9
         [0.5, 0.7, 0.9]]
    m = summarize(R)
    assert m["accuracy_after_task"] == pytest.approx([0.9, 0.875, 0.7])
    assert m["average_incremental_accuracy"] == pytest.approx((0.9 + 0.875 + 0.7) / 3)
    assert m["final_accuracy"] == pytest.approx(0.7)
    assert m["forgetting"] == pytest.approx(((0.95 - 0.5) + (0.8 - 0.7)) / 2)
    assert m["backward_transfer"] == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)


def test_metrics_of_one_task_and_bad_matrices():
    m = summarize([[0.8]])
    assert (m["final_accuracy"], m["forgetting"], m["backward_transfer"]) == (0.8, None, None)
    with pytest.raises(ValueError, match="square"):
        summarize([[0.5, None]])
    with pytest.raises(ValueError, match="below the diagonal"):
        summarize([[0.5, None], [None, 0.4]])


# -- herding -------------------------------------------------------------------------------
def test_herding_order_is_a_priority():
    f = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    order = herding(f, 20)
    assert len(set(order.tolist())) == 20
    assert torch.equal(herding(f, 7), order[:7])
    with pytest.raises(ValueError, match="m must be"):
        herding(f, 51)


def test_herding_mean_is_closer_to_the_class_mean_than_random():
    """On real features (a digit class through the pretrained model), herding's exemplars
    average closer to the class mean than random picks of the same size, every time."""
    model = pretrained()
    data = class_subset(scenario()[0][1], [2], relabel=True)  # 30 images of "2", label 0
    feats, _ = embed(model, data, device="cpu")
    target = feats.mean(0)

    def gap(memory):
        memory.add(model, 0, data, [0], device="cpu")
        return (feats[memory.exemplars[0][1]].mean(0) - target).norm().item()

    herded = gap(ExemplarMemory(5, "herding"))
    randoms = [gap(ExemplarMemory(5, "random", seed=s)) for s in range(20)]
    assert herded < min(randoms)
    assert herded < 0.5 * sum(randoms) / len(randoms)


def test_memory_is_class_balanced_within_its_budget():
    model = pretrained()
    train = [LabeledSubset(t, torch.arange(len(t))) for t in scenario()[0][:3]]
    memory = ExemplarMemory(20, "random")
    for task, rows in enumerate(([0, 1], [2, 3], [4, 5])):
        memory.add(model, task, train[task], rows, device="cpu")
        per_class = {r: len(p) for r, (_, p) in memory.exemplars.items()}
        assert per_class == {r: 20 // (2 * task + 2) for r in range(2 * task + 2)}
    kept = memory.datasets(train)
    labels = torch.cat([k.targets for k in kept])
    assert sorted(labels.tolist()) == sorted(r for r in range(6) for _ in range(3))


# -- EWC -----------------------------------------------------------------------------------
def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def anchored(model, lam=3.0):
    ewc = EWC(lam)
    g = torch.Generator().manual_seed(1)
    for n, p in model.named_parameters():
        ewc.fisher[n] = torch.rand(p.shape, generator=g)
        ewc.anchor[n] = p.detach() + torch.randn(p.shape, generator=g)
    return ewc


def test_ewc_penalty_value_and_gradient():
    model = small_net()
    ewc = anchored(model)
    params = dict(model.named_parameters())
    expected = sum(0.5 * 3.0 * (ewc.fisher[n] * (p - ewc.anchor[n]) ** 2).sum()
                   for n, p in params.items())
    penalty = ewc.penalty(model)
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)
    penalty.backward()
    for n, p in params.items():  # d/dθ (λ/2)·F·(θ − θ*)² = λ·F·(θ − θ*)
        torch.testing.assert_close(p.grad, 3.0 * ewc.fisher[n] * (p.detach() - ewc.anchor[n]))


def test_ewc_anchors_only_the_old_rows_of_a_grown_head():
    model = small_net()
    ewc = anchored(model)
    old = model[2]
    model[2] = nn.Linear(5, 5)  # the head gains 2 rows, as expand_head does
    with torch.no_grad():
        model[2].weight[:3], model[2].bias[:3] = old.weight, old.bias
    ewc.penalty(model).backward()
    assert model[2].weight.grad[3:].abs().sum() == 0
    torch.testing.assert_close(model[2].weight.grad[:3], ewc.lam * ewc.fisher["2.weight"]
                               * (old.weight.detach() - ewc.anchor["2.weight"]))


def test_ewc_fisher_is_the_normalised_squared_per_sample_gradient_accumulated_online():
    model = small_net()
    g = torch.Generator().manual_seed(2)
    data = [torch.utils.data.TensorDataset(torch.randn(7, 4, generator=g),
                                           torch.randint(0, 3, (7,), generator=g))
            for _ in range(2)]

    def fisher_by_loop(ds):  # normalised to mean 1 over the parameters
        out = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        for x, y in ds:
            model.zero_grad()
            F.cross_entropy(model(x[None]), y[None]).backward()
            for n, p in model.named_parameters():
                out[n] += p.grad ** 2
        mean = torch.cat([o.flatten() for o in out.values()]).mean()
        return {n: o / mean for n, o in out.items()}

    ewc = EWC(1.0, decay=0.5)
    ewc.update(model, data[0], F.cross_entropy, device="cpu", batch_size=3, progress=False)
    first = fisher_by_loop(data[0])
    with torch.no_grad():
        model[0].weight.add_(0.3)  # the model moves on before the next task
    ewc.update(model, data[1], F.cross_entropy, device="cpu", batch_size=3, progress=False)
    second = fisher_by_loop(data[1])
    for n, p in model.named_parameters():
        torch.testing.assert_close(ewc.fisher[n], 0.5 * first[n] + second[n])
        torch.testing.assert_close(ewc.anchor[n], p.detach())


def test_ewc_samples_estimates_the_fisher_on_a_seeded_subset():
    model = small_net()
    g = torch.Generator().manual_seed(3)
    data = torch.utils.data.TensorDataset(torch.randn(20, 4, generator=g),
                                          torch.randint(0, 3, (20,), generator=g))
    capped = EWC(1.0, samples=6, seed=5)
    capped.update(model, data, F.cross_entropy, device="cpu", batch_size=4, progress=False)
    chosen = sorted(torch.randperm(20, generator=torch.Generator().manual_seed(5))[:6].tolist())
    full = EWC(1.0)
    full.update(model, torch.utils.data.Subset(data, chosen), F.cross_entropy, device="cpu",
                batch_size=4, progress=False)
    for n in full.fisher:
        torch.testing.assert_close(capped.fisher[n], full.fisher[n])
    everything = EWC(1.0, samples=6)
    everything.update(model, torch.utils.data.Subset(data, range(5)), F.cross_entropy,
                      device="cpu", progress=False)  # fewer samples than the cap: all used
    with pytest.raises(ValueError, match="ewc_samples"):
        EWC(1.0, samples=0)


# -- bad input: clear errors before any training -------------------------------------------
@pytest.mark.parametrize("method, error, match", [
    ("lwf+foo", ValueError, "parts must be distinct"),
    ("lwf+lwf", ValueError, "parts must be distinct"),
    ("naive+lwf", ValueError, "'naive' cannot be combined"),
    ("simplecil+replay", ValueError, "'simplecil' cannot be combined"),
    ("ncm", ValueError, "needs replay"),
    (3, TypeError, "method must be a str"),
])
def test_bad_methods(method, error, match):
    with pytest.raises(error, match=match):
        parse_method(method)


def test_parse_method():
    assert parse_method("naive") == frozenset()
    assert parse_method("LwF+Replay") == {"lwf", "replay"}


@pytest.mark.parametrize("kw, error, match", [
    ({"protocol": "domain"}, ValueError, "protocol must be one of"),
    ({"classes": "01"}, TypeError, "classes must be a list"),
    ({"classes": [0, 0]}, TypeError, "classes must be a list of distinct"),
    ({"selection": "best"}, ValueError, "selection must be one of"),
    ({"temperature": 0.0}, ValueError, "temperature must be > 0"),
    ({"method": "replay", "memory": 0}, ValueError, "memory must be a positive int"),
    ({"method": "ewc", "ewc_lambda": -1.0}, ValueError, "ewc_lambda must be >= 0"),
    ({"freeze": "nowhere"}, ValueError, "unknown split point"),
])
def test_bad_arguments(kw, error, match):
    kw = {"method": "naive", **kw}
    with pytest.raises(error, match=match):
        Incremental(pretrained(), **kw)


@pytest.fixture
def no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(engine, "fit", fail)


def test_bad_task_sequences_fail_before_training(no_training):
    train, test = scenario()
    cases = [
        (make("naive"), [train[0], train[1], train[1]], [test[0], test[1], test[1]],
         ValueError, r"train_tasks\[2\] repeats classes \[2, 3\] of train_tasks\[1\]"),
        (make("naive"), [train[0], train[1]], [test[0], test[2]],
         ValueError, r"test_tasks\[1\] has classes \[4, 5\] that train_tasks\[1\] lacks"),
        (make("naive"), [train[0], train[1]], [test[0]], ValueError, "test_tasks has 1"),
        (make("naive"), [], [], TypeError, "non-empty list"),
        (make("replay", memory=9), list(train), list(test), ValueError,
         "memory=9 is smaller than the 10 classes"),
        (make("naive", classes=[0, 1, 2]), [train[1]], [test[1]], ValueError,
         "the model's head has 2 outputs: it cannot hold them"),
        (make("naive"), [train[0], hide_labels(train[1])], [test[0], test[1]], ValueError,
         r"train_tasks\[1\] has labels \[-100\]: the head cannot hold"),
        (make("naive", classes=[2, 3]), [train[0], train[1]], [test[0], test[1]], ValueError,
         r"train_tasks\[1\] repeats classes \[2, 3\] of the model's head"),
    ]
    for inc, tr, te, error, match in cases:
        with pytest.raises(error, match=match):
            inc.fit(tr, te)
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        make("naive").fit(train[:2], test[:2], resume=True)


def test_frozen_prefix_stays_fixed_and_the_head_grows_around_it():
    train, test = scenario()
    inc = make("replay", freeze="features.2", epochs=1)
    frozen = {n: p.clone() for n, p in inc.model.named_parameters() if n.startswith(
        ("features.0.", "features.1.", "features.2."))}
    inc.fit(train[:2], test[:2])
    assert frozen and all(torch.equal(p, frozen[n]) for n, p in inc.model.named_parameters()
                          if n in frozen)
    assert inc.model.model.classifier[3].out_features == 4
