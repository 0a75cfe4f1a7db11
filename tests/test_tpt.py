"""TPT's views (the reference's crops + AugMix) and TPT started from a learned CoOp prompt (CoOp + TPT)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from cliplab.adapt.prompting import TPT, CoOp, CoOpTPT, prompt_base_to_new, run_prompt_few_shot
from cliplab.adapt.prompting.tpt_views import TPTViews, is_imagenet, pixels_to_image, uses_augmix
from cliplab.data.augment import RandomResizedCrop
from cliplab.data.augmix import OPS, AugMixPlan, Op, render_augmix, sample_augmix, sample_op

CLASSES = ["red circle", "blue square", "green star"]


@pytest.fixture(scope="module")
def world():
    from cliplab.data import shapes

    train = shapes("train", n=60, seed=1, image_size=32, task="colour")
    test = shapes("test", n=12, seed=2, image_size=32, task="colour")
    return train, test


@pytest.fixture(scope="module")
def photo():
    """A 48×40 RGB image with structure in every channel (so every operation changes it)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:40, 0:48]
    arr = np.stack([xx * 5, yy * 6, (xx + yy) * 3], -1) + rng.integers(0, 30, (40, 48, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def normalise(im: Image.Image, mean=0.5, std=0.5) -> torch.Tensor:
    """Independent ToTensor + Normalize: ``(x / 255 − mean) / std``, ``[3, H, W]``."""
    return (torch.from_numpy(np.asarray(im, dtype=np.float64)).permute(2, 0, 1) / 255 - mean) / std


def pil_reference(im: Image.Image, op: Op) -> Image.Image:
    """The reference's operations, called on PIL directly (``data/augmix_ops.py``)."""
    b = Image.Resampling.BILINEAR
    a = Image.Transform.AFFINE
    return {
        "autocontrast": lambda: ImageOps.autocontrast(im),
        "equalize": lambda: ImageOps.equalize(im),
        "posterize": lambda: ImageOps.posterize(im, int(op.value)),
        "rotate": lambda: im.rotate(op.value, resample=b),
        "solarize": lambda: ImageOps.solarize(im, int(op.value)),
        "shear_x": lambda: im.transform(im.size, a, (1, op.value, 0, 0, 1, 0), resample=b),
        "shear_y": lambda: im.transform(im.size, a, (1, 0, 0, op.value, 1, 0), resample=b),
        "translate_x": lambda: im.transform(im.size, a, (1, 0, op.value, 0, 1, 0), resample=b),
        "translate_y": lambda: im.transform(im.size, a, (1, 0, 0, 0, 1, op.value), resample=b),
    }[op.name]()


# -- AugMix -------------------------------------------------------------------------------------
def test_operation_magnitudes_at_severity_1_are_the_references():
    rng = np.random.default_rng(0)
    size = (48, 40)
    signs: dict[str, set[int]] = {}
    for _ in range(300):
        for name in OPS:
            op = sample_op(name, rng, size, severity=1)
            lv = op.level
            if name in ("autocontrast", "equalize"):
                assert op.value == 0
                continue
            assert 0.1 <= lv < 1
            expected = {  # int_parameter(l, max) = int(l·max/10), float_parameter(l, max) = l·max/10
                "posterize": 4 - int(lv * 4 / 10),
                "solarize": 256 - int(lv * 256 / 10),
                "rotate": int(lv * 30 / 10),
                "shear_x": lv * 0.3 / 10,
                "shear_y": lv * 0.3 / 10,
                "translate_x": int(lv * (48 / 3) / 10),
                "translate_y": int(lv * (40 / 3) / 10),
            }[name]
            if name in ("posterize", "solarize"):
                assert op.value == expected
            else:
                assert abs(op.value) == pytest.approx(expected)
                signs.setdefault(name, set()).add(int(np.sign(op.value)) if op.value else 0)
    assert all({-1, 1} <= s for s in signs.values())  # both directions are drawn
    with pytest.raises(ValueError, match="unknown AugMix operation"):
        sample_op("color", rng, size)


def test_plan_draws_dirichlet_weights_a_beta_mix_and_short_chains():
    rng = np.random.default_rng(1)
    depths, names = set(), set()
    for _ in range(200):
        plan = sample_augmix(rng, (32, 32))
        assert len(plan.weights) == 3 and min(plan.weights) >= 0
        assert sum(plan.weights) == pytest.approx(1, abs=1e-6)
        assert 0 <= plan.mix <= 1
        depths |= {len(c) for c in plan.chains}
        names |= {op.name for c in plan.chains for op in c}
    assert depths == {1, 2, 3} and names == set(OPS)


def test_augmix_image_equals_the_mix_of_chains_applied_with_pil(photo):
    to_tensor = lambda im: normalise(im).float()  # noqa: E731
    every_op = tuple(sample_op(n, np.random.default_rng(i), photo.size) for i, n in enumerate(OPS))
    plans = [AugMixPlan((0.2, 0.3, 0.5), 0.4, (every_op[:3], every_op[3:6], every_op[6:]))]
    plans += [sample_augmix(np.random.default_rng(s), photo.size) for s in range(5)]
    for plan in plans:
        chains = []
        for chain in plan.chains:
            im = photo.copy()
            for op in chain:
                im = pil_reference(im, op)
            chains.append(normalise(im))
        expected = plan.mix * normalise(photo) + (1 - plan.mix) * sum(w * c for w, c in zip(plan.weights, chains))
        got = render_augmix(photo, plan, to_tensor)
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(render_augmix(photo, plans[0], to_tensor), to_tensor(photo))


# -- views --------------------------------------------------------------------------------------
def test_views_are_deterministic_per_seed_and_image(tiny, photo):
    pre = tiny.preprocess
    make = TPTViews(n_views=6, augmix=True)
    a = make(photo, pre, np.random.default_rng([3, 5]))
    b = make(photo, pre, np.random.default_rng([3, 5]))
    c = make(photo, pre, np.random.default_rng([3, 6]))
    assert a.shape == (6, 3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a[1:], c[1:])
    torch.testing.assert_close(a[0], pre(photo))  # view 0: the image as the model preprocesses it


def test_plain_views_are_crops_of_the_original_image_with_a_flip(tiny, photo):
    pre = tiny.preprocess
    views = TPTViews(n_views=4, augmix=False)(photo, pre, np.random.default_rng(11))
    rng = np.random.default_rng(11)  # replay: box, then flip, per view
    crop = RandomResizedCrop(size=(32, 32), scale=(0.08, 1.0))
    for v in range(1, 4):
        left, top, w, h = crop.box(*photo.size, rng)
        im = photo.crop((left, top, left + w, top + h)).resize((32, 32), resample=Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        torch.testing.assert_close(views[v].double(), normalise(im), atol=1e-5, rtol=0)


def test_preprocessed_pixels_map_back_to_their_image(tiny, photo):
    px = tiny.preprocess(photo)
    assert np.array_equal(np.asarray(pixels_to_image(px, tiny.preprocess)), tiny.preprocess.to_uint8(photo))
    views = TPTViews(n_views=3)(px, tiny.preprocess, np.random.default_rng(0))
    assert torch.equal(views[0], px)


def test_which_data_gets_augmix(world):
    _, test = world
    for name in ("imagenet-a", "ImageNet/test", "imagenetv2", "imagenet-sketch[subset]", "ImageNet_R"):
        assert is_imagenet(name)
    for name in ("shapes-pattern-test", "DescribableTextures/test", "flowers", None):
        assert not is_imagenet(name)
    sub = test.subset([0, 1])
    assert uses_augmix(None, sub) and uses_augmix(None, torch.zeros(1, 3, 8, 8))
    sub.name = "imagenet-r[subset]"
    assert not uses_augmix(None, sub) and uses_augmix(True, sub) and not uses_augmix(False, test)


# -- TPT ----------------------------------------------------------------------------------------
def test_tpt_on_a_dataset_is_deterministic_and_independent_per_image(tiny, world):
    _, test = world
    tpt = TPT(n_views=8).fit(tiny, None, None, test.classnames)
    start = tpt.prompt_.ctx.detach().clone()
    first = tpt.logits(test.subset([0, 2]))
    assert tpt.augmix_used_  # shapes is not ImageNet: the reference's rule gives AugMix
    assert torch.equal(tpt.prompt_.ctx.detach(), start)
    again = tpt.logits(test.subset([1, 2]))  # image 2 at the same position after another image
    torch.testing.assert_close(first[1], again[1])
    assert not torch.allclose(
        first, TPT(n_views=8, augmix=False).fit(tiny, None, None, test.classnames).logits(test.subset([0, 2]))
    )  # AugMix changes the views, hence the step


def test_tpt_from_coop_with_zero_steps_gives_coops_logits(tiny):
    g = torch.Generator().manual_seed(0)
    px = torch.randn(9, 3, 32, 32, generator=g)
    f, y = tiny.encode_images(px), torch.arange(9) % 3
    coop = CoOp(epochs=5, lr=0.05).fit(tiny, f, y, CLASSES)
    learned = coop.prompt_.ctx.detach().clone()
    still = TPT(steps=0).fit(tiny, init=coop)
    assert still.classnames_ == CLASSES
    torch.testing.assert_close(still.logits(px), coop.logits(f), atol=1e-4, rtol=1e-5)
    tuned = TPT(n_views=16).fit(tiny, None, None, CLASSES, init=coop)
    out = tuned.logits(px)
    assert not torch.allclose(out, coop.logits(f), atol=1e-4)  # the step moved the prompt
    assert torch.equal(tuned.prompt_.ctx.detach(), learned)  # reset to the learned context, not "a photo of a"
    assert torch.equal(coop.prompt_.ctx.detach(), learned)  # the CoOp learner itself is untouched
    two = TPT(steps=0).fit(tiny, None, None, CLASSES[:2], init=coop)  # other classes: the context is moved
    torch.testing.assert_close(two.logits(px), coop.for_classes(CLASSES[:2]).logits(f), atol=1e-4, rtol=1e-5)


def test_coop_tpt_in_the_few_shot_protocol(tiny, world):
    train, test = world
    params = {"coop": {"epochs": 3}, "coop_tpt": {"epochs": 3, "n_views": 4, "tpt_steps": 0}}
    kw = {"shots": [2], "seeds": [1], "params": params, "embed_kw": {"cache_dir": False}, "progress": False}
    res = run_prompt_few_shot(tiny, train, test, methods=["coop", "coop_tpt"], **kw)
    # no test-time step: CoOp's own prediction, from the same fit (one image may flip on float noise)
    coop, both = res["results"]["coop"][2]["mean"], res["results"]["coop_tpt"][2]["mean"]
    assert both == pytest.approx(coop, abs=1 / len(test) + 1e-9)
    assert res["params"]["coop_tpt"][2][0]["lr"] == res["params"]["coop"][2][0]["lr"]
    params["coop_tpt"]["tpt_steps"] = 1
    b2n = prompt_base_to_new(
        tiny,
        train,
        test,
        methods=["coop_tpt", "tpt"],
        k=2,
        seeds=[1],
        search=False,
        params={**params, "tpt": {"n_views": 4}},
        embed_kw={"cache_dir": False},
    )
    for m in ("coop_tpt", "tpt"):
        assert 0 <= b2n["results"][m]["new"] <= 1


def test_coop_tpt_fit_and_cli_name(tiny, world):
    from cliplab.cli.prompt_methods import split_methods

    train, test = world
    idx = [0, 1, 2, 3, 4, 5]
    est = CoOpTPT(epochs=2, n_views=4).fit(tiny, train.subset(idx), train.labels[idx], train.classnames)
    assert est.logits(test.subset([0, 1])).shape == (2, len(train.classnames))
    torch.testing.assert_close(est.prompt_.ctx, est.coop_.prompt_.ctx)
    assert split_methods("coop_tpt") == (["zeroshot"], ["coop_tpt"])


def test_bad_tpt_settings(tiny):
    with pytest.raises(TypeError, match="fitted CoOp"):
        TPT().fit(tiny, None, None, CLASSES, init=TPT())
    with pytest.raises(RuntimeError, match="not fitted"):
        TPT().fit(tiny, None, None, CLASSES, init=CoOp())
    with pytest.raises(ValueError, match="augmix"):
        TPT(augmix="yes").fit(tiny, None, None, CLASSES)
    with pytest.raises(ValueError, match="crop_scale"):
        TPT(crop_scale=(0.5, 2)).fit(tiny, None, None, CLASSES)


def test_tpt_tunes_on_the_lowest_entropy_views(tiny, monkeypatch):
    """Confidence selection (azshue/TPT ``select_confident_samples``): the ``selection`` fraction of views with the
    LOWEST prediction entropy under the initial prompt enters the loss (issue #26: highest survived)."""
    import torch.nn.functional as F

    from cliplab.adapt.prompting import tpt as tpt_module

    g = torch.Generator().manual_seed(1)
    views = torch.randn(20, 3, 32, 32, generator=g)
    est = TPT(n_views=20, selection=0.25, steps=1).fit(tiny, None, None, CLASSES)
    with torch.no_grad():
        z = tiny.logits(tiny.image_features(views), est.prompt_())
        ent = -(F.softmax(z, 1) * F.log_softmax(z, 1)).sum(1)
    expected = set(torch.argsort(ent)[:5].tolist())
    assert ent[sorted(expected)].max() < ent[sorted(set(range(20)) - expected)].min()
    seen = []
    real = tpt_module.average_entropy
    monkeypatch.setattr(tpt_module, "average_entropy", lambda rows: (seen.append(rows.detach().clone()), real(rows))[1])
    est._tune_and_predict(views)
    (rows,) = seen
    assert rows.shape[0] == 5
    torch.testing.assert_close(rows.sort(dim=0).values, z[sorted(expected)].sort(dim=0).values, atol=1e-5, rtol=1e-5)
