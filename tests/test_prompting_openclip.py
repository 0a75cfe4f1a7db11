"""Prompt learning on real open_clip models (runs where open_clip imports: ``.ci/run``'s open_clip venv).

A random-init ViT-B-32 shrunk to two 32-wide layers per tower (open_clip's own modules, tokenizer and 77-token context):
CoOp from "a photo of a" untrained equals the zero-shot template, training leaves the weights bit-identical,
MaPLe's deep prompts go through ``transformer.resblocks`` / ``visual.ln_pre`` / ``visual.transformer.resblocks``
and with zero-length prompts equal the plain model; CE, FLYP and CLIPood fine-tuning and WiSE-FT run on it too.
"""

import copy
import json

import pytest
import torch
from torch.nn import functional as F

try:
    import open_clip
except Exception as err:  # not installed, or torchvision fails to load beside this torch
    pytest.skip(f"open_clip does not import here ({type(err).__name__}: {err})", allow_module_level=True)

import cliplab
from cliplab.adapt.prompting import TPT, CoOp, MaPLe

CLASSES = ["cat", "dog", "school bus"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("oc_prompt_configs")
    cfg = copy.deepcopy(open_clip.get_model_config("ViT-B-32"))
    cfg["embed_dim"] = 16
    cfg["vision_cfg"].update({"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16})
    cfg["text_cfg"].update({"width": 32, "heads": 2, "layers": 2})
    (root / "cliplab-prompt-vit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root)
    torch.manual_seed(0)
    return cliplab.load_model("openclip:cliplab-prompt-vit", device="cpu")


@pytest.fixture(scope="module")
def data(model):
    g = torch.Generator().manual_seed(0)
    px = torch.randn(6, 3, 32, 32, generator=g)
    return px, model.encode_images(px), torch.arange(6) % 3


def reference(model, f, prompts):
    return model.logit_scale * f @ F.normalize(model.encode_texts(prompts), dim=-1).T


def test_coop_untrained_equals_the_template_on_open_clip(model, data):
    _, f, y = data
    coop = CoOp(ctx_init="a photo of a", epochs=0).fit(model, f, y, CLASSES)
    torch.testing.assert_close(
        coop.logits(f), reference(model, f, [f"a photo of a {c}." for c in CLASSES]), atol=1e-4, rtol=1e-5
    )


def test_training_leaves_open_clip_weights_untouched(model, data):
    px, f, y = data
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    CoOp(epochs=3, lr=0.05).fit(model, f, y, CLASSES)
    maple = MaPLe(epochs=2, lr=0.05, batch_size=3).fit(model, px, y, CLASSES)
    assert maple.depth_ == 2
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())
    assert all(p.grad is None for p in model.module.parameters())


def test_maple_on_open_clip(model, data):
    px, f, y = data
    plain = MaPLe(n_ctx=0, epochs=0).fit(model, px, y, CLASSES)
    torch.testing.assert_close(
        plain.logits(px), reference(model, f, [f"a photo of a {c}." for c in CLASSES]), atol=1e-4, rtol=1e-5
    )
    maple = MaPLe(epochs=0).fit(model, px, y, CLASSES)
    with torch.no_grad():
        assert not torch.allclose(maple.prompt_.image_features(model, px), f, atol=1e-4)
    torch.testing.assert_close(model.encode_images(px), f)  # no hook left behind


def test_tpt_on_open_clip(model, data):
    px, _, _ = data
    tpt = TPT(n_views=8).fit(model, None, None, CLASSES)
    start = tpt.prompt_.ctx.detach().clone()
    assert tpt.logits(px[:2]).shape == (2, 3)
    assert torch.equal(tpt.prompt_.ctx.detach(), start)


def test_finetune_and_wise_ft_on_open_clip(model):
    from cliplab.data import shapes
    from cliplab.finetune import ImageClassifier, finetune, wise_ft_classifier

    train = shapes("train", n=12, seed=1, image_size=32, task="colour")
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    for method in ("ce", "flyp", "clipood"):
        clf = finetune(model, train, method=method, steps=2, lr=1e-3, batch_size=4, progress=False)
        zs = ImageClassifier.zero_shot(model, train.classnames, train.templates)
        end = wise_ft_classifier(zs, clf, 1.0)
        assert all(torch.equal(v, clf.model.module.state_dict()[k]) for k, v in end.model.module.state_dict().items())
        assert 0 <= wise_ft_classifier(zs, clf, 0.5).accuracy(train) <= 1
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())
