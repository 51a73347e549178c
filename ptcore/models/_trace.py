"""Cut any classifier's forward into a chain of stages, from its module tree and one
torch.fx trace, with no per-family code.

Granularity comes from the module tree: the model's children are the stages, except that a
plain ``nn.Sequential``/``nn.ModuleList`` is opened up one level when no sibling container
has the same kinds of children (a trunk such as VGG's ``features`` or ViT's
``encoder.layers``), while repeated per-resolution containers (ResNet's ``layer1``…``layer4``)
stay whole; a custom module holding exactly one such trunk is opened too (ViT's ``encoder``),
and so is the module holding the classifier when it is more than a Linear (timm's heads).

The traced forward is then cut before each module call where the data passes through a
single tensor. Functional glue (``torch.flatten``, ViT's class token, ``x[:, 0]``) goes with
the module call before it; a segment that could not be cut inside (an Inception block's
branches) is named by the common prefix of its modules. The last stage starts at the last
module with parameters on the data path, the classifier head; where a model combines
several classifiers (timm's distilled DeiT, LeViT and EfficientFormer average ``head`` and
``head_dist``, and say so: ``get_classifier()`` returns both), the last stage starts where
one tensor feeds them all and holds them all.
"""
from __future__ import annotations

import inspect
import sys
from collections import Counter
from dataclasses import dataclass

import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Segment", "trace_segments", "segment_module", "classifier_paths", "HEAD_TYPES"]

_CONTAINERS = (nn.Sequential, nn.ModuleList)
HEAD_TYPES = (nn.Linear, nn.Conv2d)  # SqueezeNet's classifier is a 1×1 convolution


def _is_container(m: nn.Module) -> bool:
    return type(m) in _CONTAINERS


def _kinds(m: nn.Module) -> frozenset:
    return frozenset(type(c) for c in m.children())


def _opened(model: nn.Module) -> set[str]:
    """Paths of the modules whose forward is traced through (the others are stages)."""
    opened = {""}

    def visit(prefix: str, module: nn.Module) -> None:
        kids = list(module.named_children())
        kinds = Counter(_kinds(c) for _, c in kids if _is_container(c))
        for name, child in kids:
            unique = _is_container(child) and kinds[_kinds(child)] == 1
            inner = [c for c in child.children() if _is_container(c)]
            # a top-level module around one trunk of repeated blocks (ViT's encoder)
            trunk = (not prefix and not _is_container(child) and len(inner) == 1
                     and len(_kinds(inner[0])) == 1 and len(inner[0]) > 1)
            if unique or trunk:
                opened.add(prefix + name)
                visit(prefix + name + ".", child)

    visit("", model)
    return opened


def _notrace() -> tuple[tuple, tuple]:
    """timm's own list of functions and modules that torch.fx must not look into (only a
    timm model needs it, and building one has imported timm)."""
    if "timm" not in sys.modules:
        return (), ()
    from timm.layers import _fx

    return tuple(_fx.get_notrace_functions()), tuple(_fx.get_notrace_modules())


class _Tracer(fx.Tracer):
    def __init__(self, opened: set[str]):
        functions, self._leaf_types = _notrace()
        super().__init__(autowrap_functions=functions)
        self.opened = opened

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname not in self.opened or isinstance(m, self._leaf_types)


@dataclass
class Segment:
    """One stage of the traced forward: ``nodes`` in order, fed by ``source`` and producing
    ``result``; ``modules`` are the targets of its module calls."""
    name: str
    nodes: list
    source: fx.Node
    result: fx.Node
    modules: list[str]


def _data_nodes(graph: fx.Graph) -> tuple[fx.Node, list[fx.Node], fx.Node]:
    nodes = list(graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    out = nodes[-1]
    reached = {inputs[0]}
    _drop_guards(graph, inputs[1:])
    nodes = list(graph.nodes)
    data = []
    for n in nodes:
        if n.op not in ("placeholder", "output") and any(a in reached
                                                          for a in n.all_input_nodes):
            reached.add(n)
            data.append(n)
    result = out.args[0]
    if not isinstance(result, fx.Node) or result not in reached:
        raise TypeError("forward does not return one tensor computed from its input")
    return inputs[0], data, result


def _drop_guards(graph: fx.Graph, fixed: list[fx.Node]) -> None:
    """Options traced with their defaults leave a placeholder and a check that the value is
    that default; a stage runs with the defaults anyway."""
    doomed = set(fixed)
    for n in graph.nodes:
        if any(a in doomed for a in n.all_input_nodes):
            doomed.add(n)
    if any(u not in doomed for n in doomed for u in n.users):
        raise TypeError("forward uses more than one input")
    for n in reversed(list(graph.nodes)):
        if n in doomed:
            graph.erase_node(n)


def _cuts(source: fx.Node, data: list[fx.Node], result: fx.Node) -> dict[int, fx.Node]:
    """Positions j in ``data`` before which a single tensor carries everything: that tensor."""
    pos = {n: i for i, n in enumerate(data)}
    pos[source] = -1
    end = len(data)
    last = {n: max([pos[u] if u in pos else end for u in n.users] + [end if n is result
                                                                      else -1])
            for n in [source, *data]}
    cuts = {}
    live: set[fx.Node] = {source}
    for j, n in enumerate(data):
        live = {m for m in live if last[m] >= j}
        if len(live) == 1:
            cuts[j] = next(iter(live))
        live.add(n)
    return cuts


def _name(modules: list[str]) -> str:
    parts = [m.split(".") for m in modules]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common) or modules[-1]


def classifier_paths(model: nn.Module) -> list[str]:
    """Paths of the classifiers of a model that combines several (timm's ``get_classifier()``
    returns a tuple: DeiT distilled, LeViT, EfficientFormer); [] for a model with one."""
    get = getattr(model, "get_classifier", None)
    found = get() if callable(get) else None
    if not isinstance(found, tuple):
        return []
    paths = {id(m): n for n, m in model.named_modules()}
    return [paths[id(m)] for m in found if id(m) in paths]


def _head_start(model: nn.Module, data: list, cuts: dict, head: int) -> int:
    """Where the head stage starts: at the head, or, for several classifiers fed by one
    tensor, at the last cut before them if nothing else with parameters comes after it."""
    if head in cuts:
        return head
    start = max(j for j in cuts if j <= head)
    owners = classifier_paths(model)
    inside = [n.target for n in data[start:] if n.op == "call_module"
              and any(True for _ in model.get_submodule(n.target).parameters())]
    if not owners or not all(any(t == o or t.startswith(o + ".") for o in owners)
                             for t in inside):
        raise TypeError(f"the head {data[head].target!r} is not fed by a single tensor")
    return start


def _partition(model: nn.Module, graph: fx.Graph) -> list[Segment]:
    source, data, result = _data_nodes(graph)
    cuts = _cuts(source, data, result)
    calls = [j for j, n in enumerate(data) if n.op == "call_module"]
    heads = [j for j in calls
             if any(True for _ in model.get_submodule(data[j].target).parameters())]
    if not heads:
        raise TypeError("no module with parameters on the data path to serve as the head")
    head = _head_start(model, data, cuts, heads[-1])
    starts = [0] + [j for j in calls if j in cuts and 0 < j <= head
                    and any(data[i].op == "call_module" for i in range(j))]
    starts = sorted(set(starts + [head]))
    bounds = list(zip(starts, starts[1:] + [len(data)]))
    segments = []
    for a, b in bounds:
        nodes = data[a:b]
        mods = [n.target for n in nodes if n.op == "call_module"]
        src = source if a == 0 else cuts[a]
        res = result if b == len(data) else cuts[b]
        name = (_head_name(model, data[head]) if a == head else _name(mods))
        segments.append(Segment(name, nodes, src, res, mods))
    names = Counter(s.name for s in segments)
    for s in segments:  # a merged segment's common prefix may repeat: use its own call
        if names[s.name] > 1:
            s.name = s.modules[-1]
    return segments


def _head_name(model: nn.Module, first: fx.Node) -> str:
    owners = classifier_paths(model)
    return owners[0] if owners else first.target


def trace_segments(model: nn.Module) -> list[Segment]:
    """The model's forward cut into stage segments (see the module docstring)."""
    try:
        return _trace_segments(model)
    except TypeError as e:
        raise TypeError(f"cannot split a {type(model).__name__} into stages: {e}") from None


def _trace_segments(model: nn.Module) -> list[Segment]:
    opened = _opened(model)
    # options of forward beyond the image (timm ViT's attn_mask) keep their defaults
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    fixed = {p.name: p.default for p in params if p.default is not p.empty}
    while True:
        try:
            graph = _Tracer(opened).trace(model, concrete_args=fixed or None)
        except Exception as e:  # torch.fx fails in many ways on untraceable code
            raise TypeError(f"torch.fx cannot trace its forward ({type(e).__name__}: {e})") from e
        segments = _partition(model, graph)
        head = segments[-1].modules[0]
        module = model.get_submodule(head)
        if isinstance(module, HEAD_TYPES) or head in opened or not any(module.children()):
            return segments
        opened.add(head)  # a head module around the Linear (timm): open it to find the Linear


def segment_module(model: nn.Module, seg: Segment) -> nn.Module:
    """An nn.Module computing ``seg`` that shares the model's submodules and parameters: the
    called module itself when the segment is just that call, else a GraphModule."""
    only = seg.nodes[0]
    if (len(seg.nodes) == 1 and only.op == "call_module" and only.args == (seg.source,)
            and not only.kwargs and seg.result is only):
        return model.get_submodule(only.target)
    g = fx.Graph()
    env = {seg.source: g.placeholder("x")}

    def arg(n: fx.Node) -> fx.Node:
        if n not in env:  # a parameter, buffer or constant computed off the data path
            env[n] = g.node_copy(n, arg)
        return env[n]

    glue = {}
    for n in seg.nodes:
        if n.op == "call_function" and n.target in _DROPOUTS:
            # F.dropout(x, training=self.training) was traced with the mode of the moment;
            # a module follows the mode instead
            bound = inspect.signature(n.target).bind(*n.args, **n.kwargs)
            name = f"glue_dropout_{len(glue)}"
            glue[name] = _DROPOUTS[n.target](bound.arguments.get("p", 0.5))
            env[n] = g.call_module(name, (arg(bound.arguments["input"]),))
        else:
            env[n] = g.node_copy(n, arg)
    g.output(env[seg.result])
    root = {t: model.get_submodule(t) for t in seg.modules}
    root.update(glue)
    for n in g.nodes:
        if n.op == "get_attr":
            root[n.target] = _get_attr(model, n.target)
    return fx.GraphModule(root, g, class_name="Stage")


def _get_attr(model: nn.Module, target: str):
    module, _, attr = target.rpartition(".")
    return getattr(model.get_submodule(module) if module else model, attr)


_DROPOUTS = {F.dropout: nn.Dropout, F.dropout1d: nn.Dropout1d, F.dropout2d: nn.Dropout2d,
             F.dropout3d: nn.Dropout3d, F.alpha_dropout: nn.AlphaDropout,
             F.feature_alpha_dropout: nn.FeatureAlphaDropout}
