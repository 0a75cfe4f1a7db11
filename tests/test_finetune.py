"""Robust fine-tuning: WiSE-FT, CE with a zero-shot head, FLYP, CLIPood, checkpoints/resume, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import beta as beta_dist
from torch.nn import functional as F

from cliplab.finetune import (
    BetaMovingAverage,
    ImageClassifier,
    finetune,
    interpolate_heads,
    margin_metric_softmax,
    robustness_sweep,
    wise_ft,
    wise_ft_classifier,
)
from helpers import make_tiny_model


@pytest.fixture(scope="module")
def world():
    from cliplab.data import shapes

    return shapes("train", n=48, seed=1, image_size=32, task="colour"), shapes(
        "test", n=24, seed=2, image_size=32, task="colour"
    )


def state(model):
    return {k: v.clone() for k, v in model.module.state_dict().items()}


def perturbed(model, seed=1):
    from cliplab.finetune import clone_model

    other = clone_model(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return other


# -- WiSE-FT --------------------------------------------------------------------------------------
def test_wise_ft_endpoints_are_exact_and_the_middle_is_the_mean(tiny):
    ft = perturbed(tiny)
    zs_state, ft_state = state(tiny), state(ft)
    at0, at1, mid = wise_ft(tiny, ft, 0.0), wise_ft(tiny, ft, 1.0), wise_ft(tiny, ft, 0.3)
    assert all(torch.equal(at0.module.state_dict()[k], zs_state[k]) for k in zs_state)
    assert all(torch.equal(at1.module.state_dict()[k], ft_state[k]) for k in ft_state)
    for k, v in mid.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.7 * zs_state[k] + 0.3 * ft_state[k], rtol=1e-6, atol=1e-6)
    assert all(torch.equal(tiny.module.state_dict()[k], zs_state[k]) for k in zs_state)  # inputs untouched
    assert all(torch.equal(ft.module.state_dict()[k], ft_state[k]) for k in ft_state)
    px = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(at1.encode_images(px), ft.encode_images(px))
    assert at0.module is not tiny.module and at1.module is not ft.module


def test_wise_ft_bad_input(tiny):
    with pytest.raises(ValueError, match="alpha"):
        wise_ft(tiny, tiny, 1.5)
    other = make_tiny_model(image_size=16)
    with pytest.raises(ValueError, match="shape"):
        wise_ft(tiny, other, 0.5)
    h = torch.randn(3, 4)
    assert torch.equal(interpolate_heads(h, h + 1, 0.0), h)
    assert torch.equal(interpolate_heads(h, h + 1, 1.0), h + 1)


def test_wise_ft_classifier_mixes_heads(tiny, world):
    train, test = world
    zs = ImageClassifier.zero_shot(tiny, train.classnames, train.templates)
    ft = ImageClassifier(perturbed(tiny), zs.head + 1.0, zs.classnames, zs.templates, text_head=False)
    mid = wise_ft_classifier(zs, ft, 0.5)
    torch.testing.assert_close(mid.head, zs.head + 0.5)
    sweep = robustness_sweep(zs, ft, test, {"same": test}, alphas=(0.0, 0.5, 1.0))
    assert sweep["id"][0] == pytest.approx(zs.accuracy(test))
    assert sweep["id"][-1] == pytest.approx(ft.accuracy(test))
    assert sweep["ood"]["same"] == sweep["id"]
    assert sweep["ood_gain"][0] == 0.0


# -- objectives -----------------------------------------------------------------------------------
def test_margin_metric_softmax_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    t = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    y = torch.tensor([0, 3, 1, 1, 2])
    s, lam = 20.0, 0.3
    total = 0.0
    for i in range(5):
        num = s * float(f[i] @ t[y[i]])
        den = [s * (float(f[i] @ t[c]) + (lam * (1 - float(t[y[i]] @ t[c])) if c != y[i] else 0.0)) for c in range(4)]
        total += -(num - float(torch.logsumexp(torch.tensor(den), 0)))
    assert float(margin_metric_softmax(f, t, y, s, lam)) == pytest.approx(total / 5, rel=1e-5)


def test_beta_moving_average_is_the_beta_weighted_mean():
    lin = torch.nn.Linear(2, 1)
    total, values, weights = 5, [], []
    bma = BetaMovingAverage(lin, total, beta=0.5)
    for step in range(total):
        with torch.no_grad():
            lin.weight.fill_(float(step))
        bma.update(lin, step)
        values.append(float(step))
        weights.append(beta_dist.pdf((step + 0.5) / total, 0.5, 0.5))
    bma.copy_to(lin)
    expected = np.average(values, weights=weights)
    assert float(lin.weight.detach()[0, 0]) == pytest.approx(expected, rel=1e-6)
    assert weights[0] > weights[2] < weights[-1]  # the U-shaped Beta(0.5, 0.5) weights


# -- fine-tuning ----------------------------------------------------------------------------------
def test_ce_finetune_learns_and_leaves_the_input_model_alone(tiny, world):
    train, _ = world
    before = state(tiny)
    zs = ImageClassifier.zero_shot(tiny, train.classnames, train.templates)
    clf = finetune(tiny, train, method="ce", steps=20, lr=1e-2, batch_size=16, progress=False)
    assert all(torch.equal(tiny.module.state_dict()[k], before[k]) for k in before)
    assert clf.model.module is not tiny.module and not clf.text_head
    y = torch.as_tensor(train.labels)
    assert F.cross_entropy(clf.logits(train), y) < F.cross_entropy(zs.logits(train), y) - 0.1
    assert clf.head.shape == zs.head.shape and not torch.equal(clf.head, zs.head)


@pytest.mark.parametrize("method", ["flyp", "clipood"])
def test_flyp_and_clipood_run(tiny, world, method):
    train, test = world
    clf = finetune(tiny, train, method=method, steps=4, lr=1e-3, batch_size=8, progress=False)
    zs = ImageClassifier.zero_shot(tiny, train.classnames, train.templates)
    assert clf.text_head == (method == "flyp")
    if method == "clipood":
        torch.testing.assert_close(clf.head, zs.head)  # the text tower is not trained
        assert not torch.equal(
            clf.model.module.vision_model.embeddings.patch_embedding.weight,
            tiny.module.vision_model.embeddings.patch_embedding.weight,
        )
    assert 0 <= clf.accuracy(test) <= 1
    mid = wise_ft_classifier(zs, clf, 0.5)
    assert mid.head.shape == zs.head.shape


def test_resume_continues_exactly(tiny, world, tmp_path):
    train, _ = world
    kw = {"method": "ce", "steps": 6, "lr": 1e-3, "batch_size": 8, "progress": False}
    straight = finetune(tiny, train, **kw)
    out = tmp_path / "run"
    finetune(tiny, train, output_dir=out, checkpoint_every=3, **kw)
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    assert [p.name for p in ckpts] == ["step_00000003", "step_00000006"]
    import shutil

    shutil.rmtree(ckpts[-1])
    (out / "checkpoints" / "latest").write_text("step_00000003\n")
    resumed = finetune(tiny, train, output_dir=out, checkpoint_every=3, resume=True, **kw)
    assert resumed.info["resumed_from"] == 3
    for k, v in straight.model.module.state_dict().items():
        torch.testing.assert_close(resumed.model.module.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(resumed.head, straight.head, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        finetune(tiny, train, output_dir=out, checkpoint_every=3, **kw)


def test_gradient_checkpointing_and_bf16(tiny, world):
    train, _ = world
    kw = {"method": "ce", "steps": 2, "lr": 1e-3, "batch_size": 8, "progress": False}
    plain = finetune(tiny, train, **kw)
    ckpt = finetune(tiny, train, grad_checkpointing=True, **kw)
    for k, v in plain.model.module.state_dict().items():
        torch.testing.assert_close(ckpt.model.module.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in ckpt.model.module.modules())
    half = finetune(tiny, train, precision="bf16", **kw)
    assert np.isfinite(half.info["final_loss"])


def test_finetune_bad_input(tiny, world):
    train, _ = world
    with pytest.raises(ValueError, match="method"):
        finetune(tiny, train, method="lora")
    with pytest.raises(ValueError, match="precision"):
        finetune(tiny, train, precision="int8")
    with pytest.raises(ValueError, match="output_dir"):
        finetune(tiny, train, checkpoint_every=2)


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_finetune(tiny, tmp_path, capsys):
    from cliplab.cli.commands import main

    model_dir = tmp_path / "tiny"
    tiny.save(model_dir)
    cfg = {
        "model": str(model_dir),
        "data": "shapes:task=colour,n=24,image_size=32",
        "method": "ce",
        "steps": 4,
        "batch_size": 8,
        "lr": 1e-3,
        "output_dir": str(tmp_path / "out"),
        "checkpoint_every": 2,
        "eval": {
            "shift": ["shapes:task=colour,n=12,image_size=32,corruption=gaussian_noise,severity=3"],
            "alphas": [0, 0.5, 1],
        },
    }
    path = tmp_path / "ft.json"
    path.write_text(json.dumps(cfg))
    assert main(["finetune", str(path), "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["robustness"]["alphas"] == [0.0, 0.5, 1.0]
    assert (tmp_path / "out" / "model" / "config.json").is_file()
    assert (tmp_path / "out" / "head.safetensors").is_file()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["method"] == "ce"
    assert main(["finetune", str(path), "--resume", "--json", "-q"]) == 0  # nothing left to do: resumes at the end
    assert json.loads(capsys.readouterr().out)["resumed_from"] == 4
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**cfg, "learning_rate": 1}))
    assert main(["finetune", str(bad), "-q"]) == 2
    assert "learning_rate" in capsys.readouterr().err


# -- bench stage ----------------------------------------------------------------------------------
def test_robustness_stage_runs_and_reports(tiny, monkeypatch):
    from cliplab.bench import STAGES, register_stage, unregister_stage
    from cliplab.bench.stage import BenchContext
    from cliplab.bench.stages import robustness as stage

    registered_here = "robustness" not in STAGES
    if registered_here:
        register_stage(stage.STAGE)
    try:
        assert not STAGES["robustness"].default  # opt-in: not part of the default run
        monkeypatch.setattr(stage, "SETTINGS", {**stage.SETTINGS, "steps": 2, "batch_size": 8})
        ctx = BenchContext(tiny, "shapes:image_size=32", n=24, progress=False, cache_dir=False)
        r = stage.run(ctx)
        assert r["task"] == "pattern" and r["alphas"] == list(stage.ALPHAS)
        assert set(r["ood"]) == set(stage.BUILTIN_SHIFTS)
        values = dict((k, v) for k, v, _ in stage.STAGE.values(r))
        assert values["robustness/alpha=0/id"] == r["id"][0]
        assert values["robustness/alpha=1/shifted"] == r["ood_mean"][-1]
        html = stage.section({"stages": {"robustness": r}}, None)
        assert "Robust fine-tuning" in html and "<img" in html
        assert stage.headline(r)[0][1] == pytest.approx(r["ood_mean"][2])
    finally:
        if registered_here:
            unregister_stage("robustness")
