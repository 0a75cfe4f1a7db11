"""Datasets: the built-in shapes world, image folders, caption files, few-shot sampling."""

from __future__ import annotations

import importlib
from typing import Any

from cliplab.data.base import Dataset, Subset
from cliplab.data.folders import CaptionDataset, ImageFiles, ImageFolder
from cliplab.data.registry import DATA_FORMS, load_dataset
from cliplab.data.sampling import k_shot, k_shot_indices

# Imported eagerly so that ``cliplab.data.shapes`` is the function, not the submodule of the same name
# (importing a submodule binds its name on the package; this re-binds it to the function once).
from cliplab.data.shapes import shapes  # noqa: E402  isort: skip

_LAZY = {
    "ShapesDataset": "shapes",
    "SHAPES": "shapes",
    "COLOURS": "shapes",
    "HELD_OUT_SHAPES": "shapes",
    "HELD_OUT_COLOURS": "shapes",
    "VOCABULARY": "shapes",
    "CORRUPTIONS": "corruptions",
    "corrupt": "corruptions",
    "Corrupted": "shifted",
}

__all__ = [
    "DATA_FORMS",
    "CaptionDataset",
    "Dataset",
    "ImageFiles",
    "ImageFolder",
    "Subset",
    "k_shot",
    "k_shot_indices",
    "load_dataset",
    "shapes",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"cliplab.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cliplab.data' has no attribute {name!r}")
