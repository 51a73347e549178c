"""scikit-learn's bundled handwritten digits as an image dataset: real data, no network."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TensorImageDataset", "digits_dataset"]

# torchvision's pretrained models expect ImageNet-normalised RGB input.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TensorImageDataset(Dataset):
    """Images held in memory as ``[N, C, H, W]`` in [0, 1] (C = 1 or 3), returned as
    normalised 3-channel float32 ``x`` and int64 ``y``. Grey images are stored once and
    expanded on access, so a large resize costs a third of the memory. ``transform`` (None:
    none) maps one stored ``[C, H, W]`` image in [0, 1] to another before the normalisation,
    e.g. a training augmentation (see :func:`ptcore.data.augmented`)."""

    deterministic = True  # no random transform: outputs of a frozen prefix are cacheable
    transform = None

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: list[str], *,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [N, 1 or 3, H, W], got {tuple(images.shape)}")
        if targets.shape != (images.shape[0],):
            raise ValueError(f"targets must be [{images.shape[0]}], got {tuple(targets.shape)}")
        self.images = images.float()
        self.targets = targets.long()
        self.classes = list(classes)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def _normalise(self, img: torch.Tensor) -> torch.Tensor:
        return (img.expand(*img.shape[:-3], 3, *img.shape[-2:]) - self._mean) / self._std

    def _images(self, idx) -> torch.Tensor:
        if self.transform is None:
            return self.images[idx]
        return torch.stack([self.transform(img) for img in self.images[idx]])

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        # DataLoader calls this with a whole batch of indices: one vectorised normalisation.
        idx = torch.as_tensor(indices, dtype=torch.long)
        return list(zip(self._normalise(self._images(idx)).unbind(0), self.targets[idx].unbind(0)))


def digits_dataset(image_size: int = 32, *, mean=IMAGENET_MEAN,
                   std=IMAGENET_STD) -> TensorImageDataset:
    """All 1,797 8×8 digit images (classes "0"…"9"), bilinearly resized to
    ``image_size``×``image_size`` (AlexNet needs ≥ 64), as normalised 3-channel tensors."""
    from sklearn.datasets import load_digits

    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    d = load_digits()
    images = torch.from_numpy(d.images).float().div_(16.0).unsqueeze(1)  # pixels are 0..16
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                               align_corners=False).clamp_(0.0, 1.0)
    return TensorImageDataset(images, torch.from_numpy(d.target), [str(c) for c in range(10)],
                              mean=mean, std=std)
