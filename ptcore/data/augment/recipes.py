"""The training augmentations by name (``--augment``, a config's ``data.augment``) and their
torchvision.transforms.v2 ops, at the crop size, interpolation, mean and std of a model's
preprocessing (a :class:`ptcore.models.Preprocessing`, read by its fields)."""
from __future__ import annotations

__all__ = ["AUGMENTS", "augment_ops", "recipe_ops", "train_transform"]

# "none" trains on the evaluation transform; "basic" is a random resized crop and a
# horizontal flip; "trivial" and "randaugment" add that policy.
AUGMENTS = ("none", "basic", "trivial", "randaugment")


def recipe_ops(augment: str, size: int, interpolation: str = "bilinear", *,
               tensors: bool = False):
    """The random part of ``augment`` (a name of ``AUGMENTS`` but "none") cropping at
    ``size`` with ``interpolation``, as one torchvision.transforms.v2 Compose: it takes a PIL
    image or an image tensor (uint8, or float in [0, 1]) and returns the same kind,
    unnormalised. ``tensors``: for image tensors, whose rotations and shears torchvision
    interpolates nearest or bilinear only, so the policy of bicubic weights turns bilinear
    (the crop stays bicubic)."""
    from torchvision.transforms import InterpolationMode, v2

    if augment not in AUGMENTS[1:]:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS[1:])} here, got "
                         f"{augment!r}")
    mode = InterpolationMode(interpolation)
    ops = [v2.RandomResizedCrop(size, interpolation=mode, antialias=True),
           v2.RandomHorizontalFlip()]
    if tensors and mode == InterpolationMode.BICUBIC:
        mode = InterpolationMode.BILINEAR
    if augment == "trivial":
        ops.append(v2.TrivialAugmentWide(interpolation=mode))
    elif augment == "randaugment":
        ops.append(v2.RandAugment(interpolation=mode))
    return v2.Compose(ops)


def augment_ops(p, augment: str = "basic", *, tensors: bool = False):
    """:func:`recipe_ops` at ``p``'s crop size and interpolation."""
    return recipe_ops(augment, p.crop_size, p.interpolation, tensors=tensors)


def train_transform(p, augment: str = "basic"):
    """PIL image -> normalised RGB tensor: :func:`augment_ops` then the normalisation of
    ``p`` (random: not cacheable)."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose([v2.RGB(), augment_ops(p, augment), v2.ToImage(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(p.mean, p.std),
                       v2.ToPureTensor()])
