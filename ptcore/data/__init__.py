"""Datasets (the embedded digits, glyphs of many scripts rendered from bundled fonts, image
folders, torchvision datasets by name with their official splits, class-incremental
benchmarks with their published class orders), deterministic splits (train/val/test,
class subsets and tasks, k-shot, unlabelled pool) and training augmentation (transforms,
the training split's view, MixUp/CutMix: :mod:`ptcore.data.augment`).

The bottom of the training stack: ptcore.data imports torch, torchvision and itself, never
models/, engine/ or strategies/ (a model's ``Preprocessing`` reaches it as an argument). The
strategies, the commands and the config recipe import it; the engine does not (it is handed
datasets and a step function)."""
from ptcore.data.augment import augmented
from ptcore.data.benchmarks import (BENCHMARKS, PYCIL_SEED, benchmark_splits, benchmark_tasks,
                                    class_order)
from ptcore.data.digits import IMAGENET_MEAN, IMAGENET_STD, TensorImageDataset, digits_dataset
from ptcore.data.glyphs import GLYPH_FONTS, GlyphsDataset, glyph_characters
from ptcore.data.folders import image_folder, image_transform, is_deterministic
from ptcore.data.official import (folder_splits, has_official_splits, official_splits,
                                  torchvision_dataset)
from ptcore.data.sources import (IN_MEMORY, IN_MEMORY_IMAGE_SIZE, data_splits,
                                 dataset_from_spec, in_memory_size, input_size)
from ptcore.data.splits import (LabeledSubset, class_subset, class_tasks, hide_labels, k_shot,
                                targets_of, train_val_test_split)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "TensorImageDataset", "digits_dataset",
    "GlyphsDataset", "glyph_characters", "GLYPH_FONTS",
    "image_transform", "image_folder", "torchvision_dataset", "is_deterministic",
    "dataset_from_spec", "IN_MEMORY", "IN_MEMORY_IMAGE_SIZE", "in_memory_size", "input_size",
    "official_splits", "folder_splits", "has_official_splits",
    "data_splits",
    "BENCHMARKS", "PYCIL_SEED", "class_order", "benchmark_splits", "benchmark_tasks",
    "augmented", "targets_of", "LabeledSubset", "train_val_test_split", "class_subset",
    "class_tasks", "k_shot", "hide_labels",
]
