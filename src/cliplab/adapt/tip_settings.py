"""Tip-Adapter's per-dataset settings, as the official configs (gaopengcuhk/Tip-Adapter, ``configs/*.yaml``),
read from the recipe files ``cliplab/recipes/tip_adapter{,_f}/<dataset>.yaml`` (``cliplab.recipes``).

For each of the 11 CoOp datasets: the search range ``[beta, alpha]`` (``search_scale``; searched over 200 × 20
steps from 0.1, ``search_step``), Tip-Adapter-F's initial ``alpha``/``beta`` (``init_alpha``, ``init_beta``)
and its training epochs (``train_epoch``). Every config also has ``augment_epoch: 10`` (the cache passes),
``lr: 0.001`` and batch 256.

``tip_settings(name)`` selects a row by the *dataset's* name (never the model's), with ``dataset_key``
(``coop:oxford_pets:root=...``, ``OxfordPets`` and ``pets`` all select ``oxford_pets``). Any other
data gets ``DEFAULT``: ImageNet's row (the widest-used setting; range [7, 3], init alpha 1.17, beta 1, 20
epochs). Callers override any field (``cliplab adapt --settings-for NAME``; ``run_few_shot(dataset=...,
method_params=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cliplab.recipes import dataset_key, load_recipe, recipe_names

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


def _from_recipe(key: str) -> TipSettings:
    r = load_recipe("tip_adapter_f", key)
    beta, alpha = r.grid_spec["beta"], r.grid_spec["alpha"]
    return TipSettings(
        search_scale=(beta["search_scale"], alpha["search_scale"]),
        init_alpha=r.params["alpha"],
        init_beta=r.params.get("beta", 1.0),
        epochs=r.params.get("epochs", 20),
        search_step=(int(beta["search_step"]), int(alpha["search_step"])),
    )


#: the official configs (RN50), keyed by the config file's dataset name: read from the recipe files
#: ``cliplab/recipes/tip_adapter_f/<key>.yaml`` (the one place these numbers live)
TIP_SETTINGS: dict[str, TipSettings] = {key: _from_recipe(key) for key in recipe_names("tip_adapter_f")}
#: data that is none of the 11: ImageNet's row
DEFAULT = TIP_SETTINGS["imagenet"]


def tip_settings(name: str | None, **overrides: Any) -> TipSettings:
    """The settings row for a dataset name (``DEFAULT`` when it is none of the 11), with ``overrides`` applied."""
    key = dataset_key(name)
    row = TIP_SETTINGS[key] if key else DEFAULT
    return replace(row, **overrides) if overrides else row
