"""Random transforms: refused without views=K, and K views served one per epoch."""
import pytest
import torch
from torch.utils.data import ConcatDataset, Subset
from torchvision import transforms as T

from ptcore import FeatureCache
from ptcore.cache.transforms import random_transforms

from cache_fixtures import Images, expected


@pytest.mark.parametrize("transform, name", [
    (T.RandomHorizontalFlip(), "RandomHorizontalFlip"),
    (T.Compose([T.Normalize([0.0] * 3, [1.0] * 3), T.RandomApply([T.ColorJitter(0.2)])]),
     "ColorJitter"),
    (T.Compose([T.RandomResizedCrop(8, antialias=True)]), "RandomResizedCrop"),
])
def test_random_transforms_are_refused(net, transform, name):
    data = Images(transform=transform)
    assert name in random_transforms(data)
    assert name in random_transforms(Subset(ConcatDataset([data]), [0, 1]))
    with pytest.raises(ValueError, match=f"random transforms .*{name}.*views=K"):
        FeatureCache(net, data, progress=False).build()
    assert net.seen == 0


def test_deterministic_transforms_pass(net):
    data = Images(transform=T.Compose([T.Normalize([0.1] * 3, [2.0] * 3), T.CenterCrop(6)]))
    assert random_transforms(data) == []
    cache = FeatureCache(net, data, progress=False, dtype=torch.float32).build()
    ref = expected(net, torch.stack([data.transform(x) for x in data.x]))
    assert torch.equal(cache[:], ref)


def test_views_served_per_epoch(net):
    torch.manual_seed(1)
    data = Images(n=24, transform=T.RandomHorizontalFlip())
    cache = FeatureCache(net, data, views=3, dtype=torch.float32, batch_size=10,
                         progress=False).build()
    assert net.seen == 72 and cache.nbytes == 3 * 24 * 32 * 4 + 24 * 8
    plain = expected(net, data.x)
    flipped = expected(net, data.x.flip(-1))
    views = torch.stack([cache.get(slice(None), epoch=e) for e in range(3)])
    for v in views:  # every view is one of the two augmentations of its own sample
        is_plain = (v == plain).flatten(1).all(1)
        is_flipped = (v == flipped).flatten(1).all(1)
        assert bool((is_plain | is_flipped).all())
    assert not torch.equal(views[0], views[1])  # epochs see different augmentations
    assert torch.equal(cache.get([4, 9], epoch=4), views[1][[4, 9]])  # epoch 4 → view 1
    feats, labels = next(iter(cache.loader(24, shuffle=False, epoch=2)))
    assert torch.equal(feats, views[2]) and torch.equal(labels, data.y)
    x, _ = cache.as_dataset(epoch=5)[7]
    assert torch.equal(x, views[2][7])


def test_views_without_randomness_warns(net, data):
    with pytest.warns(UserWarning, match="views will be identical"):
        FeatureCache(net, data, views=2, progress=False).build()
