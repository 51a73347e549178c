"""kd+crd under DDP (2 processes, gloo on CPU): CRD's heads, memory banks and Z are part of
the trained module, and each rank sees its shard of the samples, so the banks stay equal
only because every step's rows are gathered from all ranks before the update; a run
resumed under DDP after epoch 1 ends bit-identical to an uninterrupted one."""
import torch
from distill_ddp_worker import CRD, N, worker
from test_distill import SEED

from tests.helpers import run_ranks

from ptcore.strategies.distill.crd import ContrastMemory

TIMEOUT_S = 120


def test_kd_plus_crd_agrees_across_ranks_and_resumes(tmp_path):
    run_ranks(worker, tmp_path, timeout=TIMEOUT_S)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    # each rank's teacher ran on its half of the samples (2 epochs × N/2), and 2 probes
    # (the class check, CRD's sizing of the heads)
    assert r0["teacher_samples"] == r1["teacher_samples"] == 2 * N // 2 + 2
    whole = r0["whole"]
    assert {"terms.crd.bank_student", "terms.crd.bank_teacher", "terms.crd.z",
            "terms.crd.embed_student.weight", "terms.crd.embed_teacher.weight"} <= set(whole)
    for got in (r1["whole"], r0["resumed"], r1["resumed"]):
        assert got.keys() == whole.keys()
        assert [k for k in whole if not torch.equal(got[k], whole[k])] == []
    # each rank ran on half the samples, yet every row of both banks was updated (from
    # where the same seed starts them: the student's embedding is its 64 hidden units, the
    # teacher's its 512 flattened features)
    start = ContrastMemory(64, 512, CRD["crd_dim"], N, seed=SEED)
    for side in ("student", "teacher"):
        bank = whole[f"terms.crd.bank_{side}"]
        moved = (bank - getattr(start, f"bank_{side}")).abs().amax(1) > 0
        assert moved.all(), f"{side} bank rows never updated: {(~moved).nonzero().flatten()}"
