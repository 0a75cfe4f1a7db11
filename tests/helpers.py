"""Helpers shared by test modules (``from helpers import ...``): tiny models and image fixtures on disk.

Fixtures live in ``conftest.py``; plain functions live here, so no test imports ``conftest``.
"""

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


def write_shapes_folder(root, n, seed, held_out=None):
    """root/<shape>/*.png rendered from the built-in world (32 px); flat root/*.png for held-out (OOD) images."""
    from cliplab.data import shapes

    ds = shapes("test", n=n, seed=seed, image_size=32, held_out=held_out)
    for i in range(n):
        folder = root if held_out else root / ds.classnames[int(ds.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        ds.image(i).save(folder / f"{i:03d}.png")
    return root


def write_random_images(root, names, seed=0):
    """Random-noise PNGs of varying sizes (20–49 px a side) at ``root/<name>``; returns the names, sorted."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(20, 50, size=2)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name)
    return sorted(names)


def augment(X, passes: int, seed: int = 0, noise: float = 0.35):
    """Stand-in for random crops: ``passes`` perturbed, renormalised copies of every image ``[P, N, D]``."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    return F.normalize(X[None] + noise * torch.randn(passes, *X.shape, generator=g) / X.shape[1] ** 0.5, dim=-1)
