"""ptcore.data is the bottom of the training stack: its modules import no other part of
ptcore (models, engine, strategies, ...), so anything may import them without a circle."""
import ast
from pathlib import Path

import ptcore.data

DATA = Path(ptcore.data.__file__).parent


def _ptcore_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            yield names[0] if node.module != "ptcore" else names[1]
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_data_imports_only_itself():
    modules = sorted(DATA.rglob("*.py"))
    assert DATA / "augment" / "mixing.py" in modules  # augmentation's home is inside
    outside = {f"{p.relative_to(DATA)}: {name}" for p in modules
               for name in _ptcore_imports(p)
               if name.split(".")[0] == "ptcore" and not name.startswith("ptcore.data")}
    assert not outside, sorted(outside)
