"""Mixed-precision inference: defaults per device, autocast really used, cache key, a bound on the error."""

import pytest
import torch

from cliplab.data import shapes
from cliplab.features import cache_key, embed, embed_images, encoding_options
from cliplab.models.precision import resolve_precision

#: worst cosine between fp32 and bf16 features of the tiny random model (bf16 keeps 8 mantissa bits: a relative
#: error ~2^-8 per product; measured ≥ 0.999 here, benchmarks/precision.py reports it for bigger towers)
BF16_MIN_COSINE = 0.99


def test_defaults_and_bad_values():
    assert resolve_precision(None, "cpu") == "fp32"
    assert resolve_precision(None, torch.device("cuda", 0)) == "fp16"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", "cpu")
    with pytest.warns(RuntimeWarning, match="fp16 on CPU"):
        assert resolve_precision("fp16", "cpu") == "fp16"


def test_precision_changes_the_cache_key_and_is_recorded(tiny_model, tmp_path):
    ds = shapes("test", n=6, image_size=32)
    keys = {p: cache_key(tiny_model, ds, p) for p in ("fp32", "bf16", "fp16")}
    assert len(set(keys.values())) == 3
    assert keys["fp32"] == cache_key(tiny_model, ds)  # fp32 keeps the key it had before precisions existed
    a = embed(tiny_model, ds, cache_dir=tmp_path, progress=False, precision="fp32")
    b = embed(tiny_model, ds, cache_dir=tmp_path, progress=False, precision="bf16")
    assert a.meta["precision"] == "fp32" and b.meta["precision"] == "bf16"
    assert a.meta["key"] == keys["fp32"] and b.meta["key"] == keys["bf16"]
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert b.images.dtype == torch.float32 and b.texts.dtype == torch.float32  # stored float32
    assert not torch.equal(a.images, b.images)  # bf16 really ran


def test_bf16_features_are_close_to_fp32(tiny_model):
    ds = shapes("test", n=16, image_size=32)
    f32 = embed_images(tiny_model, ds, batch_size=8, progress=False, precision="fp32")
    bf16 = embed_images(tiny_model, ds, batch_size=8, progress=False, precision="bf16")
    cos = torch.nn.functional.cosine_similarity(f32, bf16, dim=1)
    assert float(cos.min()) >= BF16_MIN_COSINE
    texts = ["a red circle", "a blue square"]
    t32, t16 = tiny_model.encode_texts(texts), tiny_model.encode_texts(texts, precision="bf16")
    assert float(torch.nn.functional.cosine_similarity(t32, t16, dim=1).min()) >= BF16_MIN_COSINE


def test_encoding_options_give_the_default(tiny_model):
    ds = shapes("test", n=4, image_size=32)
    with encoding_options(precision="bf16"):
        feats = embed(tiny_model, ds, cache_dir=False, progress=False)
        explicit = embed(tiny_model, ds, cache_dir=False, progress=False, precision="fp32")
    assert feats.meta["precision"] == "bf16" and explicit.meta["precision"] == "fp32"
    assert embed(tiny_model, ds, cache_dir=False, progress=False).meta["precision"] == "fp32"


def test_cli_precision_flag(tmp_path, tiny_model_dir):
    from cliplab.cli.commands import main
    from cliplab.features import Features

    out = tmp_path / "f.safetensors"
    args = ["embed", str(tiny_model_dir), "shapes:n=6,image_size=32", "-o", str(out), "--quiet"]
    assert main([*args, "--precision", "bf16", "--cache-dir", str(tmp_path / "c")]) == 0
    assert Features.load(out).meta["precision"] == "bf16"
    with pytest.raises(SystemExit):
        main([*args, "--precision", "fp8"])
