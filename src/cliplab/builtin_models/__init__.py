"""Built-in models: ``builtin:shapes``, ``builtin:shapes-lit`` (and any recipe registered in ``BUILTIN_MODELS``).

``builtin:shapes`` (``cliplab.builtin_models.shapes``) is a small CLIP (ViT image tower, word-level text tower)
trained contrastively on captions of the built-in shapes world (``cliplab.data.shapes_world``).
``builtin:shapes-lit`` (LiT, ``cliplab.builtin_models.lit``) pairs a ViT trained on the same world with the locked,
pretrained MiniLM-L6 sentence encoder, so it understands words the captions never use. Both need no network.

The recipes train with ``cliplab.train``, so this package sits above it (and above ``cliplab.models``, whose
``builtin:`` source, in ``cliplab.models.builtin_sources``, imports the catalogue by name on first use).
Shipped weights, the cache and the catalogue: ``cliplab.builtin_models.catalog``.
"""

from cliplab.builtin_models.catalog import (
    BUILTIN_MODELS,
    BuiltinRecipe,
    builtin_dir,
    describe,
    load_builtin,
    register_builtin,
    ship_builtin,
    shipped_dir,
    shipped_info,
    shipped_is_current,
)
from cliplab.builtin_models.lit import LitRecipe, LitVisionConfig
from cliplab.builtin_models.shapes import ShapesRecipe

__all__ = [
    "BUILTIN_MODELS",
    "BuiltinRecipe",
    "LitRecipe",
    "LitVisionConfig",
    "ShapesRecipe",
    "builtin_dir",
    "describe",
    "load_builtin",
    "register_builtin",
    "ship_builtin",
    "shipped_dir",
    "shipped_info",
    "shipped_is_current",
]
