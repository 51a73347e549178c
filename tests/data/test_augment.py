"""Training augmentation: the train transform follows the weights' preprocessing (crop size,
interpolation, normalisation); the training split's view draws anew each time while the
original (validation, test) stays deterministic; in-memory tensors are augmented before
their normalisation; a cache is never built from the random view."""
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from ptcore.data import (augmented, digits_dataset, folder_splits, is_deterministic,
                         train_val_test_split)
from ptcore.data.augment import AUGMENTS, augment_ops, train_transform
from ptcore.models import create_model
from ptcore.models.preprocess import eval_transform, preprocessing
from ptcore.strategies import FineTune
from tests.data.formats import write_image_folder


def _ops(transform, kind):
    found, stack = [], [transform]
    while stack:
        t = stack.pop()
        found += [t] if isinstance(t, kind) else []
        stack.extend(getattr(t, "transforms", []))
    return found


@pytest.mark.parametrize("augment, policy", [("basic", None), ("trivial", v2.TrivialAugmentWide),
                                             ("randaugment", v2.RandAugment)])
def test_train_transform_follows_the_weights(augment, policy):
    p = preprocessing("efficientnet_b0", "DEFAULT", image_size=40)  # bicubic weights
    t = train_transform(p, augment)
    crop, = _ops(t, v2.RandomResizedCrop)
    assert crop.size == (40, 40) and crop.interpolation == InterpolationMode.BICUBIC
    assert len(_ops(t, v2.RandomHorizontalFlip)) == 1
    if policy is not None:
        assert _ops(t, policy)[0].interpolation == InterpolationMode.BICUBIC
    else:
        assert not _ops(t, v2.TrivialAugmentWide) + _ops(t, v2.RandAugment)
    norm, = _ops(t, v2.Normalize)
    assert tuple(norm.mean) == p.mean and tuple(norm.std) == p.std
    # a one-colour grey image: every pixel is (value/255 - mean)/std whatever the crop
    x = train_transform(p, "basic")(Image.new("L", (50, 60), 128))
    assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.shape == (3, 40, 40)
    want = (128 / 255 - torch.tensor(p.mean, dtype=torch.float64)) / torch.tensor(p.std)
    torch.testing.assert_close(x.double(), want.view(3, 1, 1).expand(3, 40, 40), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="augment must be one of basic, trivial"):
        augment_ops(p, "none")
    assert AUGMENTS[0] == "none"


def test_image_folder_train_view_is_random_and_the_splits_are_not(tmp_path):
    write_image_folder(tmp_path, splits=("train", "val"), per_class=2, noise=True)
    p = preprocessing("resnet18", None, image_size=24)
    splits = folder_splits(tmp_path, transforms={"test": eval_transform(p)})
    base, _, _ = train_val_test_split(splits["train"], 0.0, 0.0, seed=0)
    train = augmented(base, images=train_transform(p, "trivial"), tensors=None)
    assert torch.equal(train.indices, base.indices) and torch.equal(train.targets, base.targets)
    torch.manual_seed(0)
    a, b = train[0][0], train[0][0]
    assert a.shape == (3, 24, 24) and not torch.equal(a, b)
    for ds in (splits["val"], base):  # the evaluation transform: the same every time
        assert torch.equal(ds[0][0], ds[0][0]) and ds[0][0].shape == (3, 24, 24)
    assert not is_deterministic(train) and is_deterministic(base)
    assert splits["train"].transform is not train.dataset.transform


def test_tensor_images_are_augmented_before_normalisation():
    data = digits_dataset(16)
    train, val, _ = train_val_test_split(data, 0.2, 0.0, seed=0)
    p = preprocessing("resnet18", None, image_size=16)
    view = augmented(train, images=None, tensors=augment_ops(p, "trivial"))
    torch.manual_seed(0)
    batch = view.__getitems__([0, 1, 2])  # the DataLoader's batched read
    again = [view[i] for i in range(3)]
    assert all(x.shape == (3, 16, 16) for x, _ in batch)
    assert any(not torch.equal(x, y) for (x, _), (y, _) in zip(batch, again))
    assert [int(y) for _, y in batch] == train.targets[:3].tolist()
    # un-normalised, the augmented pixels stay images in [0, 1]
    mean, std = torch.tensor(p.mean).view(3, 1, 1), torch.tensor(p.std).view(3, 1, 1)
    pixels = torch.stack([x for x, _ in batch]) * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert torch.equal(val[0][0], val[0][0]) and data.transform is None
    assert not is_deterministic(view) and is_deterministic(train)
    with pytest.raises(TypeError, match="no transform"):
        augmented(torch.utils.data.TensorDataset(torch.zeros(2, 3)), images=None, tensors=None)


@pytest.mark.parametrize("augment", ["trivial", "randaugment"])
def test_bicubic_weights_augment_in_memory_tensors(augment):
    """torchvision rotates and shears image tensors nearest or bilinear only: the policy of
    bicubic weights on in-memory digits runs bilinear (it raised before), the crop stays
    bicubic, and image files keep their bicubic policy."""
    from dataclasses import replace

    from ptcore.data.augment import augment_split

    p = preprocessing("efficientnet_b0", "DEFAULT", image_size=16)  # bicubic weights
    view = augment_split(digits_dataset(16), p, augment, 16)
    torch.manual_seed(0)
    for i in range(40):  # enough draws that every op of the policy runs
        x, _ = view[i]
        assert x.shape == (3, 16, 16) and torch.isfinite(x).all()
    policy_class = v2.TrivialAugmentWide if augment == "trivial" else v2.RandAugment
    t = augment_ops(replace(p, crop_size=16), augment, tensors=True)
    assert _ops(t, v2.RandomResizedCrop)[0].interpolation == InterpolationMode.BICUBIC
    assert _ops(t, policy_class)[0].interpolation == InterpolationMode.BILINEAR
    assert _ops(augment_ops(p, augment), policy_class)[0].interpolation == \
        InterpolationMode.BICUBIC


def test_finetune_builds_no_cache_from_random_or_mixed_data():
    data = train_val_test_split(digits_dataset(16), 0.0, 0.97, seed=0)[0]  # ~50 images
    p = preprocessing("resnet18", None, image_size=16)
    runs = {"plain": (data, {}), "augmented": (augmented(data, images=None, tensors=augment_ops(
        p, "basic")), {}), "mixed": (data, {"mixup": 0.2})}
    cached = {}
    for name, (train, kw) in runs.items():
        ft = FineTune(create_model("resnet18", num_classes=10), mode="linear", epochs=1,
                      batch_size=64, progress=False, device="cpu", **kw)
        cached[name] = ft.fit(train)["cached_epochs"]
    assert cached == {"plain": [0], "augmented": [], "mixed": []}
