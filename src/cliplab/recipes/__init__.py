"""Each method's reference recipe, as data: ``recipes/<method>/<name>.yaml`` (package data).

A recipe file holds the settings of one reference configuration under the method's own parameter names, and
where it came from::

    method: tip_adapter_f            # the method's registry name
    name: imagenet                   # the file's stem: the reference's own config name where it has one
    default: true                    # the method's default recipe (exactly one per method)
    datasets: [imagenet]             # optional: dataset keys this recipe is the default for (per-dataset configs)
    source: {repository: gaopengcuhk/Tip-Adapter, file: configs/imagenet.yaml}
    validation: full                 # how hyper-parameters are searched, see VALIDATION
    params: {alpha: 1.17, beta: 1.0, epochs: 20, lr: 0.001, batch_size: 256}
    grid:                            # the search grid: lists, or {search_scale, search_step} (Tip's search_hp)
      beta: {search_scale: 7, search_step: 200}
      alpha: [0.5, 1.0]
    note: what differs from the reference and why

``load_recipe(method, name=None, dataset=None)`` resolves one: ``name`` a recipe name of the method or the
path of a user's own YAML file (``method`` there is optional); ``None`` picks the recipe whose ``datasets``
list the dataset's key (``dataset_key``), else the method's default. The directory of ``lp++`` is
``lpplusplus`` (``recipe_dir``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "VALIDATION",
    "Recipe",
    "dataset_key",
    "load_recipe",
    "recipe_dir",
    "recipe_names",
    "recipe_methods",
    "search_grid",
]

#: validation policies: which images score a method's hyper-parameter grid (never the test split)
VALIDATION = {
    "full": "the dataset's whole validation split",
    "k_per_class": "k validation images per class (k: the run's shots)",
    "min_k_4": "min(k, 4) validation images per class (CoOp/Dassl's few-shot val; lpclip's val_shot_list)",
    "none": "no search: the recipe's parameters",
}
_KEYS = {"method", "name", "default", "datasets", "source", "validation", "params", "grid", "note"}


def search_grid(top: float, steps: int) -> list[float]:
    """Tip-Adapter's search list ``[0.1 + i·(top − 0.1)/steps for i < steps]`` (``search_hp``; ``top`` excluded)."""
    return [round(0.1 + i * (top - 0.1) / steps, 6) for i in range(steps)]


@dataclass(frozen=True)
class Recipe:
    """One resolved recipe: ``params`` (constructor keyword arguments), ``grid`` (expanded search lists),
    ``validation`` (a key of ``VALIDATION``), ``source`` ``{repository, file}`` and the file it was read from."""

    method: str
    name: str
    params: dict[str, Any]
    grid: dict[str, list[Any]]
    validation: str
    source: dict[str, str]
    path: str
    default: bool = False
    datasets: tuple[str, ...] = ()
    note: str = ""
    grid_spec: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What results record: the recipe's name, source, validation and settings (the grid as written)."""
        return {
            "recipe": self.name,
            "source": dict(self.source),
            "validation": self.validation,
            "params": dict(self.params),
            "grid": dict(self.grid_spec),
            "file": self.path,
        }


def recipe_dir(method: str) -> str:
    """The directory name of a method's recipes (``lp++`` → ``lpplusplus``)."""
    return method.replace("+", "plus")


def _root() -> Any:
    return resources.files("cliplab.recipes")


@cache
def recipe_methods() -> tuple[str, ...]:
    """Methods with shipped recipes (their registry names, read from the files)."""
    out = []
    for d in sorted(_root().iterdir(), key=lambda p: p.name):
        if d.is_dir() and not d.name.startswith("_"):
            files = sorted(f for f in d.iterdir() if f.name.endswith(".yaml"))
            if files:
                out.append(_parse(files[0].read_text(), f"cliplab:recipes/{d.name}/{files[0].name}")["method"])
    return tuple(out)


@cache
def _shipped(method: str) -> dict[str, Recipe]:
    d = _root() / recipe_dir(method)
    if not d.is_dir():
        return {}
    out = {}
    for f in sorted(d.iterdir(), key=lambda p: p.name):
        if f.name.endswith(".yaml"):
            r = _resolve(_parse(f.read_text(), f"cliplab:recipes/{d.name}/{f.name}"), f.name[:-5], method)
            out[r.name] = r
    defaults = [r.name for r in out.values() if r.default]
    if out and len(defaults) != 1:
        raise ValueError(f"recipes of {method!r}: exactly one must be 'default: true', found {defaults}")
    return out


def recipe_names(method: str) -> list[str]:
    """The shipped recipe names of ``method`` (empty when it has none)."""
    return list(_shipped(method))


def _parse(text: str, where: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a recipe is a mapping of {sorted(_KEYS)}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown recipe key(s) {unknown}; expected {sorted(_KEYS)}")
    return {**data, "_where": where}


def _grid(spec: Any, where: str) -> dict[str, list[Any]]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: grid must map parameter names to lists or {{search_scale, search_step}}")
    out: dict[str, list[Any]] = {}
    for key, value in spec.items():
        if isinstance(value, dict) and set(value) == {"search_scale", "search_step"}:
            out[key] = search_grid(float(value["search_scale"]), int(value["search_step"]))
        elif isinstance(value, list) and value:
            out[key] = list(value)
        else:
            raise ValueError(f"{where}: grid.{key} must be a non-empty list or {{search_scale, search_step}}")
    return out


def _resolve(data: dict[str, Any], name: str, method: str | None) -> Recipe:
    where = data["_where"]
    got = data.get("method", method)
    if not got:
        raise ValueError(f"{where}: the recipe names no method (add 'method: NAME')")
    if method and got != method:
        raise ValueError(f"{where}: a recipe for {got!r}, not {method!r}")
    validation = data.get("validation", "min_k_4")
    if validation not in VALIDATION:
        raise ValueError(f"{where}: validation must be one of {list(VALIDATION)}, got {validation!r}")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise ValueError(f"{where}: params must be a mapping of the method's parameter names")
    source = data.get("source") or {}
    if not isinstance(source, dict) or not {"repository", "file"} <= set(source):
        raise ValueError(f"{where}: source must give the reference's repository and file")
    return Recipe(
        method=str(got),
        name=str(data.get("name", name)),
        params=dict(params),
        grid=_grid(data.get("grid"), where),
        validation=validation,
        source={"repository": str(source["repository"]), "file": str(source["file"])},
        path=where,
        default=bool(data.get("default", False)),
        datasets=tuple(str(d) for d in data.get("datasets") or ()),
        note=str(data.get("note", "")).strip(),
        grid_spec=dict(data.get("grid") or {}),
    )


def load_recipe(method: str, name: str | None = None, dataset: str | None = None) -> Recipe:
    """The recipe ``name`` of ``method`` (a shipped name or a YAML file's path); ``None``: the recipe for
    ``dataset`` (its ``datasets`` list the dataset's key), else the method's default.

    Raises ``ValueError`` naming the recipes there are for an unknown name, and ``LookupError`` when the method
    has no recipe at all (the caller then uses the method's own defaults)."""
    if name is not None and (name.endswith((".yaml", ".yml")) or "/" in name or Path(name).is_file()):
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"recipe file {name!r} does not exist")
        return _resolve(_parse(path.read_text(), str(path)), path.stem, method)
    shipped = _shipped(method)
    if not shipped:
        raise LookupError(f"no recipes for method {method!r}")
    if name is not None:
        if name not in shipped:
            raise ValueError(f"no recipe {name!r} for {method}; recipes: {list(shipped)} (or a .yaml file's path)")
        return shipped[name]
    key = dataset_key(dataset)
    for r in shipped.values():
        if key is not None and key in r.datasets:
            return r
    return next(r for r in shipped.values() if r.default)


#: normalised dataset name → config key (CoOp/Dassl class names, Tip-Adapter config names, common short names)
_ALIASES = {
    "imagenet": "imagenet",
    "imagenet1k": "imagenet",
    "caltech101": "caltech101",
    "caltech": "caltech101",
    "dtd": "dtd",
    "describabletextures": "dtd",
    "eurosat": "eurosat",
    "fgvc": "fgvc",
    "fgvcaircraft": "fgvc",
    "aircraft": "fgvc",
    "food101": "food101",
    "food": "food101",
    "oxfordflowers": "oxford_flowers",
    "oxfordflowers102": "oxford_flowers",
    "flowers102": "oxford_flowers",
    "flowers": "oxford_flowers",
    "oxfordpets": "oxford_pets",
    "pets": "oxford_pets",
    "stanfordcars": "stanford_cars",
    "cars": "stanford_cars",
    "sun397": "sun397",
    "ucf101": "ucf101",
}


def dataset_key(name: str | None) -> str | None:
    """The config key a dataset name selects, or None: the name is lower-cased, split at ``:``, ``/``, ``[``
    and whitespace, and each part stripped of non-alphanumerics is looked up among the aliases
    (``coop:oxford_pets:root=...``, ``OxfordPets`` and ``pets`` all select ``oxford_pets``). Never the model's
    name: only the dataset's."""
    if not name:
        return None
    for part in re.split(r"[:/\[\]\s]+", str(name).lower()):
        key = _ALIASES.get(re.sub(r"[^a-z0-9]", "", part))
        if key:
            return key
    return None
