"""ptcore's fused LM distillation loss against TRL's GKD loss
(``GKDTrainer.generalized_jsd_loss``, TRL's own code, on the models' materialised logits)
for the settings both support: forward KL (TRL's beta = 0), reverse KL (beta = 1) and the
generalised JSD in between, at T = 1 and T = 2, with -100 labels. TRL has no T² factor and
no hard term, so ptcore runs with hard_weight = 0 and its loss is divided by T². Values and
the gradient of every student parameter agree in float64."""
import pytest
import torch

from tests.integrations.hf_fixtures import tiny

from ptcore.integrations.hf import LMDistillLoss

gkd = pytest.importorskip("trl.experimental.gkd", reason="TRL is not installed: "
                          "pip install trl (scripts/setup.sh does)")

V = 300
CASES = [("forward_kl", 0.0, 1.0), ("reverse_kl", 1.0, 2.0), ("jsd", 0.5, 1.0),
         ("jsd", 0.1, 2.0), ("jsd", 0.9, 2.0)]


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, V, (3, 12), generator=g)
    labels = ids.clone()
    labels[0, :4] = -100          # a prompt the user masked
    labels[2, 7:] = -100
    return ids, labels


@pytest.mark.parametrize("divergence,beta,T", CASES)
def test_matches_trl_generalized_jsd(divergence, beta, T):
    student = tiny("llama", V, seed=0).double()
    teacher = tiny("llama", V, seed=1).double()
    ids, labels = _batch()

    # TRL: logits of every position, shifted as GKDTrainer does, -100 rows dropped
    s = student(input_ids=ids).logits[:, :-1]
    with torch.no_grad():
        t = teacher(input_ids=ids).logits[:, :-1]
    ref = gkd.GKDTrainer.generalized_jsd_loss(s, t, labels=labels[:, 1:], beta=beta,
                                              temperature=T)
    ref_grads = torch.autograd.grad(ref, list(student.parameters()))

    fused = LMDistillLoss(student, teacher, temperature=T, divergence=divergence,
                          beta=0.5 if divergence != "jsd" else beta, hard_weight=0.0,
                          soft_weight=1.0)
    ours = fused(ids, labels=labels) / (T * T)
    grads = torch.autograd.grad(ours, list(student.parameters()))

    assert torch.isclose(ours, ref, rtol=1e-10, atol=1e-12), (float(ours), float(ref))
    assert float(ref.detach()) > 1e-5  # the models differ: the comparison is not of zeros
    for (name, _), a, b in zip(student.named_parameters(), grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11, msg=name)
