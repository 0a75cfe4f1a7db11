"""The built-in models' shipped weights: current with their recipes, fast to load, as accurate as recorded."""

import fnmatch
import importlib
import tomllib
from pathlib import Path

import pytest
import torch

from cliplab import load_model
from cliplab.builtin_models import catalog, lit
from cliplab.builtin_models import shapes as builtin_shapes
from cliplab.builtin_models.catalog import BUILTIN_MODELS, ship_builtin, shipped_dir, shipped_info
from cliplab.builtin_models.shapes import ShapesRecipe
from cliplab.models.factory import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["shapes", "shapes-lit"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_copy_matches_the_recipe(name):
    info = shipped_info(name)
    assert info is not None, f"nothing shipped for builtin:{name}: run python scripts/ship_builtin.py {name}"
    assert info["key"] == BUILTIN_MODELS[name].key(), (
        f"the shipped weights of builtin:{name} are stale (recipe or world changed): "
        f"run python scripts/ship_builtin.py {name}"
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_are_package_data(name):
    """Every shipped file matches a package-data glob, so a wheel carries it."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cliplab"]
    base = ROOT / "src" / "cliplab"
    files = [p for p in shipped_dir(name).rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    for p in files:
        rel = p.relative_to(base).as_posix()
        assert any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(p.name, g.split("/")[-1]) for g in globs), rel


def test_builtin_shapes_loads_without_training_and_reaches_the_recorded_accuracy(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("builtin:shapes must load from the shipped weights, not train")

    monkeypatch.setattr(builtin_shapes, "train_shapes_model", no_training)
    model = load_model("builtin:shapes", device="cpu")
    assert model.spec == "builtin:shapes"
    assert all(p.dtype == torch.float32 for p in model.module.parameters())
    recorded = shipped_info("shapes")["zeroshot_val"]
    measured = builtin_shapes.shapes_zeroshot_report(model)
    for task, acc in recorded.items():
        # fp16 storage moves a few borderline images at most
        assert measured[task] == pytest.approx(acc, abs=0.015), (task, measured, recorded)
        assert acc > 0.8


def test_builtin_shapes_lit_assembles_from_the_shipped_part_without_training(monkeypatch):
    monkeypatch.setattr(lit.LitRecipe, "train", lambda *a, **k: pytest.fail("must not train"))
    model = load_model("builtin:shapes-lit", device="cpu")
    assert (catalog.builtin_dir("shapes-lit") / "model.safetensors").is_file()  # assembled into the cache once
    recorded = shipped_info("shapes-lit")["zeroshot_val"]
    # the assembled model is bit-identical to the trained one: the recorded accuracy, exactly
    assert lit.lit_zeroshot_report(model) == recorded


def _tiny_recipe() -> ShapesRecipe:
    cfg = ModelConfig(image_size=32, patch_size=16, vision_width=32, vision_layers=1, vision_heads=2, text_width=32,
                      text_layers=1, text_heads=2, context_length=16, embed_dim=16)  # fmt: skip
    return ShapesRecipe(model=cfg, n_train=128, steps=6, batch_size=32, warmup_steps=2)


def test_ship_round_trip_and_stale_detection(tmp_path, monkeypatch):
    recipe = _tiny_recipe()
    monkeypatch.setattr(builtin_shapes, "shapes_zeroshot_report", lambda model, n=600, progress=False: {"shape": 0.5})
    monkeypatch.setitem(BUILTIN_MODELS, "tiny", recipe)
    monkeypatch.setattr(catalog, "shipped_dir", lambda name: tmp_path / "shipped" / name)
    info = ship_builtin("tiny", progress=False)
    assert info["key"] == recipe.key() and (tmp_path / "shipped" / "tiny" / "recipe.json").is_file()
    assert not list((tmp_path / "shipped").glob(".*")), "no temporary files left behind"

    # the recipe is deterministic: training it again gives the same weights, bit for bit
    torch.manual_seed(123)  # global RNG state must not matter
    again = recipe.train(progress=False)
    fresh = recipe.train(progress=False)
    monkeypatch.setattr(builtin_shapes, "train_shapes_model", lambda *a, **k: pytest.fail("must load the shipped copy"))
    loaded = load_model("builtin:tiny", device="cpu")
    texts = ["a red circle.", "a blue square on the left."]
    # the shipped copy is fp16: equal to the float32 training result up to half-precision rounding
    a, b = loaded.encode_texts(texts), again.encode_texts(texts)
    assert torch.allclose(a, b, atol=5e-3), (a - b).abs().max()
    for (k, v), (_, w) in zip(again.module.state_dict().items(), fresh.module.state_dict().items(), strict=True):
        assert torch.equal(v, w), k

    # a changed recipe no longer matches the shipped key: cliplab trains instead of loading stale weights
    changed = ShapesRecipe(model=recipe.model, n_train=128, steps=7, batch_size=32, warmup_steps=2)
    monkeypatch.setitem(BUILTIN_MODELS, "tiny", changed)
    calls = []
    monkeypatch.setattr(builtin_shapes, "train_shapes_model", lambda r, progress=True: calls.append(r) or fresh)
    load_model("builtin:tiny", device="cpu")
    assert calls == [changed]


def test_recipe_key_covers_the_world():
    """Changing the world's vocabulary or render version changes the key (a stale shipped copy is caught)."""
    world = importlib.import_module("cliplab.data.shapes_world")

    r = ShapesRecipe()
    k = r.key()
    vocab = list(world.VOCABULARY)
    try:
        world.VOCABULARY.append("zebra")
        assert r.key() != k
    finally:
        world.VOCABULARY[:] = vocab
    assert r.key() == k
    old = world.RENDER_VERSION
    try:
        world.RENDER_VERSION = old + 1
        assert r.key() != k
    finally:
        world.RENDER_VERSION = old
