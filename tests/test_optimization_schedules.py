"""The shared optimizers and schedules (``cliplab.optimization``) against torch's own, step by step."""

from __future__ import annotations

import math

import pytest
import torch

from cliplab.optimization import cosine_annealing, sgd, warmup_cosine


def _run(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, p: torch.Tensor, steps: int):
    lrs, values = [], []
    for t in range(steps):
        p.grad = torch.full_like(p, 0.1 * (t + 1)) + 0.5 * p.detach()
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
        values.append(p.detach().clone())
    return lrs, torch.stack(values)


@pytest.mark.parametrize(("lr", "total"), [(0.002, 5), (0.002, 50), (0.02, 8), (0.005, 200)])
def test_prompt_learners_schedule_is_torchs_cosine_annealing_bit_for_bit(lr: float, total: int) -> None:
    """CoOp's recipe (SGD lr 0.002, momentum 0.9, weight decay 5e-4, cosine to 0 over all steps), built by the
    shared module, equals torch's SGD + CosineAnnealingLR built directly: every LR and every parameter value."""
    p_shared = torch.nn.Parameter(torch.linspace(-1, 1, 7, dtype=torch.float64))
    p_torch = torch.nn.Parameter(p_shared.detach().clone())
    opt = sgd([p_shared], lr=lr, momentum=0.9, weight_decay=5e-4)
    ref_opt = torch.optim.SGD([p_torch], lr=lr, momentum=0.9, weight_decay=5e-4)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=total)
    lrs, values = _run(opt, cosine_annealing(opt, total), p_shared, total)
    ref_lrs, ref_values = _run(ref_opt, ref_sched, p_torch, total)
    assert lrs == ref_lrs
    assert torch.equal(values, ref_values)
    # the formula η_t = ½·η_0·(1 + cos(π·t/T)), recomputed independently (torch's recursion agrees to rounding)
    closed = [lr * 0.5 * (1 + math.cos(math.pi * t / total)) for t in range(1, total + 1)]
    assert lrs == pytest.approx(closed, rel=1e-12, abs=1e-18)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-18)
    # and it is the shared warm-up + cosine multiplier with no warm-up, to rounding
    assert lrs == pytest.approx([lr * warmup_cosine(t, 0, total) for t in range(1, total + 1)], rel=1e-12, abs=1e-18)


def test_coop_trains_with_the_shared_sgd_and_cosine_schedule(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CoOp fit (12 features, batch 4, 2 epochs: 6 steps) builds its optimizer and schedule from
    ``cliplab.optimization``; its LRs are torch's CosineAnnealingLR over the 6 steps from lr 0.002."""
    import cliplab.adapt.prompting.learner as learner
    from cliplab.adapt.prompting import CoOp

    seen: list[tuple[torch.optim.Optimizer, int]] = []
    lrs: list[float] = []

    def spy(optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LRScheduler:
        seen.append((optimizer, total))
        sched = cosine_annealing(optimizer, total)
        step = sched.step

        def recorded_step() -> None:
            step()
            lrs.append(optimizer.param_groups[0]["lr"])

        sched.step = recorded_step  # type: ignore[method-assign]
        return sched

    monkeypatch.setattr(learner, "cosine_annealing", spy)
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(12, tiny.encode_texts(["a"]).shape[1], generator=g), dim=-1)
    CoOp(epochs=2, batch_size=4, seed=0).fit(tiny, feats, torch.arange(12) % 3, ["a", "b", "c"])
    assert len(seen) == 1 and seen[0][1] == 6
    opt = seen[0][0]
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["initial_lr"], group["momentum"], group["weight_decay"]) == (0.002, 0.9, 5e-4)
    p = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.SGD([p], lr=0.002)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=6)
    ref = []
    for _ in range(6):
        ref_opt.step()
        ref_sched.step()
        ref.append(ref_opt.param_groups[0]["lr"])
    assert lrs == ref
