"""The open_clip backend for real (runs where open_clip and torchvision import; ``.ci/run`` builds that venv).

Random-init models from open_clip's own configs (ViT-B-32 as shipped; ViT, ResNet and timm ConvNeXt configs
shrunk by overrides), features and preprocessing against open_clip's own ``encode_image(preprocess(img))`` and
``encode_text(tokenizer(t))``, a local checkpoint file, ``save`` into open_clip's directory format (loaded by
open_clip itself and by ``cliplab.load_model``), and ``cliplab train`` of an ``openclip:`` model with checkpoints
and resume.
"""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

try:
    import open_clip
except Exception as err:  # not installed, or torchvision fails to load beside this torch
    pytest.skip(f"open_clip does not import here ({type(err).__name__}: {err})", allow_module_level=True)

from open_clip.transform import PreprocessCfg, image_transform_v2

import cliplab
from cliplab.models.openclip import CONFIG_FILE, WEIGHTS_FILE, OpenCLIPModel

TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


def shrunk(base: str, vision: dict, embed_dim: int = 16) -> dict:
    """open_clip's config ``base`` with smaller towers (same model classes and tokenizer)."""
    cfg = copy.deepcopy(open_clip.get_model_config(base))
    cfg["embed_dim"] = embed_dim
    cfg["vision_cfg"].update(vision)
    cfg["text_cfg"].update(TEXT)
    return cfg


TINY = {
    "cliplab-test-vit": ("ViT-B-32", {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16}),
    "cliplab-test-rn": ("RN50", {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8}),
    "cliplab-test-convnext": ("convnext_base", {"timm_model_name": "convnext_atto", "image_size": 64}),
}


@pytest.fixture(scope="module", autouse=True)
def tiny_configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("open_clip_configs")
    for name, (base, vision) in TINY.items():
        (root / f"{name}.json").write_text(json.dumps(shrunk(base, vision)))
    open_clip.add_model_config(root)
    return root


def images(seed: int = 0) -> list[Image.Image]:
    """Odd sizes, so the centre crop's rounding (torchvision rounds, HF floors) matters."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(71, 100), (90, 45), (33, 33)]
    ]


TEXTS = ["a photo of a cat", "a diagram", "two dogs playing in the snow"]


def l2(x):
    return x / x.norm(dim=-1, keepdim=True)


def reference(module, arch_or_dir: str, ims, texts):
    """open_clip's own eval transform, tokenizer and encoders on ``module``."""
    cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(module))
    transform = image_transform_v2(cfg, is_train=False)
    tokenizer = open_clip.get_tokenizer(arch_or_dir)
    module.eval()
    with torch.no_grad():
        pixels = torch.stack([transform(im) for im in ims])
        return pixels, l2(module.encode_image(pixels)), l2(module.encode_text(tokenizer(texts)))


@pytest.mark.parametrize("arch", ["ViT-B-32", *TINY])
def test_features_and_preprocessing_match_open_clip(arch):
    model = cliplab.load_model(f"openclip:{arch}", device="cpu")
    assert isinstance(model, OpenCLIPModel) and model.can_save and model.can_train
    ims = images()
    pixels, ref_img, ref_txt = reference(model.module, arch, ims, TEXTS)
    ours = model.preprocess.batch(ims)
    assert ours.shape == pixels.shape
    assert torch.allclose(ours, pixels, atol=1e-5), (ours - pixels).abs().max()
    img, txt = model.encode_images(ims, batch_size=2), model.encode_texts(TEXTS)
    assert img.shape == ref_img.shape and txt.shape == ref_txt.shape
    assert torch.allclose(img, ref_img, atol=1e-4) and torch.allclose(txt, ref_txt, atol=1e-4)
    assert torch.allclose(img.norm(dim=1), torch.ones(len(ims)), atol=1e-5)
    s = float(model.module.logit_scale.detach().exp())
    assert model.logit_scale == pytest.approx(s) and model.logit_bias is None
    assert torch.allclose(model.logits(img, txt), s * img @ txt.T, atol=1e-4)
    assert model.has_token_embeddings and model.token_embeddings().weight.shape[0] == 49408


def test_trainer_caches_open_clips_fixed_width_tokens():
    # open_clip's tokenizer is pure Python: the trainer tokenises every caption once, not per batch on a
    # thread that would hold the GIL the training step needs
    from cliplab.train.batches import FixedTokenCache, TokenCache

    model = cliplab.load_model("openclip:cliplab-test-vit", device="cpu")
    captions = [*TEXTS, "", "word " * 100]
    cache = TokenCache.for_model(model, captions)
    assert isinstance(cache, FixedTokenCache)
    idx = np.array([4, 0, 2, 3, 0])
    ours, theirs = cache(idx), model.tokenize([captions[i] for i in idx])
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize(
    "cfg",
    [
        {"size": 32, "resize_mode": "shortest", "interpolation": "bicubic"},
        {"size": [24, 40], "resize_mode": "shortest", "interpolation": "bilinear"},
        {"size": 32, "resize_mode": "longest", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
        {"size": [40, 24], "resize_mode": "longest"},
        {"size": [24, 40], "resize_mode": "squash"},
    ],
)
def test_every_resize_mode_matches_open_clips_transform(cfg):
    from cliplab.models.openclip import preprocess_from_cfg

    ims = images(7) + [Image.new("RGB", (5, 60), (200, 10, 30))]
    theirs = torch.stack([image_transform_v2(PreprocessCfg(**cfg), is_train=False)(im) for im in ims])
    ours = preprocess_from_cfg(cfg).batch(ims)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_local_checkpoint_file(tmp_path):
    arch = "cliplab-test-rn"
    torch.manual_seed(1)
    original = cliplab.load_model(f"openclip:{arch}", device="cpu")
    ckpt = tmp_path / "weights" / "epoch_1.pt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": {f"module.{k}": v for k, v in original.module.state_dict().items()}}, ckpt)
    loaded = cliplab.load_model(f"openclip:{arch}/{ckpt}", device="cpu")  # open_clip_train's checkpoint layout
    ims = images(1)
    assert torch.allclose(loaded.encode_images(ims), original.encode_images(ims), atol=1e-6)
    assert loaded.fingerprint() == original.fingerprint()
    fresh = cliplab.load_model(f"openclip:{arch}", device="cpu")
    assert not torch.allclose(fresh.encode_images(ims), original.encode_images(ims), atol=1e-3)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        cliplab.load_model(f"openclip:{arch}/{tmp_path / 'missing.pt'}", device="cpu")
    with pytest.raises(ValueError, match="no architecture 'Not-A-Model'"):
        cliplab.load_model("openclip:Not-A-Model", device="cpu")


@pytest.mark.parametrize("arch", ["cliplab-test-vit", "cliplab-test-convnext"])
def test_save_is_open_clips_format(arch, tmp_path):
    model = cliplab.load_model(f"openclip:{arch}", device="cpu")
    out = tmp_path / "saved"
    model.save(out)
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing half-written left beside it
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {oct(0o666 & ~umask)}
    cfg = json.loads((out / CONFIG_FILE).read_text())
    assert cfg["model_cfg"] == open_clip.get_model_config(arch)
    assert cfg["preprocess_cfg"] == json.loads(json.dumps(open_clip.get_model_preprocess_cfg(model.module)))

    # open_clip itself loads it, with the same transform, tokenizer and features
    module, transform = open_clip.create_model_from_pretrained(f"local-dir:{out}")
    ims = images(2)
    pixels, ref_img, ref_txt = reference(module, f"local-dir:{out}", ims, TEXTS)
    assert torch.allclose(torch.stack([transform(im) for im in ims]), pixels)
    assert torch.allclose(model.encode_images(ims), ref_img, atol=1e-5)
    assert torch.allclose(model.encode_texts(TEXTS), ref_txt, atol=1e-5)

    # and so does cliplab, bare or as openclip:<dir>
    for spec in (out, f"openclip:{out}", f"local:{out}"):
        back = cliplab.load_model(spec, device="cpu")
        assert isinstance(back, OpenCLIPModel) and back.preprocess == model.preprocess
        assert back.fingerprint() == model.fingerprint()
        assert torch.allclose(back.encode_images(ims), ref_img, atol=1e-5)
    cliplab.models.check_model_spec(out)
    model.geometry = "euclidean"  # cliplab's own setting rides along in open_clip_config.json
    model.save(out)
    assert cliplab.load_model(out, device="cpu").geometry == "euclidean"


def test_save_keeps_a_hugging_face_tokenizer(tmp_path):
    """A config naming ``hf_tokenizer_name``: the saved directory carries the tokenizer's files, which open_clip's
    ``local-dir:`` loader reads (the original tokenizer directory is gone by then)."""
    import shutil

    from cliplab.models.factory import build_tokenizer

    arch = tmp_path / "arch"  # open_clip reads a local-dir's HF tokenizer from the directory itself
    tok = build_tokenizer(["a photo of a cat", "a diagram", "two dogs playing in the snow"], context_length=16)
    tok.save_pretrained(arch)
    cfg = shrunk("ViT-B-32", TINY["cliplab-test-vit"][1])
    cfg["text_cfg"].update({"hf_tokenizer_name": "word-level", "vocab_size": len(tok), "context_length": 16})
    (arch / CONFIG_FILE).write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    model = cliplab.load_model(f"openclip:{arch}", device="cpu")
    assert model.can_save and type(model.tokenizer).__name__ == "HFTokenizer"
    out = tmp_path / "saved"
    model.save(out)
    shutil.rmtree(arch)
    assert (out / "tokenizer.json").is_file()
    module, _ = open_clip.create_model_from_pretrained(f"local-dir:{out}")
    _, _, ref_txt = reference(module, f"local-dir:{out}", images(), TEXTS)
    assert torch.allclose(model.encode_texts(TEXTS), ref_txt, atol=1e-5)
    back = cliplab.load_model(out, device="cpu")
    assert torch.equal(back.tokenize(TEXTS)["input_ids"], model.tokenize(TEXTS)["input_ids"])
    assert torch.allclose(back.encode_texts(TEXTS), ref_txt, atol=1e-5)


def test_bad_directories_say_what_is_wrong(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        cliplab.load_model(bad, device="cpu")
    (bad / CONFIG_FILE).write_text(json.dumps({"preprocess_cfg": {}}))
    with pytest.raises(ValueError, match="model_cfg"):
        cliplab.load_model(f"openclip:{bad}", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="open_clip_config.json"):
        cliplab.load_model(empty, device="cpu")


def train_config(tmp_path, name, spec, **overrides):
    from cliplab.train import TrainConfig

    data = {
        "model": {"spec": spec},
        "data": {"train": "shapes:n=48,image_size=32"},
        "optimizer": {"lr": 1e-3, "weight_decay": 0.0},
        "steps": 4,
        "batch_size": 8,
        "log_every": 1,
        "checkpoint_every": 2,
        "schedule": {"name": "constant"},  # so a run stopped at step 2 and resumed to 4 equals a straight one
        "output_dir": str(tmp_path / name),
        **overrides,
    }
    return TrainConfig.from_dict(data)


def test_train_save_load_with_open_clip_and_resume(tmp_path):
    from cliplab.train import Trainer

    spec = "openclip:cliplab-test-vit"
    straight = Trainer(train_config(tmp_path, "straight", spec), progress=False)
    straight.fit()
    final = tmp_path / "straight" / "model"
    assert (final / WEIGHTS_FILE).is_file() and (final / CONFIG_FILE).is_file()
    trained = straight.model
    before = cliplab.load_model(spec, device="cpu")
    ims = images(3)
    assert not torch.allclose(trained.encode_images(ims), before.encode_images(ims), atol=1e-4)  # it trained

    module, _ = open_clip.create_model_from_pretrained(f"local-dir:{final}")
    _, ref_img, ref_txt = reference(module, f"local-dir:{final}", ims, TEXTS)
    assert torch.allclose(trained.encode_images(ims), ref_img, atol=1e-5)
    assert torch.allclose(trained.encode_texts(TEXTS), ref_txt, atol=1e-5)
    again = cliplab.load_model(final, device="cpu")
    assert torch.allclose(again.encode_images(ims), ref_img, atol=1e-5)

    # two steps, stop, resume to four: the same weights as the straight run
    Trainer(train_config(tmp_path, "split", spec, steps=2), progress=False).fit()
    resumed = Trainer(train_config(tmp_path, "split", spec), progress=False, resume=True)
    summary = resumed.fit()
    assert summary["steps_this_run"] == 2
    for (name, a), b in zip(trained.module.state_dict().items(), resumed.model.module.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_cli_train_openclip_model_from_a_config_directory(tmp_path):
    """``cliplab train`` in a fresh process, from a directory holding only open_clip's config (random init), with
    the SigLIP loss: the bias the trainer adds is saved in open_clip's format too."""
    arch_dir = tmp_path / "arch"
    arch_dir.mkdir()
    base, vision = TINY["cliplab-test-vit"]
    (arch_dir / CONFIG_FILE).write_text(json.dumps({"model_cfg": shrunk(base, vision), "preprocess_cfg": {}}))
    cfg = tmp_path / "train.json"
    cfg.write_text(
        json.dumps(
            {
                "model": {"spec": f"openclip:{arch_dir}"},
                "data": {"train": "shapes:n=24,image_size=32"},
                "steps": 2,
                "batch_size": 8,
                "loss": {"name": "siglip"},  # adds a logit_bias, which the saved directory must keep
                "output_dir": str(tmp_path / "run"),
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "cliplab", "train", str(cfg), "--json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run" / "model"
    module, _ = open_clip.create_model_from_pretrained(f"local-dir:{out}")
    model = cliplab.load_model(out, device="cpu")
    ims = images(4)
    _, ref_img, _ = reference(module, f"local-dir:{out}", ims, TEXTS)
    assert torch.allclose(model.encode_images(ims), ref_img, atol=1e-5)
    assert model.logit_bias is not None and model.logit_bias == pytest.approx(float(module.logit_bias.detach()))
    assert model.logit_bias == pytest.approx(-10.0, abs=0.1)  # SigLIP's init, after two small steps
