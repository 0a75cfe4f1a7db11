"""``builtin:shapes``: a small CLIP (ViT image tower, word-level text tower) trained contrastively (Radford et al.
2021) on captions of the built-in shapes world (``cliplab.data.shapes_world``); no network needed.

``ShapesRecipe`` records everything that determines the weights; its ``key()`` decides whether the shipped copy
(``cliplab.builtin_models.catalog``) is current.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cliplab.models.factory import ModelConfig
from cliplab.models.hf import HFModel

log = logging.getLogger(__name__)


@dataclass
class ShapesRecipe:
    """How ``builtin:shapes`` is made. Changing any field (or the world) changes the key."""

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
        from cliplab.data.shapes_world import RENDER_VERSION, VOCABULARY

        return stable_hash({"recipe": asdict(self), "render": RENDER_VERSION, "vocabulary": VOCABULARY})

    def train(self, *, progress: bool = True) -> HFModel:
        return train_shapes_model(self, progress=progress)

    def ship(self, model: HFModel, directory: Path) -> None:
        """The whole HF directory with fp16 weights (halves the package's size; loaded back as fp32)."""
        import copy

        half = HFModel(copy.deepcopy(model.module).half(), model.tokenizer, model.preprocess, spec=model.spec)
        half.save(directory)

    def load_shipped(self, directory: Path, *, spec: str, device: str | None = None) -> HFModel:
        model = HFModel.from_pretrained(str(directory), spec=spec)
        model.module.float()
        if device is not None:
            model.to(device)
        return model


def train_shapes_model(recipe: ShapesRecipe, *, progress: bool = True) -> HFModel:
    """Render the training world, build tokenizer and model, train contrastively, report zero-shot."""
    import torch

    from cliplab.data.shapes_world import VOCABULARY, shapes
    from cliplab.models.factory import build_tokenizer, create_model
    from cliplab.train.in_memory import ContrastiveLoopConfig, fit_contrastive

    log.info("training builtin:shapes from its recipe")
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
    config: Any = model.module.config
    config.cliplab = {
        **(getattr(config, "cliplab", None) or {}),
        "recipe": asdict(recipe),
        "zeroshot_val": report,
    }
    torch.set_grad_enabled(True)
    return model


def shapes_zeroshot_report(model: HFModel, n: int = 600, *, progress: bool = False) -> dict[str, Any]:
    """Zero-shot top-1 on the validation split for the shape and colour tasks."""
    from cliplab.data.shapes_world import shapes
    from cliplab.zeroshot.evaluate import zeroshot_evaluate

    out = {}
    for task in ("shape", "colour"):
        ds = shapes("val", n=n, seed=0, task=task, objects=1)
        out[task] = round(zeroshot_evaluate(model, ds, cache_dir=False, progress=False)["acc1"], 4)
    return out


__all__ = ["ShapesRecipe", "shapes_zeroshot_report", "train_shapes_model"]
