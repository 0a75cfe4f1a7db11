"""Tip-Adapter's per-dataset settings, as the official configs (gaopengcuhk/Tip-Adapter, ``configs/*.yaml``).

For each of the 11 CoOp datasets: the search range ``[beta, alpha]`` (``search_scale``; searched over 200 × 20
steps from 0.1, ``search_step``), Tip-Adapter-F's initial ``alpha``/``beta`` (``init_alpha``, ``init_beta``)
and its training epochs (``train_epoch``). Every config also has ``augment_epoch: 10`` (the cache passes),
``lr: 0.001`` and batch 256.

``tip_settings(name)`` selects a row by the *dataset's* name (never the model's): the name is lower-cased,
split at ``:``, ``/``, ``[`` and whitespace, and each part stripped of non-alphanumerics is looked up among the
aliases below (``coop:oxford_pets:root=...``, ``OxfordPets`` and ``pets`` all select ``oxford_pets``). Any other
data gets ``DEFAULT``: ImageNet's row (the widest-used setting; range [7, 3], init alpha 1.17, beta 1, 20
epochs). Callers override any field (``cliplab adapt --settings-for NAME``; ``run_few_shot(dataset=...,
method_params=...)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["DEFAULT", "TIP_SETTINGS", "TipSettings", "dataset_key", "tip_settings"]


@dataclass(frozen=True)
class TipSettings:
    """One config row: ``search_scale = (beta, alpha)``, ``search_step = (200, 20)``, init alpha/beta, epochs."""

    search_scale: tuple[float, float]
    init_alpha: float
    init_beta: float = 1.0
    epochs: int = 20
    search_step: tuple[int, int] = (200, 20)
    cache_passes: int = 10

    def grid(self) -> dict[str, list[float]]:
        """The official search lists: ``beta_i = 0.1 + i·(scale − 0.1)/steps`` for ``i < steps``, alpha alike."""
        from cliplab.adapt.tip import search_grid

        return {
            "beta": search_grid(self.search_scale[0], self.search_step[0]),
            "alpha": search_grid(self.search_scale[1], self.search_step[1]),
        }

    def params(self, method: str) -> dict[str, Any]:
        """Constructor parameters for ``tip_adapter`` / ``tip_adapter_f`` (training-time alpha/beta, epochs)."""
        if method == "tip_adapter_f":
            return {"alpha": self.init_alpha, "beta": self.init_beta, "epochs": self.epochs}
        return {}


#: the official configs (RN50), keyed by the config file's dataset name
TIP_SETTINGS: dict[str, TipSettings] = {
    "imagenet": TipSettings((7, 3), 1.17),
    "caltech101": TipSettings((12, 5), 3),
    "dtd": TipSettings((13, 13), 2),
    "eurosat": TipSettings((12, 10), 2, epochs=100),
    "fgvc": TipSettings((30, 30), 5),
    "food101": TipSettings((10, 10), 1.17),
    "oxford_flowers": TipSettings((50, 50), 10),
    "oxford_pets": TipSettings((7, 3), 1.17),
    "stanford_cars": TipSettings((20, 10), 3),
    "sun397": TipSettings((12, 10), 1.17),
    "ucf101": TipSettings((7, 3), 3),
}
#: data that is none of the 11: ImageNet's row
DEFAULT = TIP_SETTINGS["imagenet"]

#: normalised name → config key (CoOp/Dassl class names, Tip-Adapter config names, common short names)
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
    """The config key a dataset name selects (see the module docstring), or None."""
    if not name:
        return None
    for part in re.split(r"[:/\[\]\s]+", str(name).lower()):
        key = _ALIASES.get(re.sub(r"[^a-z0-9]", "", part))
        if key:
            return key
    return None


def tip_settings(name: str | None, **overrides: Any) -> TipSettings:
    """The settings row for a dataset name (``DEFAULT`` when it is none of the 11), with ``overrides`` applied."""
    key = dataset_key(name)
    row = TIP_SETTINGS[key] if key else DEFAULT
    return replace(row, **overrides) if overrides else row
