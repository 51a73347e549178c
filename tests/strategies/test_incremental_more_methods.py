"""ER-ACE, A-GEM and MAS: each mechanism against an independent float64 reference through the
run's own step (or hook), then what each learns on the digits protocol, and the CLI."""
import json

import pytest
import torch
import torch.nn.functional as F
from test_incremental_helpers import (make, mean_over_seeds, one_thread, run, scenario,
                                      tiny_model)

from ptcore import engine
from ptcore.cli import main
from ptcore.strategies.incremental.agem import project
from ptcore.strategies.incremental.mas import importance


class Captured(Exception):
    pass


def captured_step(monkeypatch, method: str, **kw) -> tuple:
    """(run, step_fn, before_step, data) of task 1 of ``method``, caught before it trains."""
    def fit(model, data, optimizer, *, step_fn, before_step, **rest):
        raise Captured(step_fn, before_step, data)

    train, test = scenario()
    inc = make(method, memory=20, **kw)
    monkeypatch.setattr(engine, "fit", fit)
    with pytest.raises(Captured) as caught:
        inc.fit(list(train[:2]), list(test[:2]))
    return (inc, *caught.value.args)


def batch_of(data, positions):
    return [torch.stack([torch.as_tensor(data[i][k]) for i in positions])
            for k in range(len(data[0]))]


def test_er_ace_masks_the_old_classes_out_of_the_new_samples_loss(monkeypatch):
    inc, step, _, data = captured_step(monkeypatch, "er-ace")
    positions = list(range(0, len(data), 7))  # new samples (first) and exemplars (last)
    x, y, replayed = batch_of(data, positions)
    assert replayed.any() and (~replayed).any() and set(y[~replayed].tolist()) == {2, 3}
    model = inc.model.eval()  # BatchNorm: the same logits in the step and the reference
    out = step(model, [x, y, replayed])
    z = model(x).double().detach()
    ref_new = -torch.stack([z[i, y[i]] - z[i, 2:4].logsumexp(0)
                            for i in torch.nonzero(~replayed)[:, 0]]).mean()
    ref_old = -torch.stack([z[i, y[i]] - z[i].logsumexp(0)
                            for i in torch.nonzero(replayed)[:, 0]]).mean()
    torch.testing.assert_close(out["ace"].double(), ref_new, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss"].double(), ref_new + ref_old, rtol=1e-5, atol=1e-6)
    # the old classes' logits receive no gradient from the new samples
    logits = torch.randn(4, 4, requires_grad=True)
    from ptcore.strategies.incremental.er_ace import ace_loss

    ace_loss(logits, torch.tensor([2, 3, 3, 2])).backward()
    assert logits.grad[:, :2].abs().max() == 0 and logits.grad[:, 2:].abs().max() > 0


def test_a_gem_projects_only_a_conflicting_gradient():
    g0, ref = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    g = g0 - 2 * (g0 @ ref).abs() / (ref @ ref) * ref  # conflicting: g·ref < 0
    assert g @ ref < 0
    out = project(g, ref)
    torch.testing.assert_close(out, g - (g @ ref) / (ref @ ref) * ref)
    assert abs(float(out @ ref)) < 1e-10
    agree = g0 + 2 * (g0 @ ref).abs() / (ref @ ref) * ref
    assert project(agree, ref) is agree


def test_a_gem_s_hook_leaves_a_gradient_that_does_not_raise_the_exemplars_loss(monkeypatch):
    inc, step, before_step, data = captured_step(monkeypatch, "a-gem", agem_batch=8)
    model = inc.model
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(1)
    x, y = batch_of(data, range(16))
    step(model, [x, y])["loss"].backward()
    g = torch.cat([p.grad.flatten() for p in params])
    state = torch.get_rng_state()
    before_step(model)  # draws its exemplars from the global generator
    after = torch.cat([p.grad.flatten() for p in params])
    torch.set_rng_state(state)  # the same exemplars, the reference gradient by hand
    exemplars = inc.methods["a-gem"].drawn_from
    xm, ym = batch_of(exemplars, torch.randperm(len(exemplars))[:8].tolist())
    assert set(ym.tolist()) <= {0, 1}  # the old task's exemplars
    ref = torch.cat([gr.flatten() for gr in torch.autograd.grad(
        F.cross_entropy(model(xm), ym), params, materialize_grads=True)])
    assert float(after @ ref) >= -1e-4 * float(ref.norm() * after.norm())
    expected = g if g @ ref >= 0 else g - (g @ ref) / (ref @ ref) * ref
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-6)


def test_mas_importance_is_the_mean_absolute_gradient_of_the_squared_output_norm():
    model = tiny_model(3).double()
    data = [(torch.randn(3, 16, 16, dtype=torch.float64), 0) for _ in range(5)]
    got = importance(model, data, device="cpu", batch_size=2)
    model.eval()
    params = dict(model.named_parameters())
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, _ in data:
        grads = torch.autograd.grad(model(x[None]).pow(2).sum(), list(params.values()))
        for n, gr in zip(params, grads):
            expected[n] += gr.abs() / len(data)
    assert got.keys() == expected.keys()
    for n in got:
        torch.testing.assert_close(got[n].double(), expected[n], rtol=1e-5, atol=1e-9)


def test_er_ace_beats_naive_on_every_seed():
    for seed in (0, 1, 2):
        naive, ace = run("naive", seed=seed), run("er-ace", seed=seed)
        assert ace["average_incremental_accuracy"] > naive["average_incremental_accuracy"] + 0.2
        assert ace["final_accuracy"] > naive["final_accuracy"] + 0.3


def test_mas_and_a_gem_forget_less_than_naive_when_the_task_is_known():
    """Means over seeds 0-2 (test_incremental_helpers.mean_over_seeds). Forgetting / final
    accuracy, AVX-512: naive 0.134 / 0.823, mas (λ = 0.1) 0.033 / 0.869, a-gem 0.120 / 0.839;
    AVX2: naive 0.176 / 0.809, mas 0.052 / 0.862, a-gem 0.132 / 0.828. A-GEM's effect is
    the smaller and not on every seed (seed 2 forgets more than naive on both)."""
    def mean(method, key, **kw):
        return mean_over_seeds(method, key, **kw)

    assert mean("mas", "forgetting", mas_lambda=0.1) < mean("naive", "forgetting") / 2
    assert mean("mas", "final_accuracy", mas_lambda=0.1) > mean("naive", "final_accuracy") + 0.02
    assert mean("a-gem", "forgetting") < mean("naive", "forgetting")
    assert mean("a-gem", "final_accuracy") > mean("naive", "final_accuracy")
    assert all("train_mas" in e for e in run("mas", "task", mas_lambda=0.1)["history"][2])


def test_the_new_methods_run_from_the_command_line(tmp_path, capsys):
    common = ["--model", "mobilenet_v3_small", "--data", "digits", "--image-size", "16",
              "--data-classes", "0,1,2,3", "--tasks", "0,1;2,3", "--shots", "4",
              "--test-fraction", "0.05", "--epochs", "1", "--batch-size", "8", "--memory", "4",
              "--no-progress"]
    for method in ("er-ace", "a-gem+mas"):
        out = tmp_path / method
        with one_thread():
            assert main(["incremental", "--method", method, "--out", str(out)] + common) == 0
        res = json.loads((out / "results.json").read_text())
        # the memory's 4 (A-GEM's `exemplars` attribute once hid Method.exemplars())
        assert res["method"] == method and res["exemplars"] == 4
    assert main(["incremental", "--method", "er-ace+replay", "--out", str(tmp_path / "no")]
                + common) == 2
    assert "er-ace replays the memory itself" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["incremental", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(f"{m}:" in help_text for m in ("er-ace", "a-gem", "mas"))
