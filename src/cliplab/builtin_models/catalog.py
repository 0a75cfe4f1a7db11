"""The catalogue of built-in models (``BUILTIN_MODELS``): their shipped weights and their cache; the ``builtin:``
model source (``cliplab.models.builtin_sources``) imports this module by name when a spec first uses the prefix.

**Shipped weights.** The package carries each built-in model's trained weights (fp16 safetensors,
a few MB) under ``cliplab/builtin_models/shipped/<name>/``, with ``recipe.json`` recording the recipe's key and
the zero-shot accuracy it reached. First use loads them in well under a second. When the recipe or
the world changes, its key changes, the shipped copy no longer matches and cliplab falls back to
training the recipe on first use (a few minutes on 2 CPU cores), cached under
``$CLIPLAB_HOME/models``; ``python scripts/ship_builtin.py`` re-creates the shipped copy from the
recipe (training is deterministic for a given torch version and thread count), and a test fails
while the shipped copy is stale.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from cliplab._io import atomic_dir
from cliplab.builtin_models.cache import cache_dir, lock_path, locked
from cliplab.builtin_models.lit import LitRecipe
from cliplab.builtin_models.shapes import ShapesRecipe
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


#: name → recipe of every ``builtin:<name>`` model (``register_builtin`` adds one)
BUILTIN_MODELS: dict[str, BuiltinRecipe] = {"shapes": ShapesRecipe(), "shapes-lit": LitRecipe()}


def register_builtin(name: str, recipe: BuiltinRecipe) -> None:
    """Make ``builtin:<name>`` loadable from ``recipe`` (shipped weights under ``shipped/<name>`` if present)."""
    BUILTIN_MODELS[name] = recipe


def builtin_dir(name: str) -> Path:
    """Where ``builtin:<name>`` is cached when it has to be trained (its shipped copy is stale or absent)."""
    return cache_dir(name, BUILTIN_MODELS[name].key())


def shipped_dir(name: str) -> Path:
    """The package folder holding ``builtin:<name>``'s shipped weights (it may not exist)."""
    return Path(str(resources.files("cliplab.builtin_models") / "shipped" / name))


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
        with locked(lock_path(target)):
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
    "builtin_dir",
    "describe",
    "load_builtin",
    "register_builtin",
    "ship_builtin",
    "shipped_dir",
    "shipped_info",
    "shipped_is_current",
]
