import os

import pytest
import torch

# Tests never touch the user's cache and never reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CLIPLAB_HOME", str(tmp_path_factory.getbasetemp() / "cliplab_home"))


WORDS = [
    "a photo of a red blue green circle square star thing",
    "a small large shape on the left right above below",
]


def make_tiny_model(image_size: int = 32, seed: int = 0, geometry: str = "cosine"):
    """A randomly initialised tiny CLIP (real transformers CLIPModel + word-level tokenizer)."""
    from cliplab.models.factory import ModelConfig, build_tokenizer, create_model

    cfg = ModelConfig(
        image_size=image_size,
        patch_size=8,
        vision_width=32,
        vision_layers=1,
        vision_heads=2,
        text_width=32,
        text_layers=1,
        text_heads=2,
        context_length=12,
        embed_dim=16,
        geometry=geometry,
    )
    return create_model(cfg, build_tokenizer(WORDS, context_length=12), seed=seed)


@pytest.fixture
def tiny_model():
    return make_tiny_model()


@pytest.fixture
def tiny_model_dir(tmp_path):
    path = tmp_path / "tiny-clip"
    make_tiny_model().save(path)
    return path


@pytest.fixture
def image_folder(tmp_path):
    """root/<class>/*.png with 2 classes × 4 random images of varying sizes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for cls in ("red_circle", "blue_square"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            h, w = rng.integers(24, 60, size=2)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root
