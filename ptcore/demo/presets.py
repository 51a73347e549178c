"""The demo's stage configs, one list per preset (plain dicts in the config file format:
`ptcore demo` writes each to OUT/configs/<stage>.yaml, and examples/ holds the quick
preset's as files). Why these settings: docs/demo.md.

The story on the embedded digits (10 classes), told from a backbone that ptcore pretrained
on rendered glyphs of many scripts (ptcore/demo/backbones.py; no digits among them): it is
fine-tuned to TARGET with few labels (against the same network from random weights); it
learns SOURCE with all labels, the model to which the TARGET classes then arrive as new
tasks; and that model teaches a smaller student SOURCE from a few labels plus the
unlabelled rest.
"""
from __future__ import annotations

from ptcore.demo.backbones import backbone_path, plain_options

__all__ = ["PRESETS", "preset_configs", "preset_backbones", "SOURCE", "TARGET"]

SOURCE = [0, 1, 2, 3, 4]
TARGET = [5, 6, 7, 8, 9]

# Per preset: the architectures, input size and how long each stage trains. `extra`
# architectures are pretrained too and fine-tuned (partial, full) beside the backbone.
PRESETS = {
    # Sized to finish in about 90 s on a 2-core CPU (91-94 s measured): ResNet-18 steps at
    # 16×16 cost ~0.3 s (batch 32), MobileNetV3-small ones ~0.15 s; EWC's Fisher ~0.02 s a
    # sample (one backward per batch, benchmarks/ewc_fisher.py). The student's BatchNorm (momentum 0.01) is re-estimated
    # after every epoch (engine `precise_bn`): without it the student scored at chance in
    # eval mode.
    "quick": {"backbone": "resnet18", "student": ("mobilenet_v3_small", {}),
              "teacher": "resnet18", "extra": [], "image_size": 16,
              "pretrain_epochs": 3, "finetune_epochs": 8, "probe_epochs": 100,
              "incremental_epochs": 2, "incremental_shots": 20, "distill_epochs": 2,
              "shots": 5, "distill_shots": 5},
    # The seed document's architectures (ResNet-50 and AlexNet fine-tuning, ResNet-50
    # incremental, VGG-19 -> ResNet-50 distillation) at a reduced input size and epochs.
    # The teacher is VGG-19 with BatchNorm: plain VGG-19 trained from random weights here
    # stayed at chance (loss ln 5 after 4 epochs), as deep plain networks do.
    "seed": {"backbone": "resnet50", "student": ("resnet50", {}), "teacher": "vgg19_bn",
             "extra": ["alexnet"], "image_size": 64,
             "pretrain_epochs": 3, "finetune_epochs": 8, "probe_epochs": 50,
             "incremental_epochs": 2, "incremental_shots": 30, "distill_epochs": 3,
             "shots": 5, "distill_shots": 5},
}
# BatchNorm statistics re-estimated over this many training batches after each epoch.
PRECISE_BN = 4


def _digits(p: dict, **kw) -> dict:
    return {"dataset": "digits", "image_size": p["image_size"], **kw}


def preset_backbones(preset: str) -> list[tuple[str, int]]:
    """(architecture, input size) of every glyph-pretrained backbone ``preset`` loads."""
    p = PRESETS[preset]
    return [(a, p["image_size"]) for a in dict.fromkeys([p["backbone"], p["teacher"],
                                                          *p["extra"]])]


def preset_configs(preset: str, out: str, *, seed: int = 0, scale: float = 1.0) -> list[dict]:
    """The stage configs of ``preset`` writing under ``out``. ``scale`` multiplies every
    epoch count (at least 1 each), e.g. for a faster smoke test. The glyph-pretrained
    backbones they load may still have to be built (:func:`preset_backbones`)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = PRESETS[preset]

    def engine(key: str, batch_size: int = 32) -> dict:
        return {"epochs": max(1, round(p[key] * scale)), "batch_size": batch_size,
                "precise_bn": PRECISE_BN}

    def pretrained(arch: str) -> str:
        return f"{out}/pretrain/{arch}/model.pt"

    def glyphs(arch: str) -> str:
        return str(backbone_path(arch, p["image_size"]))

    backbone, (student, student_kwargs) = p["backbone"], p["student"]
    archs = list(dict.fromkeys([backbone, p["teacher"], *p["extra"]]))
    pretrain = {"stage": "pretrain", "seed": seed, "out": f"{out}/pretrain",
                "model": {"name": backbone}, "data": _digits(p, classes=list(SOURCE)),
                "engine": engine("pretrain_epochs"),
                "strategy": {"mode": "full", "lr": 2e-3, "layer_decay": 1.0},
                # VGG and AlexNet with SGD (backbones.plain_options: AdamW left them low)
                "methods": {a: {"model": a, "weights": glyphs(a), **plain_options(a)}
                            for a in archs}}
    finetune = {
        "stage": "finetune", "seed": seed, "out": f"{out}/finetune",
        "model": {"name": backbone, "weights": glyphs(backbone)},
        # Tested on every image of 5-9 that is neither a shot nor validation (test: 0).
        "data": _digits(p, classes=list(TARGET), shots=p["shots"], test=0.0),
        # 25 labelled images: batches of 16 give the optimizer two steps per epoch.
        "engine": engine("finetune_epochs", 16), "strategy": {"lr": 5e-3},
        "methods": {
            "scratch": {"from_scratch": True, "mode": "full", "lr": 2e-3, "layer_decay": 1.0},
            # Epochs over cached features cost almost nothing: the probe gets many more.
            "linear_probe": {"mode": "linear", "lr": 1e-2, "compare_uncached": True,
                             "epochs": engine("probe_epochs")["epochs"]},
            "partial": {"mode": "partial", "freeze": "layer3"},
            "full": {"mode": "full", "layer_decay": 0.5},
            **{f"{a}_{mode}": {"model": a, "weights": glyphs(a), "mode": mode}
               for a in p["extra"] for mode in ("linear", "full")},
        }}
    incremental = {
        "stage": "incremental", "seed": seed, "out": f"{out}/incremental",
        "model": {"name": backbone, "weights": pretrained(backbone)},
        "data": _digits(p, shots=p["incremental_shots"],
                        tasks=[list(SOURCE), TARGET[:3], TARGET[3:]]),
        "engine": engine("incremental_epochs"),
        "strategy": {"classes": list(SOURCE), "lr": 3e-3, "memory": 60, "ewc_samples": 24},
        "methods": {m: {"method": m} for m in ("naive", "lwf", "replay", "ewc")}}
    distill = {
        "stage": "distill", "seed": seed, "out": f"{out}/distill",
        "teacher": {"name": p["teacher"], "weights": pretrained(p["teacher"])},
        "model": {"name": student, "kwargs": student_kwargs},
        "data": _digits(p, classes=list(SOURCE), shots=p["distill_shots"]),
        "engine": engine("distill_epochs"), "strategy": {"lr": 2e-3, "temperature": 4.0},
        "methods": {
            # The same number of optimizer steps as the KD methods, whose epochs also
            # cover the unlabelled pool (~25× the labelled samples, 20 batches of 32): in
            # batches of 5 the 25 labels give 5 steps an epoch, so 4× the epochs.
            "hard_labels": {"soft_weight": 0.0, "unlabelled": False, "batch_size": 5,
                            "epochs": engine("distill_epochs")["epochs"] * 4},
            "kd_online": {"mode": "online"},
            "kd_offline": {"mode": "offline", "topk": 3},
        }}
    return [pretrain, finetune, incremental, distill]
