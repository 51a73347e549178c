"""Image folders and torchvision datasets by name, from local files only."""
import pytest
import torch
from PIL import Image

from ptcore.data import (dataset_from_spec, image_folder, image_transform, is_deterministic,
                         k_shot, torchvision_dataset)


@pytest.fixture
def folder(tmp_path):
    g = torch.Generator().manual_seed(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            px = (torch.rand(10, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(px).save(tmp_path / c / f"{i}.png")
    Image.fromarray(px[..., 0]).save(tmp_path / "dog" / "grey.png")  # grey becomes RGB
    return tmp_path


def test_image_folder(folder):
    ds = image_folder(folder, image_size=16)
    assert ds.classes == ["cat", "dog"] and len(ds) == 7
    x, y = ds[6]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert is_deterministic(ds) and torch.equal(ds[0][0], ds[0][0])
    shots, rest = k_shot(ds, 2)  # splits work on ImageFolder's targets
    assert len(shots) == 4 and len(rest) == 3
    aug = image_folder(folder, image_size=16, augment=True)
    assert not is_deterministic(aug) and not is_deterministic(k_shot(aug, 1)[0])
    assert len(dataset_from_spec(str(folder), image_size=16)) == 7
    with pytest.raises(FileNotFoundError):
        image_folder(folder / "missing")


def test_augmenting_transform_is_the_basic_recipe(folder):
    """image_transform(augment=True) crops and flips as torchvision's classic
    RandomResizedCrop + RandomHorizontalFlip do, draw for draw."""
    from torchvision import transforms as T

    classic = T.Compose([T.Lambda(lambda img: img.convert("RGB")), T.RandomResizedCrop(16),
                         T.RandomHorizontalFlip(), T.ToTensor(),
                         T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    images = [Image.open(p) for p in sorted(folder.rglob("*.png"))]
    out = {}
    for name, t in (("ptcore", image_transform(16, augment=True)), ("classic", classic)):
        torch.manual_seed(0)
        out[name] = torch.stack([t(img) for img in images * 4])
    assert torch.equal(out["ptcore"], out["classic"])
    assert not torch.equal(out["ptcore"][:7], out["ptcore"][7:14])  # random: drawn anew


def test_torchvision_by_name_needs_local_files(tmp_path):
    with pytest.raises(ValueError, match="not a torchvision dataset"):
        torchvision_dataset("NotADataset", tmp_path)
    with pytest.raises(FileNotFoundError, match="download=True"):
        torchvision_dataset("MNIST", tmp_path)  # nothing there and no download
    with pytest.raises(ValueError, match="neither 'digits'"):
        dataset_from_spec("CIFAR10")


def test_is_deterministic_inspects_unknown_datasets():
    from torchvision import transforms as T

    class Plain(torch.utils.data.Dataset):
        def __init__(self, transform):
            self.transform = transform

    assert is_deterministic(Plain(T.Compose([T.Resize(8), T.ToTensor()])))
    assert not is_deterministic(Plain(T.Compose([T.RandomCrop(8), T.ToTensor()])))
    assert not is_deterministic(object())
