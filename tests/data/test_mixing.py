"""MixUp/CutMix of a batch against the definitions written out by hand (float64): soft targets
that sum to 1, mixed inputs lam·x_i + (1-lam)·x_(i-1), CutMix pixels from one of the pair in
the target's shares; the loss on soft targets with label smoothing; the draws follow torch's
global generator (what checkpoints restore); bad alphas fail early."""
import math

import pytest
import torch

from ptcore.data.augment import BatchMix, check_mixing, soft_classification
from ptcore.runtime.rng import get_rng_state, set_rng_state

B, C = 6, 8  # distinct labels: each sample's pair (its predecessor) has another class


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, 10, 12, generator=g, dtype=torch.float64), torch.arange(B)


def test_mixup_blends_inputs_and_targets_by_one_ratio():
    x, y = _batch()
    torch.manual_seed(0)
    xm, t = BatchMix(mixup=0.4)(x, y, C)
    assert t.shape == (B, C) and torch.allclose(t.sum(-1), torch.ones(B, dtype=t.dtype))
    lam = float(t[0, y[0]])
    assert 0 < lam < 1
    for i in range(B):
        prev = (i - 1) % B
        want = torch.zeros(C, dtype=torch.float64)
        want[y[i]], want[y[prev]] = lam, 1 - lam
        torch.testing.assert_close(t[i].double(), want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(xm[i], lam * x[i] + (1 - lam) * x[prev], rtol=1e-12,
                                   atol=1e-12)


def test_cutmix_pastes_a_box_and_targets_its_area():
    x, y = _batch(1)
    torch.manual_seed(3)
    xm, t = BatchMix(cutmix=1.0)(x, y, C)
    assert torch.allclose(t.sum(-1), torch.ones(B, dtype=t.dtype))
    for i in range(B):
        prev = (i - 1) % B
        own = (xm[i] == x[i]).all(0)  # [H, W]: pixels kept from the sample itself
        pasted = (xm[i] == x[prev]).all(0)
        assert bool((own | pasted).all())  # every pixel comes from one of the pair
        kept = float(own.double().mean())
        assert t[i, y[i]].item() == pytest.approx(kept, abs=1e-6)
        assert t[i, y[prev]].item() == pytest.approx(1 - kept, abs=1e-6)


def test_both_choose_one_per_batch_and_follow_the_global_generator():
    x, y = _batch(2)
    mix = BatchMix(mixup=0.2, cutmix=1.0)
    torch.manual_seed(5)
    kinds = set()
    for _ in range(12):
        xm, _ = mix(x, y, C)
        blended = not bool(((xm == x) | (xm == x.roll(1, 0))).all())
        kinds.add("mixup" if blended else "cutmix")
    assert kinds == {"mixup", "cutmix"}
    # a resumed run restores the generator and mixes the same way
    state = get_rng_state()
    first = mix(x, y, C)
    set_rng_state(state)
    again = mix(x, y, C)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_loss_on_soft_targets_with_label_smoothing_by_hand():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g)
    p = torch.softmax(torch.randn(5, 4, generator=g), -1)
    eps = 0.1
    logp = torch.log_softmax(logits.double(), -1)
    ref = -(((1 - eps) * p.double() + eps / 4) * logp).sum(-1).mean()
    out = soft_classification(logits, p, label_smoothing=eps)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert out["accuracy"].item() == pytest.approx(
        (logits.argmax(-1) == p.argmax(-1)).double().mean().item())


@pytest.mark.parametrize("alpha", [-0.1, math.nan, math.inf, True, "0.2"])
def test_bad_alphas_fail_early(alpha):
    with pytest.raises(ValueError, match="mixup must be"):
        check_mixing(alpha, None)
    with pytest.raises(ValueError, match="cutmix must be"):
        BatchMix(cutmix=alpha)


def test_off_and_ignored_labels():
    assert not BatchMix() and not BatchMix(0, 0.0) and BatchMix(0.0, 1.0)
    x, _ = _batch()
    with pytest.raises(ValueError, match="class label in"):
        BatchMix(mixup=0.2)(x, torch.tensor([0, 1, -100, 2, 3, 4]), C)
