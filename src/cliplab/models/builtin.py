"""Built-in models: ``builtin:shapes``, ``builtin:shapes-lit`` (and any recipe registered in ``BUILTIN_MODELS``).

``builtin:shapes`` is a small CLIP (ViT image tower, word-level text tower) trained contrastively on
captions of the built-in shapes world (``cliplab.data.shapes_world``). ``builtin:shapes-lit`` (LiT,
``cliplab.models.builtin_lit``) pairs a ViT trained on the same world with the locked, pretrained MiniLM-L6
sentence encoder, so it understands words the captions never use. Both need no network.

**Shipped weights.** The package carries each built-in model's trained weights (fp16 safetensors,
a few MB) under ``cliplab/models/shipped/<name>/``, with ``recipe.json`` recording the recipe's key and
the zero-shot accuracy it reached. First use loads them in well under a second. When the recipe or
the world changes, its key changes, the shipped copy no longer matches and cliplab falls back to
training the recipe on first use (a few minutes on 2 CPU cores), cached under
``$CLIPLAB_HOME/models``; ``python scripts/ship_builtin.py`` re-creates the shipped copy from the
recipe (training is deterministic for a given torch version and thread count), and a test fails
while the shipped copy is stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from cliplab._io import atomic_dir, cache_home
from cliplab.models.factory import ModelConfig
from cliplab.models.hf import HFModel

log = logging.getLogger(__name__)

#: the file beside shipped weights that names the recipe key they were trained from
SHIPPED_RECIPE_FILE = "recipe.json"


class BuiltinRecipe(Protocol):
    """What a built-in model needs: a key (a hash of everything that determines the weights), a way to
    train it, and a way to ship and load a compact copy of the trained weights."""

    def key(self) -> str: ...

    def train(self, *, progress: bool = True) -> HFModel: ...

    def ship(self, model: HFModel, directory: Path) -> None: ...

    def load_shipped(self, directory: Path, *, spec: str, device: str | None = None) -> HFModel: ...


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
        return model.to(device) if device is not None else model


def _builtin_models() -> dict[str, BuiltinRecipe]:
    from cliplab.models.builtin_lit import LitRecipe

    return {"shapes": ShapesRecipe(), "shapes-lit": LitRecipe()}


#: name → recipe of every ``builtin:<name>`` model (``register_builtin`` adds one)
BUILTIN_MODELS: dict[str, BuiltinRecipe] = _builtin_models()


def register_builtin(name: str, recipe: BuiltinRecipe) -> None:
    """Make ``builtin:<name>`` loadable from ``recipe`` (shipped weights under ``shipped/<name>`` if present)."""
    BUILTIN_MODELS[name] = recipe


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
    """Where ``builtin:<name>`` is cached when it has to be trained (its shipped copy is stale or absent)."""
    recipe = BUILTIN_MODELS[name]
    return cache_home() / "models" / f"builtin-{name}-{recipe.key()}"


def shipped_dir(name: str) -> Path:
    """The package folder holding ``builtin:<name>``'s shipped weights (it may not exist)."""
    return Path(str(resources.files("cliplab.models") / "shipped" / name))


def shipped_info(name: str) -> dict[str, Any] | None:
    """``recipe.json`` of the shipped copy (``key``, ``zeroshot_val``, …), or None when nothing is shipped."""
    path = shipped_dir(name) / SHIPPED_RECIPE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def shipped_is_current(name: str) -> bool:
    info = shipped_info(name)
    return info is not None and info.get("key") == BUILTIN_MODELS[name].key()


def load_builtin(name: str, *, device: str | None = None, progress: bool = True) -> HFModel:
    """Load ``builtin:<name>``: the shipped weights when they match the recipe, else the cache (training first)."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"no built-in model {name!r} (available: {', '.join(sorted(BUILTIN_MODELS))})")
    recipe, spec = BUILTIN_MODELS[name], f"builtin:{name}"
    if shipped_is_current(name):
        return recipe.load_shipped(shipped_dir(name), spec=spec, device=device)
    if shipped_info(name) is not None:
        log.warning("the shipped weights of %s are stale (the recipe or the world changed): training it", spec)
    target = builtin_dir(name)
    if not (target / "config.json").is_file():
        with _locked(target.with_name(target.name + ".lock")):
            if not (target / "config.json").is_file():
                recipe.train(progress=progress).save(target)
    return HFModel.from_pretrained(str(target), spec=spec, device=device)


def ship_builtin(name: str, directory: str | Path | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Train ``builtin:<name>`` from its recipe and write the shipped copy (default: the package folder).

    Returns the ``recipe.json`` written beside the weights.
    """
    recipe = BUILTIN_MODELS[name]
    model = recipe.train(progress=progress)
    target = Path(directory) if directory is not None else shipped_dir(name)
    meta = getattr(model.module.config, "cliplab", None) or {}
    info = {"name": name, "key": recipe.key(), "zeroshot_val": meta.get("zeroshot_val")}
    with atomic_dir(target) as tmp:
        recipe.ship(model, tmp / "weights")
        for f in (tmp / "weights").iterdir():
            f.rename(tmp / f.name)
        (tmp / "weights").rmdir()
        (tmp / SHIPPED_RECIPE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def train_shapes_model(recipe: ShapesRecipe, *, progress: bool = True) -> HFModel:
    """Render the training world, build tokenizer and model, train contrastively, report zero-shot."""
    import torch

    from cliplab.data.shapes_world import VOCABULARY, shapes
    from cliplab.models.factory import build_tokenizer, create_model
    from cliplab.train.loop import ContrastiveLoopConfig, fit_contrastive

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
    model.module.config.cliplab = {
        **(getattr(model.module.config, "cliplab", None) or {}),
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


def describe() -> dict[str, Any]:
    """Where each built-in model comes from (shipped, cached or still to train)."""
    out = {}
    for name in BUILTIN_MODELS:
        if shipped_is_current(name):
            out[name] = {"path": str(shipped_dir(name)), "ready": True, "source": "shipped"}
        else:
            ready = (builtin_dir(name) / "config.json").is_file()
            out[name] = {"path": str(builtin_dir(name)), "ready": ready, "source": "cache" if ready else "train"}
    return out


__all__ = [
    "BUILTIN_MODELS",
    "BuiltinRecipe",
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
