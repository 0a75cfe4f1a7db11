"""Built-in models, trained on first use and cached: ``builtin:shapes``.

``builtin:shapes`` is a small CLIP (ViT image tower, word-level text tower) trained contrastively on
captions of the built-in shapes world (``cliplab.data.shapes``). It needs no network: the recipe
renders its data, trains on the CPU in a few minutes, and saves a Hugging Face directory under
``$CLIPLAB_HOME/models``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cliplab._io import cache_home
from cliplab.models.factory import ModelConfig
from cliplab.models.hf import HFModel

log = logging.getLogger(__name__)


@dataclass
class ShapesRecipe:
    """How ``builtin:shapes`` is made. Changing any field changes the cache entry."""

    version: int = 1
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(
            image_size=64,
            patch_size=16,  # 4×4 tokens: a patch-8 ViT learns shapes far slower per CPU second
            vision_width=128,
            vision_layers=4,
            vision_heads=4,
            text_width=128,
            text_layers=2,
            text_heads=4,
            context_length=16,
            embed_dim=128,
        )
    )
    n_train: int = 12000
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 60
    seed: int = 0

    def key(self) -> str:
        from cliplab.data.base import stable_hash
        from cliplab.data.shapes import RENDER_VERSION

        return stable_hash({"recipe": asdict(self), "render": RENDER_VERSION})


BUILTIN_MODELS: dict[str, ShapesRecipe] = {"shapes": ShapesRecipe()}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive file lock, so concurrent first uses train once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def builtin_dir(name: str) -> Path:
    recipe = BUILTIN_MODELS[name]
    return cache_home() / "models" / f"builtin-{name}-{recipe.key()}"


def load_builtin(name: str, *, device: str | None = None, progress: bool = True) -> HFModel:
    """Load ``builtin:<name>`` from the cache, training it first if needed."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"no built-in model {name!r} (available: {', '.join(sorted(BUILTIN_MODELS))})")
    target = builtin_dir(name)
    if not (target / "config.json").is_file():
        with _locked(target.with_name(target.name + ".lock")):
            if not (target / "config.json").is_file():
                model = train_shapes_model(BUILTIN_MODELS[name], progress=progress)
                model.save(target)
    model = HFModel.from_pretrained(str(target), spec=f"builtin:{name}", device=device)
    return model


def train_shapes_model(recipe: ShapesRecipe, *, progress: bool = True) -> HFModel:
    """Render the training world, build tokenizer and model, train contrastively, report zero-shot."""
    import torch

    from cliplab.data.shapes import VOCABULARY, shapes
    from cliplab.models.factory import build_tokenizer, create_model
    from cliplab.train.loop import ContrastiveLoopConfig, fit_contrastive

    log.info("training builtin:shapes (first use; cached afterwards)")
    data = shapes("train", n=recipe.n_train, seed=recipe.seed, task="shape", objects="mixed")
    tokenizer = build_tokenizer(VOCABULARY, context_length=recipe.model.context_length)
    model = create_model(recipe.model, tokenizer, spec="builtin:shapes", seed=recipe.seed)
    fit_contrastive(
        model,
        data,
        ContrastiveLoopConfig(
            steps=recipe.steps,
            batch_size=recipe.batch_size,
            lr=recipe.lr,
            weight_decay=recipe.weight_decay,
            warmup_steps=recipe.warmup_steps,
            seed=recipe.seed,
        ),
        progress=progress,
    )
    report = shapes_zeroshot_report(model, progress=progress)
    log.info("builtin:shapes zero-shot accuracy: %s", json.dumps(report))
    model.module.config.cliplab = {
        **(getattr(model.module.config, "cliplab", None) or {}),
        "recipe": asdict(recipe),
        "zeroshot_val": report,
    }
    torch.set_grad_enabled(True)
    return model


def shapes_zeroshot_report(model: HFModel, n: int = 600, *, progress: bool = False) -> dict[str, Any]:
    """Zero-shot top-1 on the validation split for the shape and colour tasks."""
    from cliplab.data.shapes import shapes
    from cliplab.zeroshot.evaluate import zeroshot_evaluate

    out = {}
    for task in ("shape", "colour"):
        ds = shapes("val", n=n, seed=0, task=task, objects=1)
        out[task] = round(zeroshot_evaluate(model, ds, cache_dir=False, progress=False)["acc1"], 4)
    return out


def describe() -> dict[str, Any]:
    """Where each built-in model is cached and whether it exists yet."""
    return {
        name: {"path": str(builtin_dir(name)), "ready": (builtin_dir(name) / "config.json").is_file()}
        for name in BUILTIN_MODELS
    }


__all__ = ["BUILTIN_MODELS", "ShapesRecipe", "builtin_dir", "describe", "load_builtin"]
