"""What runs on a GPU besides the ops: the engine under AMP (fp16 with a GradScaler, and
bf16), NCCL with one rank, and a fine-tuning and a distillation run. Skipped without a
GPU; benchmarks/gpu_check.sh runs them on a lent one."""
import os
import socket
import subprocess
import sys

import pytest
import torch

from ptcore import data, models, strategies
from ptcore.engine import evaluate, fit
from ptcore.data import train_val_test_split

from tests.engine.tiny import tiny_digits, tiny_net

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (cuda)")


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_engine_learns_under_amp_on_cuda(amp, tmp_path):
    train, val, _ = train_val_test_split(tiny_digits(), 0.2, 0.0, seed=0)
    model = tiny_net().cuda()
    history = fit(model, train, torch.optim.AdamW(model.parameters(), 1e-2), epochs=4,
                  batch_size=32, val_data=val, amp=amp, device="cuda", out_dir=tmp_path,
                  progress=False)
    assert history[-1]["val_accuracy"] > 0.6  # chance is 0.1
    assert evaluate(model, val, device="cuda")["accuracy"] > 0.6


def test_nccl_with_one_rank():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import torch, torch.distributed as dist\n"
        "from ptcore.runtime import distributed as D\n"
        "torch.cuda.set_device(0)\n"
        "dist.init_process_group('nccl')\n"
        "x = D.all_sum(torch.ones(3, device='cuda'))\n"
        "print('sum', x.tolist(), D.is_distributed())\n"
        "dist.destroy_process_group()\n")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "sum [1.0, 1.0, 1.0]" in out.stdout


def test_finetune_and_distill_run_on_cuda(tmp_path):
    torch.manual_seed(0)
    digits = data.digits_dataset(image_size=16)
    train, val, _ = data.train_val_test_split(digits, seed=0)
    net = models.create_model("resnet18", weights=None, num_classes=10)
    ft = strategies.FineTune(net, mode="partial", freeze="layer2", lr=1e-3, epochs=2,
                             device="cuda", progress=False)
    ft_result = ft.fit(train, val, out_dir=tmp_path / "ft")["final"]
    assert next(net.parameters()).is_cuda
    shots, rest = data.k_shot(train, 5, seed=0)
    student = models.create_model("resnet18", weights=None, num_classes=10)
    kd = strategies.Distill(net, student, temperature=2.0, mode="offline", topk=5, epochs=1,
                            device="cuda", progress=False)
    kd_result = kd.fit(shots, unlabelled=rest, val=val, out_dir=tmp_path / "kd")["final"]
    for result in (ft_result, kd_result):
        assert all(torch.isfinite(torch.tensor(float(v))) for v in result.values()
                   if isinstance(v, (int, float)))
