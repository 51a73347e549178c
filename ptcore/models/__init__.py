"""torchvision and timm classifiers by name, pretrained weights (by name or local file) and
their preprocessing, split points (frozen prefix + trainable rest), freezing that fixes
BatchNorm, head replace/expand."""
from ptcore.data.augment import train_transform  # its home is data/; public here before
from ptcore.models.freeze import BN_MODES, freeze, is_frozen, set_bn_mode, unfreeze
from ptcore.models.heads import (expand_head, get_head, get_heads, head_path, head_paths,
                                 head_width, replace_head)
from ptcore.models.preprocess import Preprocessing, eval_transform, preprocessing
from ptcore.models.registry import MODELS, TIMM_PREFIX, create_model, is_timm, list_models
from ptcore.models.stages import (Stage, StagedModel, blocks, split_index, split_model,
                                  split_points, stages)
from ptcore.models.weights import load_weights, read_state_dict

__all__ = [
    "MODELS", "TIMM_PREFIX", "list_models", "create_model", "is_timm", "load_weights",
    "read_state_dict", "Preprocessing", "preprocessing", "eval_transform", "train_transform",
    "head_path", "head_paths", "get_head", "get_heads", "head_width", "replace_head", "expand_head",
    "Stage", "stages", "split_points", "split_index", "split_model", "blocks", "StagedModel",
    "freeze", "unfreeze", "is_frozen", "set_bn_mode", "BN_MODES",
]
