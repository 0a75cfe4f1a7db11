import json

import numpy as np
import pytest
import torch
from PIL import Image

import cliplab
from cliplab.models import Preprocess, load_image, load_model
from helpers import WORDS, make_tiny_model


def _images(n=5, seed=0, size=(40, 50)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)) for _ in range(n)]


def test_hf_round_trip_identical_embeddings(tiny_model, tmp_path):
    images, texts = _images(), ["a red circle", "a blue square on the left", "star"]
    f0, t0 = tiny_model.encode_images(images, batch_size=2), tiny_model.encode_texts(texts)
    tiny_model.save(tmp_path / "m")
    loaded = cliplab.load_model(str(tmp_path / "m"))
    # same weights, same preprocessing: equal up to float32 kernel round-off
    assert torch.allclose(loaded.encode_images(images, batch_size=2), f0, atol=1e-6)
    assert torch.allclose(loaded.encode_texts(texts), t0, atol=1e-6)
    assert loaded.logit_scale == pytest.approx(tiny_model.logit_scale)
    assert loaded.logit_bias is None
    assert loaded.fingerprint() == tiny_model.fingerprint()
    # L2-normalised for the cosine geometry
    assert torch.allclose(f0.norm(dim=1), torch.ones(len(images)), atol=1e-5)


def test_saved_directory_loads_in_transformers(tiny_model, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    tiny_model.save(tmp_path / "m")
    module = AutoModel.from_pretrained(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert type(module).__name__ == "CLIPModel"
    ids = tok(["a red circle"], return_tensors="pt")
    out = module.get_text_features(**ids)
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    ours = tiny_model.encode_texts(["a red circle"])
    assert torch.allclose(out / out.norm(dim=-1, keepdim=True), ours, atol=1e-5)
    proc = json.loads((tmp_path / "m" / "preprocessor_config.json").read_text())
    assert proc["crop_size"] == {"height": 32, "width": 32}


def test_encode_texts_matches_one_by_one(tiny_model):
    texts = ["a red circle", "a large blue square above a green star on the left", "thing"]
    batched = tiny_model.encode_texts(texts, batch_size=2)
    single = torch.cat([tiny_model.encode_texts([t]) for t in texts])
    assert torch.allclose(batched, single, atol=1e-5)  # padding does not leak into pooled features


def test_encode_images_tensor_input_equals_pil(tiny_model):
    images = _images(3)
    pixels = tiny_model.preprocess.batch(images)
    assert torch.allclose(tiny_model.encode_images(pixels), tiny_model.encode_images(images), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        tiny_model.encode_images(torch.zeros(2, 32, 32))


def test_siglip_checkpoint_loads_with_bias_and_max_length_padding(tmp_path):
    from transformers import SiglipConfig, SiglipModel

    from cliplab.models.factory import build_tokenizer

    tok = build_tokenizer(WORDS, context_length=10)
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=10,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    module = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():
        module.logit_bias.fill_(-10.0)
        module.logit_scale.fill_(np.log(10.0))
    module.save_pretrained(tmp_path / "sig")
    tok.save_pretrained(tmp_path / "sig")
    proc = {
        "do_resize": True,
        "size": {"height": 32, "width": 32},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
    }
    (tmp_path / "sig" / "preprocessor_config.json").write_text(json.dumps(proc))
    model = load_model(str(tmp_path / "sig"))
    assert model.logit_bias == pytest.approx(-10.0)
    assert model.logit_scale == pytest.approx(10.0)
    assert model.tokenize(["a circle"])["input_ids"].shape == (1, 10)  # SigLIP pads to max length
    assert model.preprocess.crop is None and model.preprocess.resize == (32, 32)
    f = model.encode_images(_images(2))
    assert f.shape == (2, 32) and torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)
    # the SigLIP bias enters the logits
    t = model.encode_texts(["a circle"])
    assert torch.allclose(model.logits(f, t), 10.0 * f @ t.T - 10.0, atol=1e-5)


def test_euclidean_geometry_is_saved_and_not_normalised(tmp_path):
    model = make_tiny_model(geometry="euclidean")
    model.save(tmp_path / "e")
    loaded = load_model(str(tmp_path / "e"))
    assert loaded.geometry == "euclidean"
    f, t = loaded.encode_images(_images(2)), loaded.encode_texts(["a circle"])
    assert not torch.allclose(f.norm(dim=1), torch.ones(2))
    assert torch.allclose(
        loaded.logits(f, t), -loaded.logit_scale * ((f[:, None] - t[None]) ** 2).sum(-1) / f.shape[1], atol=1e-4
    )  # EuCLIP's features scaled by 1/√D, as in training (issue #26)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nonsense-spec", "Accepted forms"),
        ("hf:", "repository id"),
        ("builtin:nope", "no built-in model"),
        ("openclip:", "architecture"),
    ],
)
def test_unknown_specs_raise_value_error(spec, message):
    with pytest.raises(ValueError, match=message):
        load_model(spec)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        load_model(str(tmp_path))


def test_openclip_missing_gives_install_hint():
    try:
        import open_clip  # noqa: F401

        pytest.skip("open_clip is installed here")
    except Exception:
        pass
    with pytest.raises(ImportError, match="pip install open_clip_torch"):
        load_model("openclip:ViT-B-32/laion2b_s34b_b79k")


def test_preprocess_matches_independent_pil_pipeline():
    img = _images(1, size=(50, 80))[0]  # H=50, W=80
    pre = Preprocess(resize=32, crop=(32, 32), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    # independent: shortest edge 50 -> 32, width 80 -> int(32 * 80 / 50) = 51, then centre crop
    resized = np.asarray(img.resize((51, 32), Image.Resampling.BICUBIC), dtype=np.float64)
    left = (51 - 32) // 2
    crop = resized[:, left : left + 32] / 255.0
    expected = (crop - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.3])
    got = pre(img).permute(1, 2, 0).double().numpy()
    assert got.shape == (32, 32, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_preprocess_hf_config_round_trip():
    pre = Preprocess(resize=40, crop=(32, 32), mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1), resample=2)
    assert Preprocess.from_hf_config(pre.to_hf_config()) == pre
    exact = Preprocess.from_hf_config({"size": {"height": 20, "width": 30}, "do_center_crop": False})
    assert exact.resize == (20, 30) and exact.crop is None
    assert exact(_images(1)[0]).shape == (3, 20, 30)


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        load_image(tmp_path / "nowhere.png")


def test_fingerprint_changes_with_weights(tiny_model):
    before = tiny_model.fingerprint()
    with torch.no_grad():
        next(tiny_model.module.parameters()).add_(1e-3)
    assert tiny_model.fingerprint() != before
