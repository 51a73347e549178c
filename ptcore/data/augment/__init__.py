"""Training-time augmentation, all of it: the recipes by name and their
torchvision.transforms.v2 ops (:mod:`.recipes`), the training split's random view of a
dataset (:mod:`.views`), MixUp/CutMix of a batch with the loss and accuracy on the soft
targets they make (:mod:`.mixing`). The preprocessing that belongs to a model's weights
(resize, crop, normalisation: ``Preprocessing``, ``eval_transform``) is
:mod:`ptcore.models.preprocess`'s; the recipes read its fields, passed in, and import
nothing above ptcore.data."""
from ptcore.data.augment.mixing import BatchMix, check_mixing, soft_accuracy, soft_classification
from ptcore.data.augment.recipes import AUGMENTS, augment_ops, recipe_ops, train_transform
from ptcore.data.augment.views import augment_split, augmented

__all__ = ["AUGMENTS", "recipe_ops", "augment_ops", "train_transform", "augmented",
           "augment_split", "check_mixing", "BatchMix", "soft_accuracy",
           "soft_classification"]
