"""Tests for cliplab.train.clipping (ZClip, AutoClip).

Gradients are set by hand on a tiny nn.Linear so that the total norm follows a chosen sequence;
the expected behaviour is recomputed here, independently, from the formulas.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cliplab.train import AutoClip, ZClip
from cliplab.train.clipping import _percentile_sorted

# Norm sequence: 5 warm-up steps, then ordinary steps with two spikes (5.0 and 8.0).
WARMUP = 5
NORMS = [1.0, 1.2, 0.9, 1.1, 1.0, 1.05, 0.95, 5.0, 1.0, 1.1, 8.0, 1.0, 0.98, 3.0, 1.02]


def make_model(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 3)  # 15 parameters


def direction(step: int, numel: int = 15) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + step)
    u = torch.randn(numel, generator=gen, dtype=torch.float64)
    return u / u.norm()


def set_grads(model: nn.Module, norm: float, step: int) -> None:
    """Give ``model`` gradients of total L2 norm ``norm`` along a step-dependent direction."""
    params = list(model.parameters())
    u = direction(step, sum(p.numel() for p in params)) * norm
    offset = 0
    for p in params:
        p.grad = u[offset : offset + p.numel()].view_as(p).to(p.dtype).clone()
        offset += p.numel()


def grad_norm(model: nn.Module) -> float:
    return torch.cat([p.grad.reshape(-1).double() for p in model.parameters() if p.grad is not None]).norm().item()


def expected_zclip(
    norms,
    *,
    alpha=0.97,
    z_thresh=2.5,
    eps=1e-6,
    warmup_steps=WARMUP,
    mode="zscore",
    clip_option="adaptive_scaling",
    clip_factor=1.0,
    max_grad_norm=None,
    skip_update_on_spike=False,
):
    """Plain re-statement of ZClip: returns per-step (norm after clipping, mean, var, spike)."""
    buf, mean, var = [], None, None
    rows = []
    for g in norms:
        if mean is None:  # warm-up: collect; only the fixed clip applies
            buf.append(g)
            if len(buf) >= warmup_steps:
                mean = sum(buf) / len(buf)
                var = sum((x - mean) ** 2 for x in buf) / len(buf)
            after = g if max_grad_norm is None else min(g, max_grad_norm)
            rows.append((after, mean, var, False))
            continue
        std = math.sqrt(var)
        if mode == "percentile":
            spike = g > mean + z_thresh * std
            c = mean + z_thresh * std
        else:
            z = (g - mean) / (std + eps)
            spike = z > z_thresh
            if clip_option == "mean":
                c = mean
            else:
                c = clip_factor * (mean + z_thresh**2 * std / z) if spike else None
        target = c if spike else g
        if max_grad_norm is not None:
            target = min(target, max_grad_norm)
        after = min(g, target)
        if not (spike and skip_update_on_spike):
            x = c if spike else g
            mean = alpha * mean + (1 - alpha) * x
            var = alpha * var + (1 - alpha) * (x - mean) ** 2  # the already-updated mean
        rows.append((after, mean, var, spike))
    return rows


def run(clipper, norms, model=None, start=0):
    model = model if model is not None else make_model()
    out = []
    for i, g in enumerate(norms, start=start):
        set_grads(model, g, i)
        before = [p.grad.clone() for p in model.parameters()]
        returned = clipper.step(model)
        after = [p.grad.clone() for p in model.parameters()]
        out.append((returned, grad_norm(model), before, after))
    return out


# ----------------------------------------------------------------------------------------------
# ZClip
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"clip_option": "mean"},
        {"mode": "percentile"},
        {"clip_factor": 0.7},
        {"clip_factor": 1.5},
        {"skip_update_on_spike": True},
        {"alpha": 0.8, "z_thresh": 1.5},
        {"max_grad_norm": 1.08},
        {"max_grad_norm": 1.08, "skip_update_on_spike": True, "clip_option": "mean"},
    ],
)
def test_zclip_matches_formula(kwargs):
    clipper = ZClip(warmup_steps=WARMUP, **kwargs)
    expected = expected_zclip(NORMS, **kwargs)
    model = make_model()
    spikes = 0
    for i, (g, (exp_after, exp_mean, exp_var, exp_spike)) in enumerate(zip(NORMS, expected)):
        ((returned, after, before, grads),) = run(clipper, [g], model=model, start=i)
        assert returned == pytest.approx(g, rel=1e-6)  # norm BEFORE clipping
        assert after == pytest.approx(exp_after, rel=1e-5)
        # clipping only rescales: same direction
        for b, a in zip(before, grads):
            assert torch.allclose(a, b * (after / g), rtol=1e-5, atol=1e-7)
        assert clipper.last_spike == exp_spike
        spikes += exp_spike
        if exp_mean is None:
            assert clipper.mean is None and clipper.var is None and not clipper.initialized
        else:
            assert clipper.mean == pytest.approx(exp_mean, rel=1e-6)
            assert clipper.var == pytest.approx(exp_var, rel=1e-5, abs=1e-9)
    assert spikes >= 2  # the sequence really exercises the spike path


def test_zclip_spikes_are_clipped_to_adaptive_threshold():
    clipper = ZClip(warmup_steps=WARMUP)
    out = run(clipper, NORMS)
    # ordinary steps untouched, spikes 5.0 and 8.0 brought down to near the running mean
    assert out[5][1] == pytest.approx(1.05, rel=1e-6)
    assert 1.0 < out[7][1] < 1.5
    assert 1.0 < out[10][1] < 1.5
    assert out[11][1] == pytest.approx(1.0, rel=1e-6)


def test_zclip_warmup_collects_without_clipping():
    clipper = ZClip(warmup_steps=WARMUP)
    out = run(clipper, NORMS[:WARMUP])
    for (returned, _after, before, grads), g in zip(out, NORMS):
        assert returned == pytest.approx(g, rel=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(before, grads))  # untouched
    assert clipper.initialized
    assert clipper.mean == pytest.approx(np.mean(NORMS[:WARMUP]), rel=1e-6)
    assert clipper.var == pytest.approx(np.var(NORMS[:WARMUP]), rel=1e-5)  # population variance
    # even a huge norm during warm-up is not clipped
    clipper = ZClip(warmup_steps=3)
    out = run(clipper, [1.0, 100.0, 1.0])
    assert out[1][1] == pytest.approx(100.0, rel=1e-6)
    # warmup_steps=0 behaves like 1: the first norm initialises the statistics
    clipper = ZClip(warmup_steps=0)
    run(clipper, [2.0])
    assert clipper.initialized and clipper.mean == pytest.approx(2.0) and clipper.var == 0.0


def test_zclip_skip_update_on_spike_freezes_statistics():
    clipper = ZClip(warmup_steps=WARMUP, skip_update_on_spike=True)
    run(clipper, NORMS[:7])
    mean, var = clipper.mean, clipper.var
    out = run(clipper, [5.0], start=7)
    assert clipper.last_spike
    assert out[0][1] < 1.5  # still clipped
    assert (clipper.mean, clipper.var) == (mean, var)
    # without skipping the statistics move
    other = ZClip(warmup_steps=WARMUP)
    run(other, NORMS[:8])
    assert other.mean != mean


def test_zclip_max_grad_norm_interplay():
    # During warm-up, max_grad_norm clips like torch.nn.utils.clip_grad_norm_.
    clipper = ZClip(warmup_steps=WARMUP, max_grad_norm=1.05)
    out = run(clipper, NORMS)
    assert out[1][1] == pytest.approx(1.05, rel=1e-5)  # 1.2 -> 1.05 in warm-up
    assert out[0][1] == pytest.approx(1.0, rel=1e-6)
    # the fixed clip does not enter the statistics: same mean/var as pure ZClip
    pure = ZClip(warmup_steps=WARMUP)
    run(pure, NORMS)
    assert clipper.mean == pytest.approx(pure.mean, rel=1e-12)
    assert clipper.var == pytest.approx(pure.var, rel=1e-12)
    # after warm-up the effective clip is min(adaptive, max_grad_norm)
    assert out[9][1] == pytest.approx(1.05, rel=1e-5)  # 1.1 is no spike but exceeds 1.05
    assert out[7][1] <= 1.05 + 1e-6
    # the default is pure ZClip: nothing is clipped at 1.0
    assert ZClip().max_grad_norm is None
    out = run(ZClip(warmup_steps=WARMUP), NORMS)
    assert out[1][1] == pytest.approx(1.2, rel=1e-6)


def test_zclip_state_dict_round_trip_continues_identically():
    for cut in (3, 9):  # inside warm-up, after warm-up
        full = ZClip(warmup_steps=WARMUP)
        ref = run(full, NORMS)

        first = ZClip(warmup_steps=WARMUP)
        run(first, NORMS[:cut])
        state = first.state_dict()
        # survives torch.save(weights_only) and JSON
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)
        state = json.loads(json.dumps(state))

        resumed = ZClip(warmup_steps=WARMUP)
        resumed.load_state_dict(state)
        cont = run(resumed, NORMS[cut:], start=cut)
        for (r1, a1, _, g1), (r2, a2, _, g2) in zip(ref[cut:], cont):
            assert r1 == r2 and a1 == a2
            assert all(torch.equal(x, y) for x, y in zip(g1, g2))
        assert (resumed.mean, resumed.var, resumed.num_steps) == (full.mean, full.var, full.num_steps)


def test_zclip_load_state_dict_rejects_bad_state():
    clipper = ZClip()
    with pytest.raises(ValueError):
        clipper.load_state_dict({"num_steps": 0, "buffer": []})
    with pytest.raises(ValueError):
        clipper.load_state_dict({"num_steps": 3, "buffer": [], "mean": 1.0, "var": None})
    with pytest.raises(ValueError):
        clipper.load_state_dict({"num_steps": 3, "buffer": [], "mean": 1.0, "var": -1.0})


def test_parameters_without_grads_are_ignored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    frozen = model[1]
    for p in frozen.parameters():
        p.requires_grad_(False)
    for clipper in (ZClip(warmup_steps=1), AutoClip(percentile=0.0)):
        model[0].weight.grad = torch.full_like(model[0].weight, 3.0)
        model[0].bias.grad = None
        expected = model[0].weight.grad.norm().item()
        assert clipper.step(model) == pytest.approx(expected, rel=1e-6)
        assert all(p.grad is None for p in frozen.parameters()) and model[0].bias.grad is None

    # no gradient at all: 0.0 and no state change
    model.zero_grad(set_to_none=True)
    z = ZClip(warmup_steps=2)
    assert z.step(model) == 0.0 and z.num_steps == 0 and z.state_dict()["buffer"] == []
    a = AutoClip()
    assert a.step(model) == 0.0 and a.norms == []


def test_accepted_inputs_agree():
    base = make_model()
    set_grads(base, 2.0, 0)
    norms = []
    for make_arg in (
        lambda m: m,
        lambda m: list(m.parameters()),
        lambda m: m.parameters(),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1).param_groups,
        lambda m: [m.weight, m.bias, m.weight],  # duplicates counted once
    ):
        m = make_model()
        set_grads(m, 2.0, 0)
        norms.append(ZClip().step(make_arg(m)))
    assert norms == pytest.approx([2.0] * len(norms), rel=1e-6)
    assert norms[0] == norms[1] == norms[2] == norms[3] == norms[4]
    m = make_model()
    m.weight.grad = torch.ones_like(m.weight)
    assert ZClip().step(m.weight) == pytest.approx(math.sqrt(12), rel=1e-6)
    with pytest.raises(TypeError):
        ZClip().step(3.0)


def test_mixed_dtypes_norm():
    torch.manual_seed(0)
    a = nn.Parameter(torch.zeros(1000, dtype=torch.bfloat16))
    b = nn.Parameter(torch.zeros(7, dtype=torch.float64))
    a.grad = torch.randn(1000).to(torch.bfloat16)
    b.grad = torch.randn(7, dtype=torch.float64)
    expected = torch.cat([a.grad.double(), b.grad]).norm().item()
    assert ZClip().step([a, b]) == pytest.approx(expected, rel=1e-6)


def test_non_finite_norm_leaves_everything_alone():
    for clipper in (ZClip(warmup_steps=1), AutoClip()):
        model = make_model()
        run(clipper, [1.0, 1.1])
        state = clipper.state_dict()
        model.weight.grad = torch.full_like(model.weight, float("inf"))
        model.bias.grad = torch.ones_like(model.bias)
        assert math.isinf(clipper.step(model))
        assert torch.equal(model.bias.grad, torch.ones_like(model.bias))
        after = clipper.state_dict()
        for key in ("num_steps", "buffer", "mean", "var", "norms"):
            assert after.get(key) == state.get(key)
        assert clipper.last_clip is None  # nothing was clipped on this step


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0.0},
        {"alpha": 1.0},
        {"alpha": -0.5},
        {"alpha": float("nan")},
        {"z_thresh": -1.0},
        {"z_thresh": 0.0},
        {"mode": "median"},
        {"clip_option": "clamp"},
        {"mode": "percentile", "clip_option": "clamp"},
        {"max_grad_norm": 0.0},
        {"max_grad_norm": -1.0},
        {"eps": 0.0},
        {"warmup_steps": -1},
        {"warmup_steps": 2.5},
        {"clip_factor": 0.0},
        {"skip_update_on_spike": "yes"},
    ],
)
def test_zclip_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ZClip(**kwargs)


def test_zclip_options_case_insensitive():
    z = ZClip(mode="ZScore", clip_option="Mean")
    assert (z.mode, z.clip_option) == ("zscore", "mean")
    assert ZClip(mode="percentile", z_thresh=0.0).z_thresh == 0.0


# ----------------------------------------------------------------------------------------------
# AutoClip
# ----------------------------------------------------------------------------------------------


def test_percentile_matches_numpy_bitwise():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 50):
        values = sorted(rng.lognormal(size=n).tolist())
        for p in (0.0, 10.0, 12.5, 33.3, 50.0, 75.0, 90.0, 99.9, 100.0):
            assert _percentile_sorted(values, p) == float(np.percentile(values, p))


@pytest.mark.parametrize("percentile,history", [(10.0, None), (50.0, None), (25.0, 4), (0.0, None), (100.0, 3)])
def test_autoclip_matches_np_percentile(percentile, history):
    clipper = AutoClip(percentile=percentile, history=history)
    model = make_model()
    seen = []
    for i, g in enumerate(NORMS):
        ((returned, after, before, grads),) = run(clipper, [g], model=model, start=i)
        seen.append(returned)
        window = seen if history is None else seen[-history:]
        threshold = float(np.percentile(window, percentile))
        assert returned == pytest.approx(g, rel=1e-6)
        assert clipper.threshold == pytest.approx(threshold, rel=1e-12)
        # clip_grad_norm_ semantics: scale by min(1, c / (g + 1e-6))
        assert after == pytest.approx(g * min(1.0, threshold / (returned + 1e-6)), rel=1e-6)
        for b, a in zip(before, grads):
            assert torch.allclose(a, b * (after / g), rtol=1e-5, atol=1e-7)
        # pseeth/autoclip does exactly this with the history of norms
        ref = [b.clone().requires_grad_() for b in before]
        for r, b in zip(ref, before):
            r.grad = b.clone()
        torch.nn.utils.clip_grad_norm_(ref, float(np.percentile(window, percentile)))
        for r, a in zip(ref, grads):
            torch.testing.assert_close(a, r.grad, rtol=1e-6, atol=1e-8)
    assert clipper.norms == (seen if history is None else seen[-history:])


def test_autoclip_state_dict_round_trip():
    full = AutoClip(percentile=20.0, history=6)
    ref = run(full, NORMS)
    first = AutoClip(percentile=20.0, history=6)
    run(first, NORMS[:8])
    state = json.loads(json.dumps(first.state_dict()))
    resumed = AutoClip(percentile=20.0, history=6)
    resumed.load_state_dict(state)
    cont = run(resumed, NORMS[8:], start=8)
    for (r1, a1, _, g1), (r2, a2, _, g2) in zip(ref[8:], cont):
        assert r1 == r2 and a1 == a2
        assert all(torch.equal(x, y) for x, y in zip(g1, g2))
    assert resumed.norms == full.norms and resumed.num_steps == full.num_steps
    # a shorter window keeps only the most recent norms
    short = AutoClip(history=2)
    short.load_state_dict(state)
    assert short.norms == first.norms[-2:]


@pytest.mark.parametrize("kwargs", [{"percentile": -1.0}, {"percentile": 100.5}, {"history": 0}, {"history": 2.0}])
def test_autoclip_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        AutoClip(**kwargs)


# ----------------------------------------------------------------------------------------------
# Against the authors' package (optional: pip install zclip==1.0.0 --no-deps)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_grad_norm": 1.0},  # the reference's defaults
        {"max_grad_norm": None},
        {"max_grad_norm": None, "clip_option": "mean"},
        {"max_grad_norm": None, "clip_factor": 1.5},
        {"max_grad_norm": None, "mode": "percentile", "z_thresh": 1.5},
        {"max_grad_norm": 1.08, "clip_factor": 0.8, "skip_update_on_spike": True},
        {"max_grad_norm": None, "alpha": 0.9, "z_thresh": 2.0, "skip_update_on_spike": True},
    ],
)
def test_zclip_matches_reference_package(kwargs):
    zclip = pytest.importorskip("zclip")
    ours = ZClip(warmup_steps=WARMUP, **kwargs)
    theirs = zclip.ZClip(warmup_steps=WARMUP, **kwargs)
    m1, m2 = make_model(), make_model()
    for i, g in enumerate(NORMS):
        set_grads(m1, g, i)
        set_grads(m2, g, i)
        assert ours.step(m1) == pytest.approx(theirs.step(m2), rel=1e-6)
        for p1, p2 in zip(m1.parameters(), m2.parameters()):
            torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-5, atol=1e-7)
        if theirs.initialized:
            assert ours.mean == pytest.approx(theirs.mean, rel=1e-6)
            assert ours.var == pytest.approx(theirs.var, rel=1e-5, abs=1e-12)
        else:
            assert not ours.initialized


def test_sparse_gradients():
    torch.manual_seed(0)
    emb, lin = nn.Embedding(10, 3, sparse=True), nn.Linear(3, 1)
    lin(emb(torch.tensor([1, 2, 1]))).sum().backward()
    params = [emb.weight, lin.weight, lin.bias]
    dense = [p.grad.to_dense().clone() for p in params]
    expected = torch.cat([d.reshape(-1) for d in dense]).norm().item()
    clipper = ZClip(warmup_steps=1, max_grad_norm=expected / 2)
    assert clipper.step(params) == pytest.approx(expected, rel=1e-6)
    for p, d in zip(params, dense):
        torch.testing.assert_close(p.grad.to_dense(), d * (expected / 2) / (expected + 1e-6))
