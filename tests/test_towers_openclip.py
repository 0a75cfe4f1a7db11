"""The towers' internals and the direct-effect decomposition on open_clip models (runs where open_clip imports;
``.ci/run`` builds that venv): tiny random ViTs from open_clip's own configs, with and without layer scale, and a
ResNet tower refused by name."""

import copy
import json

import pytest
import torch

try:
    import open_clip
except Exception as err:  # not installed, or torchvision fails to load beside this torch
    pytest.skip(f"open_clip does not import here ({type(err).__name__}: {err})", allow_module_level=True)

import cliplab
from cliplab.explain import decompose
from cliplab.towers import UnsupportedTowerError, patch_features, trace, vit_tower

TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
VIT = {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16}
TINY = {
    "cliplab-towers-vit": ("ViT-B-32", VIT),
    "cliplab-towers-vit-ls": ("ViT-B-32", {**VIT, "ls_init_value": 0.5}),
    "cliplab-towers-rn": ("RN50", {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8}),
}


@pytest.fixture(scope="module", autouse=True)
def tiny_configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("open_clip_configs")
    for name, (base, vision) in TINY.items():
        cfg = copy.deepcopy(open_clip.get_model_config(base))
        cfg["embed_dim"] = 16
        cfg["vision_cfg"].update(vision)
        cfg["text_cfg"].update(TEXT)
        (root / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root)
    return root


@pytest.mark.parametrize("arch", ["cliplab-towers-vit", "cliplab-towers-vit-ls"])
def test_open_clip_vit_forward_and_decomposition(arch):
    torch.manual_seed(0)
    model = cliplab.load_model(f"openclip:{arch}", device="cpu")
    with torch.no_grad():  # non-trivial norms and layer scales
        for name, p in model.module.visual.named_parameters():
            if "ln_" in name or "ls_" in name:
                p.add_(0.3 * torch.randn_like(p))
    tower = vit_tower(model)
    assert tower.kind == "open_clip-vit" and tower.grid == (4, 4)
    assert (tower.blocks[0].ls1 is not None) == arch.endswith("-ls")
    px = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        own = model.module.encode_image(px)
        tokens = model.module.visual.transformer(model.module.visual._embeds(px))
    t = trace(model, px)
    assert torch.allclose(t.pooled, own, atol=1e-5)
    assert torch.allclose(t.residual[-1], tokens, atol=1e-5)
    feats = patch_features(model, px)
    assert torch.allclose(feats, model.module.visual.ln_post(tokens[:, 1:]) @ model.module.visual.proj, atol=1e-5)
    for centering in ("linear", "reference"):
        d = decompose(model, px, centering=centering)
        assert float(((d.total() - own).norm(dim=-1) / own.norm(dim=-1)).max()) <= 1e-4
        assert torch.allclose(d.tokens.sum((2, 3)), d.attention, atol=1e-5)
    tf = model.encode_texts(["a cat", "a dog"])
    img = model.encode_images(px, precision="fp32")
    assert torch.allclose(d.logit_contributions(model, tf).total(), model.logits(img, tf), atol=1e-3)


def test_open_clip_resnet_is_refused_by_name():
    model = cliplab.load_model("openclip:cliplab-towers-rn", device="cpu")
    expected = r"model 'openclip:cliplab-towers-rn': its image tower \(ModifiedResNet\)"
    with pytest.raises(UnsupportedTowerError, match=expected):
        decompose(model, torch.zeros(1, 3, 64, 64))
