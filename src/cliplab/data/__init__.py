"""Datasets: the built-in shapes world, image folders, caption files, few-shot sampling; specs and loading."""

from __future__ import annotations

import importlib
from typing import Any

from cliplab.data.base import Dataset, Subset, Wrapper
from cliplab.data.folders import CaptionDataset, ImageFiles, ImageFolder
from cliplab.data.loader import ImageList, Loader, make_loader
from cliplab.data.registry import DATA_FORMS, DataSource, check_data_spec, load_dataset, register_data_source
from cliplab.data.sampling import k_shot, k_shot_indices
from cliplab.data.schemes import DATA_SOURCES, unregister_data_source
from cliplab.data.shapes_world import shapes
from cliplab.data.spec import DataSpec, is_builtin_world, parse_options

_LAZY = {
    "ShapesDataset": "shapes_world",
    "SHAPES": "shapes_world",
    "COLOURS": "shapes_world",
    "HELD_OUT_SHAPES": "shapes_world",
    "HELD_OUT_COLOURS": "shapes_world",
    "VOCABULARY": "shapes_world",
    "CORRUPTIONS": "corruptions",
    "corrupt": "corruptions",
    "Corrupted": "shifted",
    "corrupt_image": "shifted",
}

__all__ = [
    "DATA_FORMS",
    "DATA_SOURCES",
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
    "unregister_data_source",
    "shapes",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"cliplab.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cliplab.data' has no attribute {name!r}")
