import pytest
import torch

from cliplab import load_model
from cliplab.builtin_models import catalog
from cliplab.builtin_models import shapes as builtin_shapes
from cliplab.builtin_models.catalog import builtin_dir
from cliplab.builtin_models.shapes import ShapesRecipe
from cliplab.models.factory import ModelConfig


@pytest.fixture
def tiny_recipe(monkeypatch):
    recipe = ShapesRecipe(
        model=ModelConfig(
            image_size=32,
            patch_size=16,
            vision_width=32,
            vision_layers=1,
            vision_heads=2,
            text_width=32,
            text_layers=1,
            text_heads=2,
            context_length=16,
            embed_dim=16,
        ),
        n_train=256,
        steps=25,
        batch_size=32,
        warmup_steps=5,
    )
    monkeypatch.setitem(catalog.BUILTIN_MODELS, "shapes", recipe)
    monkeypatch.setattr(
        builtin_shapes,
        "shapes_zeroshot_report",
        lambda model, n=600, progress=False: builtin_shapes.__dict__["_report"](model, 60),
    )
    return recipe


def _small_report(model, n):
    from cliplab.data.shapes_world import shapes
    from cliplab.zeroshot.evaluate import zeroshot_evaluate

    return {
        t: zeroshot_evaluate(model, shapes("val", n=n, task=t, image_size=32), cache_dir=False, progress=False)["acc1"]
        for t in ("shape", "colour")
    }


builtin_shapes._report = _small_report


def test_builtin_trains_once_then_loads_from_cache(tiny_recipe, monkeypatch):
    calls = []
    original = builtin_shapes.train_shapes_model

    def counting(recipe, progress=True):
        calls.append(recipe)
        return original(recipe, progress=False)

    monkeypatch.setattr(builtin_shapes, "train_shapes_model", counting)
    m1 = load_model("builtin:shapes", device="cpu")
    assert len(calls) == 1 and (builtin_dir("shapes") / "config.json").is_file()
    meta = m1.module.config.cliplab
    assert meta["recipe"]["steps"] == 25 and set(meta["zeroshot_val"]) == {"shape", "colour"}
    m2 = load_model("builtin:shapes", device="cpu")
    assert len(calls) == 1, "the second load must come from the cache"
    assert m2.spec == "builtin:shapes"
    texts = ["a red circle.", "a blue square."]
    assert torch.allclose(m1.encode_texts(texts), m2.encode_texts(texts), atol=1e-6)


def test_training_loop_lowers_the_loss(tiny_recipe):
    from cliplab.data.shapes_world import VOCABULARY, shapes
    from cliplab.models.factory import build_tokenizer, create_model
    from cliplab.train.in_memory import ContrastiveLoopConfig, fit_contrastive

    model = create_model(tiny_recipe.model, build_tokenizer(VOCABULARY, context_length=16))
    data = shapes("train", n=256, image_size=32)
    losses = fit_contrastive(
        model, data, ContrastiveLoopConfig(steps=40, batch_size=32, warmup_steps=5, lr=2e-3), progress=False
    )
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.2
    assert model.module.logit_scale.exp().item() <= 100.0 + 1e-4


def test_builtin_source_is_registered_on_first_use_from_above_models():
    """``cliplab.models`` names the ``builtin:`` form without importing the recipes (they sit above ``train``);
    the first ``builtin:`` spec imports ``cliplab.builtin_models``, which registers the source."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "from cliplab.models import SPEC_FORMS, check_model_spec, model_sources\n"
        "assert any(f.startswith('builtin:<name>') for f in SPEC_FORMS), list(SPEC_FORMS)\n"
        "assert 'cliplab.builtin_models' not in sys.modules and 'cliplab.train.in_memory' not in sys.modules\n"
        "check_model_spec('builtin:shapes')\n"
        "assert 'cliplab.builtin_models' in sys.modules and 'builtin' in model_sources()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    src = Path(__file__).resolve().parents[1] / "src" / "cliplab"
    for path in (src / "models").rglob("*.py"):  # the models layer never imports the recipes statically
        text = path.read_text()
        assert "from cliplab.builtin_models" not in text and "import cliplab.builtin_models" not in text, path
        assert "from cliplab.train" not in text and "from cliplab.zeroshot" not in text, path
