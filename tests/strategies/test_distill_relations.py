"""DIST and RKD: loss values and gradients against independent float64 references (the
papers' formulas written out directly), gradcheck, and both terms running through Distill
and `ptcore distill`."""
import json

import pytest
import torch
import torch.nn.functional as F

from ptcore.cli import main
from ptcore.strategies.distill.dist import dist_loss
from ptcore.strategies.distill.rkd import rkd_loss

from test_distill import digits, make, small, student_net, teacher_net  # noqa: F401
from test_distill_cli import _teacher_file


def dist_reference(s, t, T, beta, gamma):
    p, q = (s / T).softmax(1), (t / T).softmax(1)
    rho = lambda a, b: torch.corrcoef(torch.stack([a, b]))[0, 1]  # noqa: E731
    inter = 1 - torch.stack([rho(p[i], q[i]) for i in range(len(p))]).mean()
    intra = 1 - torch.stack([rho(p[:, c], q[:, c]) for c in range(p.shape[1])]).mean()
    return T * T * (beta * inter + gamma * intra)


def test_dist_loss_and_gradient_match_the_pearson_formula():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(12, 7, generator=g, dtype=torch.float64, requires_grad=True)
    t = 3 * torch.randn(12, 7, generator=g, dtype=torch.float64)
    got = dist_loss(s, t, temperature=2.0, beta=1.5, gamma=0.5)
    ref = dist_reference(s, t, 2.0, 1.5, 0.5)
    torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-9)
    # (the paper's 1e-8 in the correlation's denominator: gradients agree to ~1e-7)
    torch.testing.assert_close(torch.autograd.grad(got, s)[0], torch.autograd.grad(ref, s)[0],
                               rtol=1e-5, atol=1e-7)
    assert torch.autograd.gradcheck(lambda z: dist_loss(z, t, temperature=2.0), (s,))
    # float32 logits: the same value to float32 rounding; a perfect student: no loss
    torch.testing.assert_close(dist_loss(s.float(), t.float(), temperature=2.0, beta=1.5,
                                         gamma=0.5).double(), ref, rtol=1e-5, atol=1e-6)
    assert dist_loss(t, t).abs() < 1e-6


def rkd_reference(s, t, wd, wa):
    def dist(e):
        d = (e[:, None] - e[None]).norm(dim=2)
        return d / d[d > 0].mean()

    def angle(e):
        v = F.normalize(e[None] - e[:, None], dim=2)  # v[i, j] = e_j - e_i
        return torch.bmm(v, v.transpose(1, 2))

    s, t = s.flatten(1), t.flatten(1)
    return wd * F.smooth_l1_loss(dist(s), dist(t)) + wa * F.smooth_l1_loss(angle(s), angle(t))


def test_rkd_loss_and_gradient_match_distances_and_angles_written_out():
    g = torch.Generator().manual_seed(1)
    # a large common offset: the centred Gram form keeps its precision
    s = (torch.randn(9, 4, 2, 2, generator=g, dtype=torch.float64) + 50).requires_grad_()
    t = torch.randn(9, 30, generator=g, dtype=torch.float64)
    got, ref = rkd_loss(s, t, distance=25.0, angle=50.0), rkd_reference(s, t, 25.0, 50.0)
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(torch.autograd.grad(got, s)[0], torch.autograd.grad(ref, s)[0],
                               rtol=1e-6, atol=1e-9)
    assert torch.autograd.gradcheck(lambda z: rkd_loss(z, t), (s,))
    torch.testing.assert_close(rkd_loss(s.float(), t.float()).double(), ref, rtol=1e-4,
                               atol=1e-5)
    assert rkd_loss(t, 3 * t + 1) < 1e-10  # relations survive scaling and shifting


def test_dist_and_rkd_train_through_distill(digits):  # noqa: F811
    data = small(digits[2], 30), small(digits[3], 60)
    d = make(teacher_net(), student_net(), method="dist", dist_beta=2.0, epochs=2)
    summary = d.fit(*data)
    assert [type(t).__name__ for t in d.terms] == ["DIST"]
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
    r = make(teacher_net(), student_net(), method="rkd", features=["2:8"], rkd_angle=10.0)
    assert [type(t).__name__ for t in r.terms] == ["KD", "RKD"]
    assert r.fit(*data)["history"][0]["train_feature"] > 0
    for kw, match in [({"method": "dist", "topk": 3}, "topk must be None"),
                      ({"method": "dist", "threshold": 0.5}, "threshold must be None"),
                      ({"method": "dist+dkd"}, "at most one of"),
                      ({"method": "rkd", "features": ["2:8"], "rkd_distance": -1.0},
                       "rkd_distance")]:
        with pytest.raises(ValueError, match=match):
            make(teacher_net(), student_net(), **kw)


def test_dist_and_rkd_run_from_the_command_line(tmp_path, capsys):
    args = ["distill", "--teacher", "resnet18", "--teacher-weights", _teacher_file(tmp_path, 2),
            "--student", "mobilenet_v3_small", "--data", "digits", "--image-size", "16",
            "--classes", "0,1", "--labels-per-class", "3", "--epochs", "1",
            "--batch-size", "128", "--no-progress", "--method"]
    assert main(args + ["dist", "--out", str(tmp_path / "dist")]) == 0
    assert json.loads((tmp_path / "dist" / "summary.json").read_text())["method"] == "dist"
    assert main(args + ["rkd", "--features", "avgpool:avgpool", "--out",
                        str(tmp_path / "rkd")]) == 0
    summary = json.loads((tmp_path / "rkd" / "summary.json").read_text())
    assert summary["method"] == "rkd" and summary["final"]["train_feature"] > 0
