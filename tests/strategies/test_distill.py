"""ptcore.strategies.Distill on the embedded digits: the loss follows its formula, the
teacher stays fixed, the offline cache is computed once and reused, arguments are checked
before training, and a distilled student learns what labels alone cannot teach it."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ptcore import engine
from ptcore.data import digits_dataset, k_shot, train_val_test_split
from ptcore.strategies import Distill
from ptcore.strategies.distill.kd import kd_term_loss

SEED = 0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread beats the cost of synchronising several (by 5× and
    more on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def teacher_net():  # a small CNN on 16×16 inputs
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def student_net():  # another architecture, on 8×8 inputs
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10))


class Counting(nn.Module):
    """Wraps a module and counts the samples it runs on."""

    def __init__(self, module):
        super().__init__()
        self.module, self.seen = module, 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.module(x)


@pytest.fixture(scope="module")
def digits():
    """(train 16×16, test 16×16, labelled 8×8, unlabelled 8×8, test 8×8): the same split of
    the same images at the teacher's and the student's size."""
    splits16 = train_val_test_split(digits_dataset(16), seed=SEED)
    train8, _, test8 = train_val_test_split(digits_dataset(8), seed=SEED)
    labelled, unlabelled = k_shot(train8, 5, seed=SEED)
    return splits16[0], splits16[2], labelled, unlabelled, test8


@pytest.fixture(scope="module")
def teacher(digits):
    """A well-trained teacher: all labels of the training split (~97% test accuracy)."""
    torch.manual_seed(SEED)
    net = teacher_net()
    engine.fit(net, digits[0], torch.optim.AdamW(net.parameters(), 3e-3), epochs=8,
               batch_size=64, schedule="cosine", seed=SEED, progress=False)
    assert engine.evaluate(net, digits[1])["accuracy"] > 0.95
    return net


def small(data, n):
    return torch.utils.data.Subset(data, range(n))


def make(teacher, student=None, **kw):
    kw = {"temperature": 2.0, "lr": 3e-3, "epochs": 1, "seed": SEED, "progress": False,
          "teacher_input_size": 16, **kw}
    return Distill(teacher, student if student is not None else student_net(), **kw)


# -- the loss ------------------------------------------------------------------------------
def expected_loss(s, y, t, T, soft, hard, indices=None, threshold=None):
    """The formula, in plain PyTorch: teacher distribution over all classes, or over its
    kept classes ``indices`` (renormalised); unlabelled rows count when the teacher's top
    probability at T is at least ``threshold``."""
    if indices is not None:  # the classes not kept get probability 0
        t = torch.full_like(s, -math.inf).scatter(1, indices, t)
    p_t = torch.softmax(t / T, -1)
    kl = (p_t * (torch.log_softmax(t / T, -1) - torch.log_softmax(s / T, -1))).nan_to_num().sum(-1)
    labelled = y != -100
    ce = F.cross_entropy(s, y.clamp_min(0), reduction="none") * labelled
    confident = (torch.ones_like(labelled) if threshold is None
                 else torch.softmax(t.double() / T, -1).amax(-1) >= threshold)
    counts = labelled | confident
    rows = (soft * T * T * kl + hard * ce) * counts
    return rows.sum() / counts.sum()


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("soft,hard", [(1.0, 0.0), (0.0, 1.0), (0.7, 0.3), (2.0, 0.5)])
@pytest.mark.parametrize("topk", [None, 3])
def test_loss_follows_the_formula(T, soft, hard, topk):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(12, 10, generator=g) * 3, torch.randn(12, 10, generator=g) * 3
    y = torch.randint(0, 10, (12,), generator=g)
    y[::3] = -100  # unlabelled rows: KD only
    if topk is None:
        teacher, indices, values = (t,), None, t
    else:
        values, indices = t.topk(topk, -1)
        teacher = (values, indices)
    for threshold in (None, 0.5):
        got = kd_term_loss(s, y, teacher, temperature=T, soft_weight=soft, hard_weight=hard,
                           threshold=threshold)["loss"]
        want = expected_loss(s, y, values, T, soft, hard, indices, threshold)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_weights_and_temperature_change_the_loss_as_the_formula_says():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(16, 10, generator=g) * 2, torch.randn(16, 10, generator=g) * 2
    y = torch.randint(0, 10, (16,), generator=g)

    def loss(soft, hard, T=4.0):
        return kd_term_loss(s, y, (t,), temperature=T, soft_weight=soft,
                            hard_weight=hard)["loss"]

    kd, ce = loss(1.0, 0.0), loss(0.0, 1.0)
    torch.testing.assert_close(ce, F.cross_entropy(s, y))  # the hard term is at T = 1
    torch.testing.assert_close(loss(0.3, 0.7), 0.3 * kd + 0.7 * ce)  # linear in the weights
    # T² scaling: at T = 2 the soft term is 4·KL(softmax(t/2) ‖ softmax(s/2)).
    kl2 = F.kl_div(torch.log_softmax(s / 2, -1), torch.log_softmax(t / 2, -1), log_target=True,
                   reduction="batchmean")
    torch.testing.assert_close(loss(1.0, 0.0, T=2.0), 4 * kl2)
    assert not torch.isclose(loss(1.0, 0.0, T=1.0), loss(1.0, 0.0, T=2.0))


def test_confidence_threshold_drops_unsure_unlabelled_rows():
    s = torch.zeros(4, 3)
    t = torch.tensor([[9.0, 0, 0], [0.1, 0, 0], [9.0, 0, 0], [0.1, 0, 0]])
    y = torch.tensor([0, 0, -100, -100])  # the last row is unlabelled and unsure
    out = kd_term_loss(s, y, (t,), temperature=1.0, soft_weight=1.0, hard_weight=0.0,
                       threshold=0.9)
    assert out["pseudo"].item() == pytest.approx(0.25)  # one of 4 rows: the confident one
    kept = kd_term_loss(s[:3], y[:3], (t[:3],), temperature=1.0, soft_weight=1.0,
                        hard_weight=0.0)["loss"]
    torch.testing.assert_close(out["loss"], kept)


# -- arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,error,match", [
    ({"mode": "both"}, ValueError, "mode"),
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"temperature": float("nan")}, ValueError, "temperature"),
    ({"soft_weight": -1.0}, ValueError, "soft_weight"),
    ({"hard_weight": "1"}, TypeError, "hard_weight"),
    ({"soft_weight": 0.0, "hard_weight": 0.0}, ValueError, "both 0"),
    ({"topk": 0}, ValueError, "topk"),
    ({"topk": 2.5}, ValueError, "topk"),
    ({"threshold": 1.5}, ValueError, "threshold"),
    ({"teacher_input_size": (16, 0)}, ValueError, "teacher_input_size"),
    ({"teacher_input_size": 16.0}, ValueError, "teacher_input_size"),
    ({"cache_dtype": torch.int32}, TypeError, "cache_dtype"),
    ({"lr": -1.0}, ValueError, "lr"),
])
def test_bad_arguments_are_named(kw, error, match):
    with pytest.raises(error, match=match):
        make(teacher_net(), **kw)


def test_modules_are_checked():
    net = teacher_net()
    with pytest.raises(TypeError, match="student"):
        Distill(net, "resnet18")
    with pytest.raises(ValueError, match="different"):
        Distill(net, net)


@pytest.mark.parametrize("mode,topk,match", [("online", None, "10 classes and the student 7"),
                                             ("offline", None, "10 classes and the student 7"),
                                             ("online", 12, "topk=12"),
                                             ("offline", 12, "topk=12"),
                                             ("offline", 9, "ranks class")])
def test_class_mismatch_is_caught_before_training(digits, mode, topk, match):
    student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 7))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        make(teacher_net(), student, mode=mode, topk=topk).fit(small(digits[2], 20))
    for k, v in student.state_dict().items():
        assert torch.equal(v, before[k])


def test_offline_refuses_random_transforms(digits):
    class Jittered(torch.utils.data.Dataset):  # no claim to be deterministic
        def __len__(self):
            return 8

        def __getitem__(self, i):
            x, y = digits[2][i]
            return x + 0.1 * torch.randn_like(x), y

    with pytest.raises(ValueError, match="deterministic"):
        make(teacher_net(), mode="offline").fit(Jittered())
    make(teacher_net(), mode="online").fit(Jittered())  # online: fresh teacher outputs


def test_unlabelled_pool_labels_are_never_read(digits):
    class Mislabelled(torch.utils.data.Dataset):  # labels no loss could take
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return digits[3][i][0], torch.tensor(999)

    summary = make(teacher_net()).fit(small(digits[2], 10), Mislabelled())
    assert summary["unlabelled"] == 20 and math.isfinite(summary["final"]["train_loss"])


# -- the teacher -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["online", "offline"])
def test_teacher_never_changes(digits, mode):
    torch.manual_seed(SEED)
    net = teacher_net().train()  # handed over in train mode: BatchNorm must still not move
    before = {k: v.clone() for k, v in net.state_dict().items()}
    make(net, mode=mode, epochs=2).fit(small(digits[2], 30), small(digits[3], 100))
    assert not any(p.requires_grad for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_offline_cache_is_computed_once_and_reused(digits, tmp_path):
    labelled, unlabelled = digits[2], small(digits[3], 200)
    n = len(labelled) + len(unlabelled)
    teacher = Counting(teacher_net())
    first = make(teacher, mode="offline", topk=3, epochs=3).fit(labelled, unlabelled,
                                                               out_dir=tmp_path / "a")
    assert teacher.seen == n == first["teacher_samples"]  # once, not once per epoch
    assert (tmp_path / "a" / "teacher_cache" / "top3" / "meta.json").is_file()
    for name in ("model.pt", "summary.json", "metrics.jsonl", "last.pt"):
        assert (tmp_path / "a" / name).is_file()
    # Another run (new student) with the same cache directory: the teacher does not run.
    teacher.seen = 0
    second = make(teacher, mode="offline", topk=3, epochs=2,
                  cache_dir=tmp_path / "a" / "teacher_cache").fit(labelled, unlabelled)
    assert teacher.seen == 0 == second["teacher_samples"]
    assert second["cache"]["fingerprint"] == first["cache"]["fingerprint"]
    # Online, by contrast, runs the teacher on every sample of every epoch (+1 probe).
    teacher.seen = 0
    make(teacher, mode="online", epochs=2).fit(labelled, unlabelled)
    assert teacher.seen == 2 * n + 1


def test_resume_continues_from_the_checkpoint_with_the_cache(digits, tmp_path):
    data = small(digits[2], 20), small(digits[3], 60)
    teacher = Counting(teacher_net())
    make(teacher, mode="offline", epochs=2).fit(*data, out_dir=tmp_path)
    teacher.seen = 0
    resumed = make(teacher, mode="offline", epochs=3).fit(*data, out_dir=tmp_path, resume=True)
    assert [r["epoch"] for r in resumed["history"]] == [0, 1, 2]
    assert teacher.seen == 0  # the cache under out_dir/teacher_cache served the new epoch


def test_full_cached_logits_train_exactly_like_online(digits, teacher):
    """A float32 cache of full logits serves what the online teacher computes: the same
    losses step for step (float16, the default, rounds them to ~1e-3)."""
    data = small(digits[2], 40), small(digits[3], 200)
    online = make(teacher, epochs=2).fit(*data)
    offline = make(teacher, mode="offline", cache_dtype=torch.float32, epochs=2).fit(*data)
    for a, b in zip(online["history"], offline["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


# -- learning --------------------------------------------------------------------------------
def test_distilled_student_beats_labels_alone(digits, teacher):
    """5 labels per class + the rest unlabelled. Measured over seeds 0-2 (docs/distill.md):
    labels alone 84-87%, online KD 95-97% (T = 2), offline full = online, offline top-3
    within 0.3 of online."""
    _, _, labelled, unlabelled, test = digits
    epochs = 8
    # The baseline: the same student, cross-entropy on the labels, as many steps as KD.
    base = student_net()
    steps = epochs * math.ceil((len(labelled) + len(unlabelled)) / 64)
    engine.fit(base, labelled, torch.optim.AdamW(base.parameters(), 3e-3, weight_decay=0.01),
               epochs=steps, batch_size=64, schedule="cosine", warmup=0.1, seed=SEED,
               progress=False)
    acc = {"labels only": engine.evaluate(base, test)["accuracy"]}
    for name, kw in {"online": {}, "offline": {"mode": "offline"},
                     "offline top-3": {"mode": "offline", "topk": 3}}.items():
        strategy = make(teacher, epochs=epochs, **kw)
        strategy.fit(labelled, unlabelled)
        acc[name] = strategy.evaluate(test)["accuracy"]
    print({k: round(100 * v, 1) for k, v in acc.items()})
    assert acc["online"] >= acc["labels only"] + 0.05
    assert abs(acc["offline"] - acc["online"]) <= 0.01
    assert acc["offline top-3"] >= acc["online"] - 0.03
