"""ptcore's import graph has no circle, counting the imports inside functions too (a circle
held together by late imports is still one), and its packages depend downward only, in the
order of DESIGN.md's map. Read from the source, so it fails on the commit that adds the
wrong import, whatever the tests happen to import first."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "ptcore"
# Lower first: a package may import only packages before it (and the top-level helpers
# _extension, _version, _kd_args, errors, reference).
LAYERS = ["data", "runtime", "ops", "nn", "engine", "models", "cache", "report", "strategies",
          "integrations", "config", "runner", "demo", "commands"]
BASE = {"_extension", "_version", "_kd_args", "errors", "reference", "_C", "info"}


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imports(mods) -> dict[str, set[str]]:
    """Module -> the ptcore modules it imports anywhere in its source."""
    edges = {}
    for name, path in mods.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ptcore"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    compiled = node.module == "ptcore" and alias.name == "_C"
                    found.add(sub if sub in mods or compiled else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("ptcore")}
        edges[name] = {m for m in found if m in mods and m != name}
    return edges


def _circles(edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_import_circle():
    assert _circles(_imports(_modules())) == []


def test_packages_depend_downward():
    edges = _imports(_modules())
    wrong = []
    for module, targets in edges.items():
        src = _package(module)
        if src not in LAYERS:
            continue
        for target in targets:
            dst = _package(target)
            if dst is None or dst == src or dst in BASE:
                continue
            if dst not in LAYERS or LAYERS.index(dst) > LAYERS.index(src):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_the_checks_find_a_circle_and_an_upward_import():
    """The checks above can fail: a made-up graph with both faults."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert LAYERS.index("engine") < LAYERS.index("strategies")
    assert _package("ptcore.engine.loop") == "engine"
    mods = _modules()
    assert "ptcore.runtime.run_folder" in mods and "ptcore.strategies.incremental" in mods


@pytest.mark.parametrize("package", LAYERS)
def test_every_layer_exists(package):
    assert (ROOT / package / "__init__.py").is_file()


def test_data_imports_only_itself():
    """ptcore.data is the bottom of the training stack (docs/data.md): anything may import
    it, so it imports no other part of ptcore."""
    edges = _imports(_modules())
    assert "ptcore.data.augment.mixing" in edges  # augmentation's home is inside
    outside = sorted(f"{m} imports {t}" for m, ts in edges.items() if _package(m) == "data"
                     for t in ts if _package(t) != "data")
    assert outside == []
