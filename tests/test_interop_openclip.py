"""open_clip ⇄ Hugging Face conversion and Long-CLIP stretching of open_clip text towers, for real.

Runs where open_clip imports (``.ci/run``'s second venv); skipped elsewhere. Tiny random ViT CLIPs (one with
QuickGELU, one with GELU): the converted model's features equal the source's on the source's preprocessing and
tokens within 1e-5, the HF directory loads with plain ``transformers``, the open_clip one with plain open_clip
(``local-dir:``), and open_clip → HF → open_clip gives the same state dict.
"""

import json

import pytest
import torch

open_clip = pytest.importorskip("open_clip", exc_type=ImportError)
transformers = pytest.importorskip("transformers")

from cliplab.interop import UnmappableModel, convert, convert_dir, stretch_positions  # noqa: E402
from cliplab.models.openclip import OpenCLIPModel  # noqa: E402

VISION = {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16}
TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
CONFIGS = {
    "interop-quickgelu": {"embed_dim": 16, "quick_gelu": True, "vision_cfg": VISION, "text_cfg": TEXT},
    "interop-gelu": {"embed_dim": 16, "vision_cfg": VISION, "text_cfg": TEXT},
    "interop-attnpool": {"embed_dim": 16, "vision_cfg": {**VISION, "attentional_pool": True}, "text_cfg": TEXT},
}
CAPTIONS = ["a red square", "two blue circles on the left of a small green triangle", "x"]


@pytest.fixture(scope="module", autouse=True)
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop_configs")
    for name, cfg in CONFIGS.items():
        (root / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root)


def source(arch: str) -> OpenCLIPModel:
    torch.manual_seed(0)
    model = OpenCLIPModel(arch, None, spec=f"openclip:{arch}", device="cpu")
    with torch.no_grad():  # non-trivial norms and scale, so a wrong mapping shows
        for name, p in model.module.named_parameters():
            if "ln" in name or name == "logit_scale":
                p.add_(0.1 * torch.randn_like(p))
    return model


def pixels() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def hf_features(module, px, ids):
    out = module.get_image_features(pixel_values=px), module.get_text_features(input_ids=ids)
    return [o if isinstance(o, torch.Tensor) else o.pooler_output for o in out]


@pytest.mark.parametrize("arch", ["interop-quickgelu", "interop-gelu"])
def test_open_clip_to_hf_to_open_clip(arch, tmp_path):
    src = source(arch)
    px, ids = pixels(), src.tokenizer(CAPTIONS)
    with torch.no_grad():
        want_img, want_txt = src.module.encode_image(px), src.module.encode_text(ids)
    info = convert_dir(src, tmp_path / "hf", to="hf")
    assert info["to"] == "hf" and info["max_abs_feature_diff"] < 1e-5
    # plain transformers loads it, with the activation mapped
    hf = transformers.CLIPModel.from_pretrained(tmp_path / "hf").eval()
    act = "quick_gelu" if "quick" in arch else "gelu"
    assert hf.config.text_config.hidden_act == act == hf.config.vision_config.hidden_act
    with torch.no_grad():
        img, txt = hf_features(hf, px, ids)
    torch.testing.assert_close(img, want_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(txt, want_txt, atol=1e-5, rtol=0)
    assert abs(float(hf.logit_scale) - float(src.module.logit_scale)) < 1e-7
    # the tokenizer written beside it is the same BPE
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok("a red square")["input_ids"] == [int(t) for t in ids[0][: int((ids[0] > 0).sum())]]
    # and back: plain open_clip loads it, same features and the same state dict
    import cliplab

    assert convert_dir(str(tmp_path / "hf"), tmp_path / "oc", to="openclip")["max_abs_feature_diff"] < 1e-5
    back, _ = open_clip.create_model_from_pretrained(f"local-dir:{tmp_path / 'oc'}")
    back.eval()
    with torch.no_grad():
        torch.testing.assert_close(back.encode_image(px), want_img, atol=1e-5, rtol=0)
        torch.testing.assert_close(back.encode_text(ids), want_txt, atol=1e-5, rtol=0)
    sd_a, sd_b = src.module.state_dict(), back.state_dict()
    assert sorted(sd_a) == sorted(sd_b)
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k
    assert open_clip.get_tokenizer(f"local-dir:{tmp_path / 'oc'}")(CAPTIONS).equal(ids)
    assert cliplab.load_model(str(tmp_path / "oc"), device="cpu").preprocess == src.preprocess


def test_in_memory_convert_matches(tmp_path):
    src = source("interop-quickgelu")
    hf = convert(src, "hf")
    px, ids = pixels(), src.tokenizer(CAPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(hf.image_embeddings(px), src.module.encode_image(px), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            hf.text_embeddings({"input_ids": ids}), src.module.encode_text(ids), atol=1e-5, rtol=0
        )
    back = convert(hf, "openclip")
    with torch.no_grad():
        torch.testing.assert_close(back.module.encode_text(ids), src.module.encode_text(ids), atol=1e-5, rtol=0)


def test_unmappable_model_lists_the_problem(tmp_path):
    src = source("interop-attnpool")
    with pytest.raises(UnmappableModel, match="attentional_pool"):
        convert_dir(src, tmp_path / "hf", to="hf")
    assert not (tmp_path / "hf").exists()


def test_long_clip_stretch_open_clip_and_both_libraries_load(tmp_path):
    src = source("interop-quickgelu")
    short = ["a red square"]
    long = ["a " + " ".join(["red square next to a blue circle"] * 14)]  # ~100 tokens
    before_short, before_long = src.encode_texts(short), src.encode_texts(long)
    pos = src.module.positional_embedding.detach().clone()
    stretch_positions(src, 248)
    assert src.module.positional_embedding.shape[0] == 248
    assert torch.equal(src.module.positional_embedding[:20], pos[:20])
    assert src.tokenize(long)["input_ids"].shape[1] == 248
    torch.testing.assert_close(src.encode_texts(short), before_short, atol=1e-6, rtol=0)
    after_long = src.encode_texts(long)
    assert (after_long - before_long).abs().max() > 1e-3
    src.save(tmp_path / "oc248")
    plain, _ = open_clip.create_model_from_pretrained(f"local-dir:{tmp_path / 'oc248'}")
    ids = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'oc248'}")(long)
    assert ids.shape[1] == 248
    with torch.no_grad():
        feat = torch.nn.functional.normalize(plain.eval().encode_text(ids), dim=-1)
    torch.testing.assert_close(feat, after_long, atol=1e-5, rtol=0)
    convert_dir(str(tmp_path / "oc248"), tmp_path / "hf248", to="hf")
    hf = transformers.CLIPModel.from_pretrained(tmp_path / "hf248").eval()
    assert hf.config.text_config.max_position_embeddings == 248
    with torch.no_grad():
        (txt,) = hf_features(hf, pixels(), ids)[1:]
    torch.testing.assert_close(torch.nn.functional.normalize(txt, dim=-1), after_long, atol=1e-5, rtol=0)


def test_cli_convert_open_clip_to_hf(tmp_path, capsys):
    from cliplab.cli.commands import main

    argv = ["convert", "openclip:interop-gelu", str(tmp_path / "hf"), "--to", "hf", "--stretch-text", "248", "--json"]
    assert main([*argv, "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["text_positions"] == 248
    hf = transformers.CLIPModel.from_pretrained(tmp_path / "hf")
    assert hf.config.text_config.max_position_embeddings == 248 and hf.config.text_config.hidden_act == "gelu"


def test_onnx_export_of_open_clip(tmp_path):
    pytest.importorskip("onnxruntime")
    import cliplab
    from cliplab.interop.onnx_export import export_onnx

    src = source("interop-quickgelu")
    export_onnx(src, tmp_path / "onnx")
    onnx = cliplab.load_model(f"onnx:{tmp_path / 'onnx'}")
    torch.testing.assert_close(onnx.encode_texts(CAPTIONS), src.encode_texts(CAPTIONS), atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx.encode_images(pixels()), src.encode_images(pixels()), atol=1e-4, rtol=0)
