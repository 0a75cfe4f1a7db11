"""``load_dataset(spec)``: datasets by spec string, as the CLI takes them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cliplab.data.base import Dataset

DATA_FORMS = (
    "shapes or builtin:shapes[:key=value,...] (the built-in world, e.g. shapes:task=colour,n=2000)",
    "a directory with one sub-folder of images per class (image folder)",
    "a directory of images without class sub-folders (unlabelled, e.g. OOD images)",
    "a .csv/.tsv/.jsonl caption file (image path + caption per row)",
)


def _parse_value(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(v.lower(), v)


def parse_options(text: str) -> dict[str, Any]:
    """``"task=colour,n=200"`` → ``{"task": "colour", "n": 200}``."""
    opts: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"bad dataset option {part!r}: expected key=value")
        opts[key.strip()] = _parse_value(value.strip())
    return opts


def load_dataset(spec: str | os.PathLike | Dataset, *, split: str = "test", **options: Any) -> Dataset:
    """A dataset from a spec (see ``DATA_FORMS``); ``options`` override spec options for ``shapes``."""
    if isinstance(spec, Dataset):
        return spec
    s = str(spec)
    name, _, rest = s.removeprefix("builtin:").partition(":")
    if name == "shapes":
        from cliplab.data.shapes import shapes

        opts = {"split": split, **parse_options(rest), **options}
        return shapes(**opts)
    path = Path(s).expanduser()
    if path.is_dir():
        from cliplab.data.folders import ImageFiles, ImageFolder

        has_classes = any(d.is_dir() and not d.name.startswith(".") for d in path.iterdir())
        if not has_classes and not options:
            return ImageFiles(path)  # images directly in the folder: an unlabelled set (e.g. OOD images)
        return ImageFolder(path, **options)
    if path.is_file():
        from cliplab.data.folders import CaptionDataset

        return CaptionDataset(path, **options)
    forms = "\n  - ".join(DATA_FORMS)
    raise ValueError(f"unknown dataset spec {s!r}: no such file or directory. Accepted forms:\n  - {forms}")
