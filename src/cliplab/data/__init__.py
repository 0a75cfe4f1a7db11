"""Datasets: the built-in shapes world, image folders, caption files, few-shot sampling; specs and loading."""

from __future__ import annotations

import importlib
from typing import Any

from cliplab.data.base import Dataset, Subset, Wrapper
from cliplab.data.folders import CaptionDataset, ImageFiles, ImageFolder
from cliplab.data.loader import ImageList, Loader, make_loader
from cliplab.data.registry import DATA_FORMS, DataSource, check_data_spec, load_dataset, register_data_source
from cliplab.data.sampling import k_shot, k_shot_indices
from cliplab.data.spec import DataSpec, is_builtin_world, parse_options

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
    "corrupt_image": "shifted",
}

__all__ = [
    "DATA_FORMS",
    "CaptionDataset",
    "DataSource",
    "DataSpec",
    "Dataset",
    "ImageFiles",
    "ImageFolder",
    "ImageList",
    "Loader",
    "Subset",
    "Wrapper",
    "check_data_spec",
    "is_builtin_world",
    "k_shot",
    "k_shot_indices",
    "load_dataset",
    "make_loader",
    "parse_options",
    "register_data_source",
    "shapes",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"cliplab.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cliplab.data' has no attribute {name!r}")
