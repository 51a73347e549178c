"""Plain-language findings computed from a run's numbers: what each strategy bought over
its baseline. Every sentence is derived from results.json, so it says what this run
measured, including when a method did *not* help."""
from __future__ import annotations

__all__ = ["findings"]


def _delta(a: float, b: float) -> str:
    return f"{100.0 * (a - b):+.1f} points"


def _times(a: float, b: float) -> str:
    if a <= 0 or b <= 0:
        return "n/a"
    return f"{b / a:.1f}× faster" if a < b else f"{a / b:.1f}× slower"


def _finetune(m: dict) -> list[str]:
    out = []
    base = m.get("scratch")
    for name in ("linear_probe", "partial", "full"):
        if base is None or name not in m:
            continue
        r = m[name]
        out.append(f"`{name}` vs `scratch`: {_delta(r['accuracy'], base['accuracy'])} accuracy, "
                   f"training {_times(r['train_seconds'], base['train_seconds'])} "
                   f"({r['train_seconds']:.1f}s vs {base['train_seconds']:.1f}s).")
    probe = m.get("linear_probe", {})
    if "epoch_seconds" in probe and "uncached_epoch_seconds" in probe:
        out.append(f"`linear_probe` from cached features: {probe['epoch_seconds']:.3f}s per "
                   f"epoch vs {probe['uncached_epoch_seconds']:.3f}s through the frozen "
                   f"backbone ({_times(probe['epoch_seconds'], probe['uncached_epoch_seconds'])}).")
    return out


def _incremental(m: dict) -> list[str]:
    base = m.get("naive")
    if base is None:
        return []
    out = []
    for name, r in m.items():
        if name == "naive":
            continue
        line = (f"`{name}` vs `naive`: average incremental accuracy "
                f"{_delta(r['average_incremental_accuracy'], base['average_incremental_accuracy'])}, "
                f"final accuracy {_delta(r['final_accuracy'], base['final_accuracy'])}")
        if r["forgetting"] is not None and base["forgetting"] is not None:
            line += (f", forgetting {100 * r['forgetting']:.1f} vs "
                     f"{100 * base['forgetting']:.1f} points")
        out.append(line + ".")
    return out


def _distill(m: dict) -> list[str]:
    base = m.get("hard_labels")
    out = [f"`{name}` vs `hard_labels`: {_delta(r['accuracy'], base['accuracy'])} student "
           "accuracy." for name, r in m.items() if base is not None and name != "hard_labels"]
    online, offline = m.get("kd_online"), m.get("kd_offline")
    if online and offline:
        out.append(f"Cached teacher (`kd_offline`) vs running it every step (`kd_online`): "
                   f"{_delta(offline['accuracy'], online['accuracy'])}, training "
                   f"{_times(offline['train_seconds'], online['train_seconds'])}.")
    return out


_BY_STAGE = {"finetune": _finetune, "incremental": _incremental, "distill": _distill}


def findings(stage: str, methods: dict) -> list[str]:
    """Sentences comparing each method of ``stage`` with the stage's baseline."""
    fn = _BY_STAGE.get(stage)
    return fn(methods) if fn else []
