"""ONNX export and the ``onnx:`` source, Long-CLIP stretching of Hugging Face text towers, conversion refusals.

Tiny random models (and ``builtin:shapes``); the open_clip halves are in ``test_interop_openclip.py``.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

import cliplab
from cliplab.interop import UnmappableModel, convert, convert_dir, stretch_positions, stretched_positions
from cliplab.interop.clip_layout import (
    hf_problems,
    hf_to_open_clip_config,
    hf_to_open_clip_state,
    open_clip_problems,
    open_clip_to_hf_config,
    open_clip_to_hf_state,
)
from cliplab.models.hf import HFModel

pytestmark = pytest.mark.usefixtures("one_thread")
ort = pytest.importorskip("onnxruntime")

WORDS = "a an the of and on in at left right top bottom red green blue small big square circle triangle".split()
CAPTIONS = ["a red square", "a small blue circle on the left of a big green triangle", "the"]


def hf_clip(context_length: int = 77, act: str = "quick_gelu", seed: int = 0) -> HFModel:
    """A tiny random ``CLIPModel`` (77 text positions, like CLIP) with a word-level tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    from cliplab.imaging.preprocess import Preprocess
    from cliplab.models.factory import build_tokenizer

    tok = build_tokenizer(WORDS, context_length=context_length)
    torch.manual_seed(seed)
    text = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": context_length,
        "hidden_act": act,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8, "hidden_act": act}  # fmt: skip
    module = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    with torch.no_grad():  # position embeddings that differ clearly from one position to the next
        module.text_model.embeddings.position_embedding.weight.normal_(0, 1.0)
    return HFModel(module, tok, Preprocess(resize=32, crop=(32, 32)), spec="tiny-hf")


def pixels(n: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------------------------- ONNX
@pytest.fixture(scope="module")
def shapes_onnx(tmp_path_factory):
    from cliplab.interop.onnx_export import export_onnx

    model = cliplab.load_model("builtin:shapes", device="cpu")
    out = tmp_path_factory.mktemp("onnx") / "shapes"
    export_onnx(model, out)
    return model, out


def test_onnx_export_of_builtin_matches_cliplab(shapes_onnx):
    model, out = shapes_onnx
    assert {p.name for p in out.iterdir()} >= {"image_encoder.onnx", "text_encoder.onnx", "cliplab_onnx.json",
                                                 "preprocessor_config.json", "tokenizer.json"}  # fmt: skip
    onnx = cliplab.load_model(f"onnx:{out}")
    assert onnx.can_train is False and onnx.can_save is False
    for n in (1, 5):  # dynamic batch
        px = pixels(n, 64)
        torch.testing.assert_close(onnx.encode_images(px), model.encode_images(px), atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx.encode_texts(CAPTIONS), model.encode_texts(CAPTIONS), atol=1e-4, rtol=0)
    assert onnx.logit_scale == pytest.approx(model.logit_scale) and onnx.preprocess == model.preprocess
    # zero-shot and embedding through the usual entry points
    names = ["circle", "square", "triangle"]
    torch.testing.assert_close(
        cliplab.zeroshot_weights(onnx, names), cliplab.zeroshot_weights(model, names), atol=1e-4, rtol=0
    )
    data = cliplab.data.shapes("test", n=6, seed=3)
    a, b = cliplab.embed(onnx, data, cache_dir=False), cliplab.embed(model, data, cache_dir=False)
    torch.testing.assert_close(a.images, b.images, atol=1e-4, rtol=0)


def test_onnx_export_of_hf_clip_with_padding_and_fp16(tmp_path):
    from cliplab.interop.onnx_export import export_onnx

    model = hf_clip()
    export_onnx(model, tmp_path / "fp32")
    onnx = cliplab.load_model(f"onnx:{tmp_path / 'fp32'}")
    texts = CAPTIONS + [" ".join(WORDS * 2)]  # padded to the longest in the batch, and one truncated
    torch.testing.assert_close(onnx.encode_texts(texts), model.encode_texts(texts), atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx.encode_images(pixels(4)), model.encode_images(pixels(4)), atol=1e-4, rtol=0)
    export_onnx(model, tmp_path / "fp16", fp16=True)
    half = cliplab.load_model(f"onnx:{tmp_path / 'fp16'}")
    assert json.loads((tmp_path / "fp16" / "cliplab_onnx.json").read_text())["dtype"] == "float16"
    torch.testing.assert_close(half.encode_texts(texts), model.encode_texts(texts), atol=2e-2, rtol=0)
    torch.testing.assert_close(half.encode_images(pixels(2)), model.encode_images(pixels(2)), atol=2e-2, rtol=0)


def test_onnx_refusals_name_the_problem(tmp_path, shapes_onnx, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no directory"):
        cliplab.load_model(f"onnx:{tmp_path / 'nope'}")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "cliplab_onnx.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="image_encoder.onnx, text_encoder.onnx"):
        cliplab.models.check_model_spec(f"onnx:{tmp_path / 'half'}")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        cliplab.load_model(f"onnx:{shapes_onnx[1]}")


# ------------------------------------------------------------------------------------- Long-CLIP
def long_caption(n_words: int = 100) -> str:
    return " ".join((WORDS * 10)[:n_words])


@pytest.mark.parametrize("mode", ["knowledge_preserved", "interpolate"])
def test_stretch_hf_text_tower(mode, tmp_path):
    model = hf_clip()
    short, long = ["a red square on the left"], [long_caption(), long_caption(150)]
    pos = model.module.text_model.embeddings.position_embedding.weight.detach().clone()
    before_short, before_long = model.encode_texts(short), model.encode_texts(long)
    stretch_positions(model, 248, mode=mode)
    new = model.module.text_model.embeddings.position_embedding.weight
    assert new.shape == (248, 32) and model.max_length == 248
    assert model.tokenize(long)["input_ids"].shape[1] == 152  # <bos> + 150 words + <eos>: read, not cut at 77
    if mode == "knowledge_preserved":
        assert torch.equal(new[:20], pos[:20])
        torch.testing.assert_close(model.encode_texts(short), before_short, atol=1e-6, rtol=0)
    after_long = model.encode_texts(long)
    assert (after_long - before_long).abs().max() > 1e-3
    assert not torch.allclose(after_long[0], after_long[1], atol=1e-3)  # words beyond 100 count too
    model.save(tmp_path / "long")
    from transformers import AutoTokenizer, CLIPModel

    plain = CLIPModel.from_pretrained(tmp_path / "long")
    assert plain.config.text_config.max_position_embeddings == 248
    assert AutoTokenizer.from_pretrained(tmp_path / "long").model_max_length == 248
    again = cliplab.load_model(str(tmp_path / "long"), device="cpu")
    assert again.max_length == 248
    torch.testing.assert_close(again.encode_texts(long), after_long, atol=1e-5, rtol=0)


def test_knowledge_preserved_formula():
    """Long-CLIP's ``load_from_clip`` loop, written out independently."""
    pre = torch.randn(77, 6)
    new = stretched_positions(pre, 248, 20)
    assert torch.equal(new[:20], pre[:20])
    for i in range(77 - 1 - 20):
        for j in range(4):
            want = (4 - j) / 4 * pre[20 + i] + j / 4 * pre[21 + i]
            torch.testing.assert_close(new[20 + 4 * i + j], want)
    for j in range(4):
        torch.testing.assert_close(new[244 + j], pre[76] + j * (pre[76] - pre[75]) / 4)
    plain = stretched_positions(pre, 248, mode="interpolate")
    assert torch.equal(plain[0], pre[0]) and torch.allclose(plain[-1], pre[-1])


def test_stretch_refusals_name_the_problem():
    pre = torch.randn(77, 4)
    with pytest.raises(ValueError, match="must exceed"):
        stretched_positions(pre, 77)
    with pytest.raises(ValueError, match="not an integer"):
        stretched_positions(pre, 250)
    with pytest.raises(ValueError, match="keep=80"):
        stretched_positions(pre, 248, keep=80)
    with pytest.raises(ValueError, match="unknown stretch mode"):
        stretched_positions(pre, 248, mode="rope")
    with pytest.raises(TypeError, match="stretch_positions works on"):
        stretch_positions(object(), 248)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- conversion
def test_hf_to_open_clip_layout_round_trips_without_open_clip(tmp_path, monkeypatch):
    """HF → open_clip state dict and config → HF again is the identity (the open_clip side is in the OC suite)."""
    model = hf_clip(context_length=77)
    config = model.module.config.to_dict()
    state = model.module.state_dict()
    # the word-level tokenizer ends texts with id 3, but open_clip pools at the highest id: refused, and named
    with pytest.raises(UnmappableModel, match="eos_token_id=3 is not the highest token id"):
        convert_dir(model, tmp_path / "oc", to="openclip")
    assert not (tmp_path / "oc").exists()
    model.save(tmp_path / "hf")
    config_file = tmp_path / "hf" / "config.json"
    config_file.write_text(config_file.read_text().replace('"hidden_act": "quick_gelu"', '"hidden_act": "relu"', 1))
    monkeypatch.setattr(cliplab.models, "load_model", lambda *a, **k: pytest.fail("loaded before the refusal"))
    with pytest.raises(UnmappableModel, match="hidden_act.*relu.*eos_token_id=3"):  # from config.json alone
        convert_dir(str(tmp_path / "hf"), tmp_path / "oc", to="openclip")
    config["text_config"]["eos_token_id"] = config["text_config"]["vocab_size"] - 1
    model_cfg = hf_to_open_clip_config(config)
    assert model_cfg["quick_gelu"] is True and model_cfg["text_cfg"]["context_length"] == 77
    oc = hf_to_open_clip_state(dict(state))
    assert oc["visual.proj"].shape == (32, 16) and oc["transformer.resblocks.0.attn.in_proj_weight"].shape == (96, 32)
    back = open_clip_to_hf_state(oc)
    assert set(back) == {k for k in state if not k.endswith("position_ids")}
    for k, v in back.items():
        assert torch.equal(v, state[k]), k
    kwargs = open_clip_to_hf_config(model_cfg)
    assert kwargs["text_config"]["hidden_act"] == "quick_gelu"
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "max_position_embeddings"):
        assert kwargs["text_config"][key] == config["text_config"][key]
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "image_size", "patch_size"):
        assert kwargs["vision_config"][key] == config["vision_config"][key]


def test_unmappable_configs_list_every_problem():
    cfg = {"embed_dim": 8, "vision_cfg": {"attentional_pool": True, "timm_model_name": "convnext_atto"},
           "text_cfg": {"hf_model_name": "bert-base-uncased", "pool_type": "first"}}  # fmt: skip
    problems = open_clip_problems(cfg)
    assert any("attentional_pool" in p for p in problems) and any("timm_model_name" in p for p in problems)
    assert any("hf_model_name" in p for p in problems) and any("pool_type" in p for p in problems)
    with pytest.raises(UnmappableModel, match="timm_model_name.*attentional_pool.*hf_model_name"):
        open_clip_to_hf_config(cfg)
    config = hf_clip(act="gelu").module.config.to_dict()
    config["vision_config"]["hidden_act"] = "quick_gelu"
    assert any("one activation" in p for p in hf_problems(config))
    assert "model_type='siglip'" in hf_problems({"model_type": "siglip"})[0]
    with pytest.raises(ValueError, match="cannot convert a HFModel to 'hf'"):
        convert(hf_clip(), "hf")
    with pytest.raises(ValueError, match="--to must be one of"):
        convert_dir(hf_clip(), "/tmp/never", to="onnx")


# -------------------------------------------------------------------------------------------- CLI
def test_cli_export_and_convert(tmp_path, capsys):
    from cliplab.cli.commands import main

    src = tmp_path / "tiny"
    hf_clip().save(src)
    assert main(["export", str(src), "-o", str(tmp_path / "onnx"), "--json", "--quiet"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["max_abs_feature_diff"] < 1e-4 and info["dtype"] == "float32"
    assert main(["export", str(src), "-o", str(tmp_path / "onnx16"), "--fp16", "--json", "-q"]) == 0
    info16 = json.loads(capsys.readouterr().out)
    assert 0 < info16["max_abs_feature_diff"] < 2e-2  # float16 weights: close, not equal
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(tmp_path / "onnx16" / "text_encoder.onnx")).graph
    kinds = {init.data_type for init in graph.initializer}
    assert onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds
    argv = ["convert", str(src), str(tmp_path / "long"), "--to", "hf", "--stretch-text", "248", "--json", "-q"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["text_positions"] == 248
    assert cliplab.load_model(str(tmp_path / "long"), device="cpu").max_length == 248


def test_cli_refuses_before_loading(tmp_path, capsys):
    from cliplab.cli.commands import main

    (tmp_path / "file").write_text("x")
    assert main(["export", "builtin:nope", "-o", str(tmp_path / "out")]) == 2
    assert "MODEL" in capsys.readouterr().err
    assert main(["export", "builtin:shapes", "-o", str(tmp_path / "file")]) == 2
    assert "--output" in capsys.readouterr().err
    assert main(["convert", "builtin:shapes", str(tmp_path / "c"), "--to", "hf", "--stretch-text", "1"]) == 2
    assert "--stretch-text" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "c"), "--to", "hf"]) == 2
    assert "SRC" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", "builtin:shapes", str(tmp_path / "c"), "--to", "tflite"])


def test_cli_index_runs_on_onnxruntime(shapes_onnx, tmp_path, capsys):
    """``cliplab index`` with an ``onnx:`` spec: the same neighbours as the torch model's."""
    from PIL import Image

    from cliplab.cli.commands import main
    from cliplab.index import VectorIndex

    model, out = shapes_onnx
    data = cliplab.data.shapes("test", n=8, seed=5)
    (tmp_path / "imgs").mkdir()
    for i in range(len(data)):
        image = data[i]["image"]
        (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(tmp_path / "imgs" / f"{i}.png")
    assert main(["index", f"onnx:{out}", str(tmp_path / "imgs"), "-o", str(tmp_path / "idx"), "--json", "-q"]) == 0
    capsys.readouterr()
    index = VectorIndex.load(tmp_path / "idx")
    query = model.encode_texts(["a red circle", "a blue square"])
    scores, ids = index.search(query, k=3)
    paths = sorted((tmp_path / "imgs").glob("*.png"))
    want = model.encode_images([str(p) for p in paths])
    best = (query @ want.T).argsort(dim=1, descending=True)[:, :3]
    got = [[index.get_metadata([int(j)])[0]["path"] for j in row] for row in ids]
    assert [[Path(p).name for p in row] for row in got] == [[paths[int(j)].name for j in row] for row in best]
