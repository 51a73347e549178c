"""The embedded digits dataset and deterministic splits."""
import pytest
import torch
from torch.utils.data import DataLoader

from ptcore.data import (IMAGENET_MEAN, IMAGENET_STD, class_subset, class_tasks, digits_dataset,
                         hide_labels, is_deterministic, k_shot, targets_of, train_val_test_split)


@pytest.fixture(scope="module")
def digits():
    return digits_dataset(16)


def test_digits_dataset(digits):
    assert len(digits) == 1797 and digits.classes == [str(i) for i in range(10)]
    x, y = digits[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.bincount(digits.targets).min() >= 170  # ~180 per class
    # normalised: the 3 channels are the same grey image under ImageNet mean/std
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    grey = x * std.view(3, 1, 1) + mean.view(3, 1, 1)
    torch.testing.assert_close(grey[0], grey[2])
    assert 0.0 <= grey.min() and grey.max() <= 1.0 + 1e-6
    xb, yb = next(iter(DataLoader(digits, batch_size=5)))  # the batched path agrees
    torch.testing.assert_close(xb[0], x)
    assert digits_dataset(64)[0][0].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="image_size"):
        digits_dataset(4)


def test_train_val_test_split_is_deterministic_disjoint_and_stratified(digits):
    a = train_val_test_split(digits, 0.1, 0.2, seed=3)
    b = train_val_test_split(digits, 0.1, 0.2, seed=3)
    c = train_val_test_split(digits, 0.1, 0.2, seed=4)
    assert all(torch.equal(x.indices, y.indices) for x, y in zip(a, b))
    assert not torch.equal(a[0].indices, c[0].indices)
    allidx = torch.cat([s.indices for s in a])
    assert len(allidx) == len(digits) and len(allidx.unique()) == len(digits)
    assert abs(len(a[2]) - 0.2 * len(digits)) <= 10
    per_class = torch.bincount(targets_of(a[2]), minlength=10)
    assert per_class.min() >= 34 and per_class.max() <= 38  # 20% of each class
    with pytest.raises(ValueError, match="val"):
        train_val_test_split(digits, 1.5, 0.1)
    with pytest.raises(ValueError, match="val \\+ test"):
        train_val_test_split(digits, 0.5, 0.5)


def test_class_subset_relabel_and_tasks(digits):
    sub = class_subset(digits, [7, 3])
    assert set(sub.targets.tolist()) == {0, 1}
    x, y = sub[0]
    assert int(digits.targets[sub.indices[0]]) == (7 if int(y) == 0 else 3)
    assert torch.equal(class_subset(digits, [3, 7], relabel=False).targets.unique(),
                       torch.tensor([3, 7]))
    tasks = class_tasks(digits, 5)
    assert [t.targets.unique().tolist() for t in tasks][1] == [2, 3]
    assert sum(len(t) for t in tasks) == len(digits)
    with pytest.raises(ValueError, match="divide"):
        class_tasks(digits, 3)
    with pytest.raises(ValueError, match="no samples"):
        class_subset(digits, [11])


def test_k_shot_and_unlabelled_remainder(digits):
    train, _, _ = train_val_test_split(digits, seed=0)
    sub = class_subset(train, range(5, 10))
    shots, rest = k_shot(sub, 4, seed=1)
    assert torch.bincount(shots.targets).tolist() == [4] * 5
    assert len(shots) + len(rest) == len(sub)
    assert not set(shots.indices.tolist()) & set(rest.indices.tolist())
    assert torch.equal(k_shot(sub, 4, seed=1)[0].indices, shots.indices)
    hidden = hide_labels(rest)
    assert (hidden.targets == -100).all() and torch.equal(hidden[0][0], rest[0][0])
    with pytest.raises(ValueError, match="fewer samples"):
        k_shot(sub, 10_000)
    with pytest.raises(ValueError, match="k must be"):
        k_shot(sub, 0)
    assert is_deterministic(shots)


def test_stdlib_text_is_the_modules_docstrings_once_each():
    from ptcore.data.text import stdlib_text
    import json

    text = stdlib_text(("json", "json"))
    assert text.startswith(json.__doc__.strip()[:40]) and text == stdlib_text(("json",))
    assert json.dumps.__doc__.strip()[:40] in text and "\n\n" in text
