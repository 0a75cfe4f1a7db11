"""Model families from tiny random checkpoints saved by ``transformers`` in their real formats.

CLIP, a MetaCLIP-style CLIPModel, SigLIP, SigLIP 2 (NaFlex patch inputs), ChineseCLIP and AltCLIP: each is
written with ``save_pretrained`` (model, tokenizer, the family's own image processor), loaded back through
``cliplab.load_model(dir)``, and compared with the model's own ``get_image_features(**processor(images))`` and
``get_text_features(**tokenizer(texts))``; zero-shot then runs through the data loader and the feature cache.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import cliplab
from cliplab.data import load_dataset
from cliplab.features import embed
from cliplab.imaging.preprocess import PatchPreprocess, Preprocess, unpack_patches
from cliplab.models.hf import HFModel
from cliplab.zeroshot import zeroshot_evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = "a photo of the red blue green circle square triangle star cross shape small large".split()
TEXTS = ["a photo of a red circle", "blue square", "the large green star shape", "cross"]
WIDTH, HEADS, LAYERS, INTER = 32, 2, 1, 64


def word_tokenizer(*, eos_last: bool = False, max_length: int = 16, bos: bool = True):
    """A word-level fast tokenizer (``tokenizer.json``). ``eos_last`` gives ``<eos>`` the highest id, as in
    OpenAI's BPE vocabulary (where CLIP's legacy text pooling takes the argmax id)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>"] + ([] if eos_last else ["<eos>"])
    tokens = specials + WORDS + (["<eos>"] if eos_last else [])
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    template = "<bos> $A <eos>" if bos else "$A <eos>"
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=max_length,
    )


def gemma_tokenizer():
    """SigLIP 2's own ``Siglip2Tokenizer`` (Gemma's BPE with lower-casing) over a character vocabulary plus a
    few merges."""
    from transformers import Siglip2Tokenizer

    chars = sorted(set("".join(WORDS)) | {"▁"})
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", *chars])}
    merges = [("▁", "a"), ("r", "e"), ("re", "d")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return Siglip2Tokenizer(vocab=vocab, merges=merges, model_max_length=16)


def bert_tokenizer(tmp_path, max_length: int = 16):
    """A WordPiece ``BertTokenizerFast`` from a ``vocab.txt`` (ChineseCLIP's text tower is a BERT)."""
    from transformers import BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab), model_max_length=max_length)


def tower(**extra):
    return {
        "hidden_size": WIDTH,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        **extra,
    }


def text_ids(tok) -> dict:
    return {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}


def build_clip(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = word_tokenizer()
    cfg = CLIPConfig(
        text_config=tower(max_position_embeddings=16, bos_token_id=tok.bos_token_id, **text_ids(tok)),
        vision_config=tower(image_size=32, patch_size=8),
        projection_dim=24,
    )
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPModel(cfg), tok, proc, {"padding": "longest"}


def build_metaclip(tmp_path):
    """MetaCLIP's hub checkpoints are ``CLIPModel``s with quick_gelu and the legacy ``eos_token_id = 2`` text
    config, under which CLIP pools the text at the highest token id (OpenAI's vocabulary puts ``<eos>`` last)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = word_tokenizer(eos_last=True)
    text = tower(max_position_embeddings=16, hidden_act="quick_gelu", vocab_size=len(tok))
    text.update(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=2)
    cfg = CLIPConfig(
        text_config=text, vision_config=tower(image_size=40, patch_size=8, hidden_act="quick_gelu"), projection_dim=16
    )
    proc = CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 40, "width": 40}, resample=3)
    return CLIPModel(cfg), tok, proc, {"padding": "longest"}


def build_siglip(tmp_path):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    tok = word_tokenizer(bos=False)
    cfg = SiglipConfig(
        text_config=tower(max_position_embeddings=16, **text_ids(tok)),
        vision_config=tower(image_size=32, patch_size=8),
    )
    proc = SiglipImageProcessor(size={"height": 32, "width": 32})
    return SiglipModel(cfg), tok, proc, {"padding": "max_length", "max_length": 16}


def build_siglip2(tmp_path):
    from transformers import Siglip2Config, Siglip2ImageProcessorPil, Siglip2Model

    tok = gemma_tokenizer()
    cfg = Siglip2Config(
        text_config=tower(max_position_embeddings=16, **text_ids(tok)),
        vision_config=tower(patch_size=4, num_patches=16),
    )
    proc = Siglip2ImageProcessorPil(patch_size=4, max_num_patches=24)
    return Siglip2Model(cfg), tok, proc, {"padding": "max_length", "max_length": 16}


def build_chinese_clip(tmp_path):
    from transformers import ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel

    tok = bert_tokenizer(tmp_path)
    text = tower(max_position_embeddings=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    cfg = ChineseCLIPConfig(text_config=text, vision_config=tower(image_size=32, patch_size=8), projection_dim=24)
    proc = ChineseCLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return ChineseCLIPModel(cfg), tok, proc, {"padding": "longest"}


def build_altclip(tmp_path):
    from transformers import AltCLIPConfig, AltCLIPModel, CLIPImageProcessor

    tok = word_tokenizer()
    text = tower(max_position_embeddings=20, vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    text.update(project_dim=24, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = AltCLIPConfig(text_config=text, vision_config=tower(image_size=32, patch_size=8), projection_dim=24)
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return AltCLIPModel(cfg), tok, proc, {"padding": "longest"}


FAMILIES = {
    "clip": build_clip,
    "metaclip": build_metaclip,
    "siglip": build_siglip,
    "siglip2": build_siglip2,
    "chinese_clip": build_chinese_clip,
    "altclip": build_altclip,
}


def images(seed: int = 0) -> list[Image.Image]:
    """Random images of several sizes and aspect ratios (NaFlex keeps each one's ratio)."""
    rng = np.random.default_rng(seed)
    sizes = [(48, 48), (30, 70), (64, 24), (21, 33)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


@pytest.fixture(params=sorted(FAMILIES))
def family(request, tmp_path):
    """``(name, directory written by transformers, module, tokenizer, processor, text kwargs)``."""
    torch.manual_seed(0)
    module, tok, proc, text_kw = FAMILIES[request.param](tmp_path)
    module.eval()
    path = tmp_path / request.param
    module.save_pretrained(path)
    tok.save_pretrained(path)
    proc.save_pretrained(path)
    return request.param, path, module, tok, proc, text_kw


def l2(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def pooled(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_family_loads_encodes_and_matches_its_own_processor(family):
    from transformers import AutoImageProcessor, AutoTokenizer

    name, path, module, _, _, text_kw = family
    proc, tok = AutoImageProcessor.from_pretrained(path), AutoTokenizer.from_pretrained(path)  # its own
    model = cliplab.load_model(path, device="cpu")
    assert isinstance(model, HFModel) and model.model_type == module.config.model_type
    assert json.loads((path / "config.json").read_text())["model_type"] == model.model_type
    assert isinstance(model.preprocess, PatchPreprocess) == (name == "siglip2")

    ims = images()
    with torch.no_grad():
        ref_img = l2(pooled(module.get_image_features(**proc(images=ims, return_tensors="pt"))))
        enc = tok(TEXTS, truncation=True, return_tensors="pt", **text_kw)
        enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        ref_txt = l2(pooled(module.get_text_features(**enc)))
    img = model.encode_images(ims, batch_size=3)
    txt = model.encode_texts(TEXTS)
    # a batch preprocessed beforehand (pixels, or packed NaFlex patches) encodes the same
    assert torch.allclose(model.encode_images(model.preprocess.batch(ims[:2])), img[:2], atol=1e-6)
    d = ref_img.shape[1]
    assert img.shape == (len(ims), d) and txt.shape == (len(TEXTS), d)
    assert torch.allclose(img.norm(dim=1), torch.ones(len(ims)), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)
    assert torch.allclose(img, ref_img, atol=2e-4), (img - ref_img).abs().max()
    assert torch.allclose(txt, ref_txt, atol=2e-4), (txt - ref_txt).abs().max()
    # features of different images differ (nothing collapsed to a constant)
    assert (img[0] - img[1]).abs().max() > 1e-3 and (txt[0] - txt[1]).abs().max() > 1e-3

    # logits use the checkpoint's own scale and bias
    scale = float(module.logit_scale.detach().exp())
    bias = getattr(module, "logit_bias", None)
    bias = None if bias is None else float(bias.detach())
    expected = scale * img @ txt.T + (0.0 if bias is None else bias)
    assert torch.allclose(model.logits(img, txt), expected, atol=1e-4)
    assert (model.logit_bias is None) == (bias is None)
    assert (
        model.has_token_embeddings and model.token_embeddings().weight.shape[0] == module.config.text_config.vocab_size
    )


def test_family_zero_shot_through_loader_and_cache(family, tmp_path):
    name, path, module, *_ = family
    model = cliplab.load_model(path, device="cpu")
    data = load_dataset("shapes:n=10,image_size=40")
    cache = tmp_path / "cache"
    res = zeroshot_evaluate(model, data, templates=["a photo of a {}"], cache_dir=cache, progress=False)
    assert 0.0 <= res["acc1"] <= 1.0
    again = zeroshot_evaluate(model, data, templates=["a photo of a {}"], cache_dir=cache, progress=False)
    assert again["acc1"] == res["acc1"]
    # the cached image features are the ones a direct encode gives
    direct = model.encode_images([data.image(i) for i in range(len(data))])
    feats = embed(model, data, cache_dir=cache, progress=False).images
    assert torch.allclose(feats, direct, atol=1e-5)


def test_family_save_round_trip(family, tmp_path):
    name, path, *_ = family
    model = cliplab.load_model(path, device="cpu")
    out = tmp_path / "saved"
    model.save(out)
    back = cliplab.load_model(out, device="cpu")
    assert back.preprocess == model.preprocess and type(back.preprocess) is type(model.preprocess)
    assert back.fingerprint() == model.fingerprint()
    ims = images(1)
    assert torch.allclose(back.encode_images(ims), model.encode_images(ims), atol=1e-6)
    assert torch.allclose(back.encode_texts(TEXTS), model.encode_texts(TEXTS), atol=1e-6)


def test_naflex_cache_key_follows_processor_config(tmp_path):
    """Two SigLIP 2 processors that differ only in ``max_num_patches`` give different features and keys."""
    torch.manual_seed(0)
    module, tok, proc, _ = build_siglip2(tmp_path)
    for n, where in ((24, "a"), (12, "b")):
        proc.max_num_patches = n
        module.save_pretrained(tmp_path / where)
        tok.save_pretrained(tmp_path / where)
        proc.save_pretrained(tmp_path / where)
    a, b = (cliplab.load_model(tmp_path / w, device="cpu") for w in "ab")
    assert a.preprocess.max_num_patches == 24 and b.preprocess.max_num_patches == 12
    assert a.fingerprint() != b.fingerprint()
    ims = images(2)
    assert not torch.allclose(a.encode_images(ims), b.encode_images(ims), atol=1e-3)


def test_patch_preprocess_matches_siglip2_processor_and_packs():
    from transformers import Siglip2ImageProcessorPil

    proc = Siglip2ImageProcessorPil(
        patch_size=4, max_num_patches=20, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25]
    )
    pp = Preprocess.from_hf_config(proc.to_dict())
    assert isinstance(pp, PatchPreprocess) and (pp.patch_size, pp.max_num_patches) == (4, 20)
    ims = images(3) + [Image.new("RGB", (3, 200))]  # a sliver: at least one patch a side
    ref = proc(images=ims, return_tensors="pt")
    packed = pp.batch(ims)
    assert packed.shape == (len(ims), 21, 48)
    ours = pp.inputs(ims)
    assert torch.equal(ours["spatial_shapes"], ref["spatial_shapes"].long())
    assert torch.equal(ours["pixel_attention_mask"], ref["pixel_attention_mask"].long())
    assert torch.allclose(ours["pixel_values"], ref["pixel_values"].float(), atol=1e-5)
    # the grid never exceeds the patch budget and keeps the aspect ratio roughly
    h, w = ours["spatial_shapes"].T
    assert bool((h * w <= 20).all()) and bool((h >= 1).all() and (w >= 1).all())
    assert int(h[1]) < int(w[1]) and int(h[2]) > int(w[2])  # 30x70 is wide, 64x24 tall
    # HF config round trip
    assert Preprocess.from_hf_config(pp.to_hf_config()) == pp
    with pytest.raises(ValueError, match="shape"):
        unpack_patches(torch.zeros(2, 3, 8, 8))


def test_siglip2_naflex_trains_saves_and_reloads(tmp_path):
    """Packed patch batches go through the trainer (no fixed-size image cache) and the saved model keeps NaFlex."""
    from cliplab.train import TrainConfig, Trainer

    torch.manual_seed(0)
    module, tok, proc, _ = build_siglip2(tmp_path)
    src = tmp_path / "siglip2"
    for part in (module, tok, proc):
        part.save_pretrained(src)
    cfg = {"model": {"spec": str(src)}, "data": {"train": "shapes:n=24,image_size=32"}, "steps": 2}
    cfg |= {"batch_size": 8, "loss": {"name": "siglip"}, "output_dir": str(tmp_path / "run")}
    summary = Trainer(TrainConfig.from_dict(cfg), progress=False).fit()
    assert summary["status"] == "completed" and summary["step"] == 2
    trained = cliplab.load_model(summary["model_dir"], device="cpu")
    assert isinstance(trained.preprocess, PatchPreprocess) and trained.preprocess.max_num_patches == 24
    before = cliplab.load_model(src, device="cpu")
    ims = images(5)
    assert not torch.allclose(trained.encode_images(ims), before.encode_images(ims), atol=1e-4)
