"""A CPU-only wheel, built from a copy of this source tree, works where only torch is.

The wheel goes into a fresh virtual environment that sees the system's torch and the runtime
dependencies through a .pth file (copying torch into it would take gigabytes) but not the
system's ptcore, and runs there from a directory outside the source tree, with no CUDA
toolkit. About 2 minutes, nearly all of it compiling; `-m "not slow"` deselects it.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from ptcore._version import __version__, build_tag, torch_series

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Build outputs and caches of the checkout stay behind: the wheel is built from sources only.
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "*.so", "generated", "__pycache__", ".pytest_cache",
    ".hypothesis", ".benchmarks", "runs")

# Runs inside the venv: the installed copy loads, reports its build, and agrees with the
# reference on both op families (float64, so only summation order differs).
SMOKE = r"""
import sys, torch, ptcore
from ptcore import reference
assert ptcore.__file__.startswith(sys.prefix), ptcore.__file__
assert ptcore._extension.native_library().__file__.startswith(sys.prefix)
torch.manual_seed(0)
s = torch.randn(37, 1000, dtype=torch.float64, requires_grad=True)
t = torch.randn(37, 1000, dtype=torch.float64)
loss = ptcore.kd_loss(s, t, temperature=2.0)
(grad,) = torch.autograd.grad(loss, s)
s_ref = s.detach().clone().requires_grad_()
ref = reference.kd_loss(s_ref, t, temperature=2.0)
(grad_ref,) = torch.autograd.grad(ref, s_ref)
torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-10)
torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)
x = torch.randn(50, 64)
codes, scales = ptcore.ops.quantize_rows(x)
idx = torch.tensor([3, 0, 49, 3, 17])
for store, sc in ((codes, scales), (x.half(), None)):
    out = ptcore.ops.gather_rows(store, sc, idx, torch.float32)
    torch.testing.assert_close(out, reference.gather_rows(store, sc, idx, torch.float32),
                               rtol=0, atol=0)
print("smoke ok")
"""


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def cpu_wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCES)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "FORCE_CUDA", "TORCH_CUDA_ARCH_LIST")}
    env.update(PTCORE_CUDA="0", CUDA_HOME=str(tmp / "no-cuda-toolkit"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
          "-w", str(tmp / "dist"), str(src)], cwd=tmp, env=env)
    (wheel,) = (tmp / "dist").glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(cpu_wheel, tmp_path_factory):
    """A venv without system site-packages, with the wheel installed; torch and the runtime
    dependencies come from the system's site-packages as a plain path (a .pth line), so
    that directory's own .pth files, among them an editable ptcore's finder, stay inert."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    python = path / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    torch_site = os.path.dirname(os.path.dirname(torch.__file__))
    with open(os.path.join(site.strip(), "system_torch.pth"), "w") as f:
        f.write(torch_site + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", str(cpu_wheel)])
    return path


def _venv_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PTCORE_STRICT="1", CUDA_HOME=str(tmp_path / "no-cuda-toolkit"))
    return env


@pytest.mark.slow
def test_wheel_is_tagged_and_holds_only_the_package(cpu_wheel):
    tag = build_tag(torch.__version__, None)
    assert cpu_wheel.name.startswith(f"ptcore-{__version__}+{tag}-"), cpu_wheel.name
    names = zipfile.ZipFile(cpu_wheel).namelist()
    assert [n for n in names if n.startswith("ptcore/_C") and n.endswith(".so")], names
    # The demo's pretrained backbone ships as package data (docs/demo.md).
    assert {"ptcore/weights/glyphs/resnet18/model.pt",
            "ptcore/weights/glyphs/resnet18/provenance.json"} <= set(names), names
    top = {n.split("/")[0] for n in names}
    assert top == {"ptcore", f"ptcore-{__version__}+{tag}.dist-info"}, top
    metadata = zipfile.ZipFile(cpu_wheel).read(
        f"ptcore-{__version__}+{tag}.dist-info/METADATA").decode()
    assert f"Requires-Dist: torch=={torch_series(torch.__version__)}.*" in metadata, metadata


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_source_tree(venv, tmp_path):
    env = _venv_env(tmp_path)
    python = str(venv / "bin" / "python")
    info = json.loads(_run([python, "-m", "ptcore", "info", "--json"], cwd=tmp_path, env=env))
    assert info["native_loaded"] and info["backends"] == ["CPU"], info
    assert info["build"] == f"{__version__}+{build_tag(torch.__version__, None)}"
    assert info["built_with_torch"] == torch.__version__ and info["cuda_archs"] == []
    assert "smoke ok" in _run([python, "-c", SMOKE], cwd=tmp_path, env=env)
    # The console script the wheel declares works too.
    assert "native_loaded" in _run([str(venv / "bin" / "ptcore"), "info"], cwd=tmp_path, env=env)
