"""The native library: it loads, says what it was built with, and falls back when it can't."""
import json
import os
import subprocess
import sys

import pytest
import torch

import ptcore
from ptcore._extension import _torch_mismatch
from ptcore._version import build_tag
from ptcore.cli import main as cli_main

from tests.helpers import requires_native

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **env}, timeout=120)


def test_info_reports_versions_and_backends():
    info = ptcore.info()
    assert info["ptcore"] == ptcore.__version__
    assert info["torch"] == torch.__version__
    if ptcore.has_native():
        assert info["native_loaded"] and info["load_error"] is None
        assert "CPU" in info["backends"]
        assert info["built_with_torch"] == torch.__version__
        # The build's version names what it was built for, as its wheel's filename does.
        tag = build_tag(torch.__version__, info["built_with_cuda"])
        assert info["build"] == f"{ptcore.__version__}+{tag}"
        assert bool(info["cuda_archs"]) == ptcore.has_cuda_kernels()


@requires_native
def test_ops_are_registered_for_the_built_backends():
    for op in ("ptcore::kd_loss_rows", "ptcore::_kd_loss_rows_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA") == \
            ptcore.has_cuda_kernels()
    if ptcore.has_cuda_kernels():
        assert "9.0" in ";".join(ptcore.info()["cuda_archs"])
        assert "CUDA" in ptcore.info()["backends"]


def test_cuda_build_is_required_when_asked():
    """CI sets PTCORE_EXPECT_CUDA=1: the build must then carry the CUDA kernels."""
    if os.environ.get("PTCORE_EXPECT_CUDA") == "1":
        assert ptcore.has_cuda_kernels(), ptcore.info()


def test_cli_info(capsys):
    assert cli_main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ptcore"] == ptcore.__version__
    assert cli_main(["info"]) == 0
    assert "native_loaded" in capsys.readouterr().out


BLOCK_NATIVE = "import sys; sys.modules['ptcore._C'] = None\n"


def test_falls_back_to_reference_with_one_warning():
    code = BLOCK_NATIVE + (
        "import warnings, torch\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import ptcore\n"
        "    s = torch.randn(3, 5, requires_grad=True); t = torch.randn(3, 5)\n"
        "    loss = ptcore.kd_loss(s, t, temperature=2.0); loss.backward()\n"
        "    ref = ptcore.reference.kd_loss(s, t, temperature=2.0)\n"
        "msgs = [str(x.message) for x in w if 'native library unavailable' in str(x.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert not ptcore.has_native() and ptcore.info()['native_loaded'] is False\n"
        "assert torch.allclose(loss, ref) and s.grad is not None\n"
        "print('ok')\n")
    r = _python(code, PTCORE_STRICT="0")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_strict_mode_makes_a_missing_library_an_error():
    r = _python(BLOCK_NATIVE + "import ptcore\n", PTCORE_STRICT="1")
    assert r.returncode != 0
    assert "PTCORE_STRICT=1" in r.stderr


@pytest.mark.parametrize("cmd", [["-m", "ptcore", "info", "--json"]])
def test_command_line_entry_point(cmd):
    r = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ptcore"] == ptcore.__version__


def _built(torch_version, cuda=""):
    return {"torch": torch_version, "cuda": cuda, "with_cuda": bool(cuda)}


@pytest.mark.parametrize("built, running, cuda", [
    (_built("2.14.1+cu130", "13.0"), "2.14.1+cu130", "13.0"),
    (_built("2.14.0+cu130", "13.0"), "2.14.1+cu130", "13.0"),  # patch releases keep the ABI
    (_built("2.14.1+cu130"), "2.14.1+cpu", None),  # CPU kernels need no CUDA runtime
    (_built("2.14.1+cu130"), "2.14.0+cu126", "12.6"),
])
def test_a_library_for_the_same_torch_series_loads(built, running, cuda):
    assert _torch_mismatch(built, running, cuda) is None


@pytest.mark.parametrize("built, running, cuda, tag", [
    (_built("2.13.0+cu130", "13.0"), "2.14.1+cu130", "13.0", "+torch2.14.cu130"),
    (_built("2.14.1+cu130"), "2.15.0+cpu", None, "+torch2.15.cpu"),
    (_built("2.14.1+cu130", "13.0"), "2.14.1+cu126", "12.6", "+torch2.14.cu126"),
    (_built("2.14.1+cu130", "13.0"), "2.14.1+cpu", None, "+torch2.14.cpu"),
])
def test_a_library_for_another_torch_or_cuda_is_refused(built, running, cuda, tag):
    why = _torch_mismatch(built, running, cuda)
    assert built["torch"] in why and running in why  # both versions, by name
    assert tag in why and "rebuild" in why  # and what to do


# Another torch series under the library this checkout built: what a user gets after
# upgrading torch without rebuilding ptcore.
OTHER_TORCH = ("import torch\n"
               "torch.__version__ = torch.torch_version.TorchVersion('2.13.0+cu130')\n")


@requires_native
def test_a_library_built_for_another_torch_falls_back_with_a_warning():
    code = OTHER_TORCH + (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import ptcore\n"
        "msgs = [str(x.message) for x in w if 'native library unavailable' in str(x.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert not ptcore.has_native() and not ptcore.has_cuda_kernels()\n"
        "s = torch.randn(3, 5, requires_grad=True); t = torch.randn(3, 5)\n"
        "loss = ptcore.kd_loss(s, t, temperature=2.0)\n"
        "assert torch.allclose(loss, ptcore.reference.kd_loss(s, t, temperature=2.0))\n"
        "info = ptcore.info()\n"
        "assert info['built_with_torch'] and 'torch2.13' in info['load_error'], info\n"
        "print(msgs[0])\n")
    r = _python(code, PTCORE_STRICT="0")
    assert r.returncode == 0, r.stderr
    assert "2.13.0+cu130" in r.stdout and torch.__version__ in r.stdout


@requires_native
def test_strict_mode_makes_a_library_for_another_torch_an_error():
    r = _python(OTHER_TORCH + "import ptcore\n", PTCORE_STRICT="1")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: PTCORE_STRICT=1"), r.stderr
    assert "2.13.0+cu130" in last and torch.__version__ in last
