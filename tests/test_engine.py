"""``OptimizerStep``, the update every loop shares: clipping recomputed by hand, fine-tuning clipped and stopped on
a non-finite loss."""

import math

import pytest
import torch
from torch import nn

from cliplab.train.engine import OptimizerStep
from helpers import make_tiny_model


def _setup(max_norm=None):
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    params = list(lin.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return lin, params, OptimizerStep(params, opt, sched, max_norm=max_norm)


def test_norm_clipping_and_sgd_update_by_hand():
    lin, params, update = _setup(max_norm=0.05)
    before = [p.detach().clone() for p in params]
    update.zero_grad()
    update.backward((lin(torch.ones(2, 4)) ** 2).sum())
    grads = [p.grad.detach().clone() for p in params]
    norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
    out = update.step()
    coef = min(1.0, 0.05 / (norm + 1e-6))
    assert out["grad_norm"] == pytest.approx(norm, rel=1e-5) and out["clip"] == 0.05 and out["lr"] == 0.1
    for p, b, g in zip(params, before, grads, strict=True):
        assert torch.allclose(p.detach(), b - 0.1 * coef * g, atol=1e-6)
    assert update.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # the schedule advanced


def test_no_clipping_reports_nothing_and_both_clips_are_refused():
    lin, _, update = _setup()
    update.zero_grad()
    update.backward(lin(torch.ones(1, 4)).sum())
    assert update.step()["grad_norm"] is None
    with pytest.raises(ValueError, match="not both"):
        OptimizerStep([], update.optimizer, update.scheduler, max_norm=1.0, clipper=object())


@pytest.fixture(scope="module")
def tiny_world():
    from cliplab.data import shapes

    return make_tiny_model(), shapes("train", n=32, seed=1, image_size=32, task="colour")


def test_finetune_clips_the_gradient_norm(tiny_world):
    from cliplab.finetune import finetune

    model, data = tiny_world
    start = {k: v.clone() for k, v in model.module.state_dict().items()}
    common = dict(method="clipood", steps=2, batch_size=8, lr=1e-2, progress=False)
    free = finetune(model, data, **common)
    clipped = finetune(model, data, max_grad_norm=1e-8, **common)

    def moved(clf):
        return max(float((v - start[k]).abs().max()) for k, v in clf.model.module.state_dict().items()
                   if v.is_floating_point())  # fmt: skip

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.model.module.state_dict().values(),
                                                      b.model.module.state_dict().values(), strict=True))  # fmt: skip

    # AdamW normalises the step size, so a clip shows only through eps (gradients of norm 1e-8 meet eps = 1e-8):
    # the clipped run differs from the free one, and a clip above the norm changes nothing
    assert moved(free) > 0 and moved(clipped) < moved(free)
    assert not same(free, clipped)
    assert same(free, finetune(model, data, max_grad_norm=1e9, **common))


def test_finetune_stops_on_a_non_finite_loss(tiny_world, monkeypatch):
    from cliplab.finetune import finetune, objectives

    model, data = tiny_world
    monkeypatch.setattr(objectives, "margin_metric_softmax", lambda f, *a: f.sum() * float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan at step 1"):
        finetune(model, data, method="clipood", steps=2, batch_size=8, progress=False)
