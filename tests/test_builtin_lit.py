"""builtin:shapes-lit: LiT (Zhai et al., 2022) with the MiniLM-L6 text tower locked.

Mechanics use a tiny recipe of a few steps; the zero-shot check uses the full recipe's trained weights
(the shipped ones, assembled with MiniLM on first use).
"""

import json

import pytest
import torch
from safetensors import safe_open

from cliplab.builtin_models import lit as builtin_lit
from cliplab.builtin_models.lit import LitRecipe, LitVisionConfig, locked_text_outputs, minilm_dir
from cliplab.models.hf import HFModel

pytestmark = pytest.mark.usefixtures("one_thread")

UNSEEN = ["a crimson disc", "a handwritten seven", "a violet object", "an emerald thing", "a lime box"]


def _tiny_recipe() -> LitRecipe:
    return LitRecipe(
        vision=LitVisionConfig(image_size=32, patch_size=16, width=32, layers=1, heads=2),
        embed_dim=16,
        n_train=48,
        steps=4,
        batch_size=16,
        warmup_steps=1,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(recipe, the trained model, its saved directory)."""
    recipe = _tiny_recipe()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    report = builtin_lit.lit_zeroshot_report
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtin_lit, "lit_zeroshot_report", lambda model: report(model, n=24))
        model = recipe.train(progress=False)
    torch.set_num_threads(threads)
    directory = tmp_path_factory.mktemp("lit") / "model"
    model.save(directory)
    return recipe, model, directory


def _features(model: HFModel, texts, n_images=6):
    from cliplab.data.shapes_world import shapes

    images = shapes("val", n=n_images, image_size=32).images(range(n_images))
    return model.encode_images(images), model.encode_texts(texts)


def test_saved_directory_is_a_vision_text_dual_encoder(trained):
    _, model, directory = trained
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "vision-text-dual-encoder"
    assert (
        config["text_config"]["model_type"] == "bert" and config["vision_config"]["model_type"] == "clip_vision_model"
    )
    assert config["cliplab"]["text_tower"]["locked"] is True
    assert {"tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "model.safetensors"} <= {
        p.name for p in directory.iterdir()
    }


def test_round_trip_through_hfmodel(trained):
    _, model, directory = trained
    loaded = HFModel.from_pretrained(str(directory))
    assert loaded.preprocess == model.preprocess and loaded.geometry == "cosine"
    assert loaded.logit_scale == pytest.approx(model.logit_scale)
    img_a, txt_a = _features(model, UNSEEN)
    img_b, txt_b = _features(loaded, UNSEEN)
    torch.testing.assert_close(img_a, img_b, rtol=0, atol=1e-5)
    torch.testing.assert_close(txt_a, txt_b, rtol=0, atol=1e-5)
    assert loaded.fingerprint() == model.fingerprint()


def test_round_trip_through_transformers(trained):
    from transformers import AutoTokenizer, VisionTextDualEncoderModel

    _, model, directory = trained
    module = VisionTextDualEncoderModel.from_pretrained(str(directory)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    tokens = tokenizer(UNSEEN, padding=True, return_tensors="pt")
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # the documented pooling, written out with plain transformers: masked mean of MiniLM's token states
        assert module.config.cliplab["text_pooling"] == "mean"
        hidden = module.text_model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        text = module.text_projection((hidden * mask).sum(1) / mask.sum(1))
        image = module.get_image_features(pixel_values=pixels).pooler_output
        text_ref = model.text_embeddings(model.tokenize(UNSEEN))
        image_ref = model.image_embeddings(pixels)
    torch.testing.assert_close(text, text_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(image, image_ref, rtol=0, atol=1e-5)


def test_text_tower_is_locked_and_bit_identical_to_minilm(trained):
    _, model, directory = trained
    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as f:
        reference = {k: f.get_tensor(k) for k in f.keys() if k != "embeddings.position_ids"}
    for state in (
        model.module.text_model.state_dict(),
        HFModel.from_pretrained(str(directory)).module.text_model.state_dict(),
    ):
        assert set(reference) <= set(state)
        for name, tensor in reference.items():
            assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        for name, tensor in reference.items():
            assert torch.equal(f.get_tensor(f"text_model.{name}"), tensor), name
    assert not any(p.requires_grad for p in model.module.text_model.parameters())
    # training ran: the last step's gradients reached the image tower and projections, never the text tower
    grads = {n for n, p in model.module.named_parameters() if p.grad is not None}
    assert {"text_projection.weight", "visual_projection.weight", "logit_scale"} <= grads
    assert any(n.startswith("vision_model.") for n in grads)
    assert not any(n.startswith("text_model.") for n in grads)


def test_cached_text_outputs_match_the_tower(trained):
    """The training-time cache of the locked tower equals what the saved model computes itself."""
    _, model, _ = trained
    with torch.no_grad():
        projected = model.module.text_projection(locked_text_outputs(model, UNSEEN, batch_size=2))
    torch.testing.assert_close(projected, model.text_embeddings(model.tokenize(UNSEEN)), rtol=0, atol=1e-5)


def test_unseen_words_get_distinct_features(trained):
    _, model, _ = trained
    tokens = model.tokenize(UNSEEN)
    assert not (tokens["input_ids"] == model.tokenizer.unk_token_id).any()
    features = model.encode_texts(UNSEEN)
    assert torch.isfinite(features).all()
    torch.testing.assert_close(features.norm(dim=1), torch.ones(len(UNSEEN)))
    sims = features @ features.T
    off_diagonal = sims[~torch.eye(len(UNSEEN), dtype=torch.bool)]
    assert off_diagonal.max() < 0.999
    # the locked tower tells them apart before any projection, too
    raw = torch.nn.functional.normalize(locked_text_outputs(model, UNSEEN), dim=1)
    assert (raw @ raw.T)[~torch.eye(len(UNSEEN), dtype=torch.bool)].max() < 0.999


def test_export_then_assemble_reproduces_the_model(trained, tmp_path):
    recipe, model, directory = trained
    recipe.export_trained(model, tmp_path / "shipped")
    shipped = {p.name for p in (tmp_path / "shipped").iterdir()}
    assert shipped == {"trained.safetensors", "config.json", "preprocessor_config.json", "lit.json"}
    with safe_open(str(tmp_path / "shipped" / "trained.safetensors"), "pt") as f:
        assert not any(k.startswith("text_model.") for k in f.keys())
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert json.loads((tmp_path / "shipped" / "lit.json").read_text())["key"] == recipe.key()
    recipe.assemble(tmp_path / "shipped", tmp_path / "full")
    assembled = HFModel.from_pretrained(str(tmp_path / "full"))
    ours = model.module.state_dict()
    theirs = assembled.module.state_dict()
    assert set(ours) == set(theirs)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name  # train() rounds through float16: nothing is lost
    assert assembled.fingerprint() == HFModel.from_pretrained(str(directory)).fingerprint()


def test_assemble_refuses_another_recipe_or_other_minilm_weights(trained, tmp_path):
    recipe, model, _ = trained
    recipe.export_trained(model, tmp_path / "shipped")
    with pytest.raises(ValueError, match="recipe"):
        LitRecipe(steps=recipe.steps + 1).assemble(tmp_path / "shipped", tmp_path / "full")
    lit_file = tmp_path / "shipped" / "lit.json"
    lit = json.loads(lit_file.read_text())
    lit["text_tower"]["sha256"] = "not-these-weights"
    lit_file.write_text(json.dumps(lit))
    with pytest.raises(ValueError, match="MiniLM weights"):
        recipe.assemble(tmp_path / "shipped", tmp_path / "full")
    assert not (tmp_path / "full").exists()


def test_key_tracks_recipe_and_text_tower(monkeypatch):
    recipe = LitRecipe()
    key = recipe.key()
    assert key == LitRecipe().key()
    assert LitRecipe(steps=recipe.steps + 1).key() != key
    assert LitRecipe(vision=LitVisionConfig(layers=2)).key() != key
    assert builtin_lit.minilm_fingerprint() not in ("not-installed", "unknown")
    monkeypatch.setattr(builtin_lit, "minilm_fingerprint", lambda: "other-weights")
    assert recipe.key() != key


def _trained_model() -> HFModel:
    """The shipped builtin:shapes-lit (assembled with MiniLM on first use); it must never need training."""
    from cliplab import load_model
    from cliplab.builtin_models.catalog import shipped_is_current

    assert shipped_is_current("shapes-lit"), "stale shipped weights: run python scripts/ship_builtin.py shapes-lit"
    return load_model("builtin:shapes-lit", device="cpu")


@pytest.mark.slow
def test_zero_shot_with_synonyms_the_captions_never_use():
    from cliplab.data.shapes_world import VOCABULARY

    model = _trained_model()
    for synonyms in builtin_lit.SYNONYMS.values():
        for word in synonyms.values():
            assert not set(word.split()) <= set(VOCABULARY), f"{word!r} is in the captions' vocabulary"
    report = builtin_lit.lit_zeroshot_report(model, n=600, split="test")
    chance = 1 / 6
    for task in ("colour", "shape"):
        assert report[f"{task}_original"] >= 0.8, report
        assert report[f"{task}_synonyms"] >= 2 * chance, report
