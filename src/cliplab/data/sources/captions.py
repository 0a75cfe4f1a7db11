"""``captions:<path>`` (or a bare file): a .csv/.tsv/.jsonl caption file → ``CaptionDataset``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cliplab.data.folders import CaptionDataset
from cliplab.data.registry import register_data_source

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def load(
    target: str,
    split: str | None = None,
    *,
    image_key: str = "image",
    caption_key: str = "caption",
    check_files: bool = True,
) -> CaptionDataset:
    """Image–caption pairs from a caption file (see ``CaptionDataset``)."""
    return CaptionDataset(target, image_key=image_key, caption_key=caption_key, check_files=check_files)


def check(target: str, split: str | None = None, *, spec: str, **options: Any) -> None:
    """A file of a caption type (its rows are not read)."""
    path = Path(target)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {spec!r}: caption file not found: {target}")
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"dataset {spec!r}: unsupported caption file type {path.suffix!r} (use .csv, .tsv or .jsonl)")


# Claims every file: sources registered later are asked first, so they can take their own file types.
register_data_source(
    "captions",
    load,
    detect=os.path.isfile,
    check=check,
    description="captions:<path> or a .csv/.tsv/.jsonl caption file (image path + caption per row)",
)
