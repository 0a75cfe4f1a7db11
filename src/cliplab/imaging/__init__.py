"""Image reading and preprocessing: the leaf layer that ``cliplab.data`` and ``cliplab.models`` both use.

``decoding``: :func:`decode_image` (paths, bytes, file objects; errors name the image; a pixel limit checked
from the header before decoding). ``preprocess``: ``Preprocess`` / ``PatchPreprocess`` (the processors'
resize, crop and normalisation in NumPy) and ``load_image``.
"""

from __future__ import annotations

import importlib
from typing import Any

from cliplab.imaging.limits import DEFAULT_MAX_IMAGE_PIXELS

_LAZY = {
    "ImageTooLarge": "cliplab.imaging.decoding",
    "decode_image": "cliplab.imaging.decoding",
    "max_image_pixels": "cliplab.imaging.decoding",
}

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "ImageTooLarge", "decode_image", "max_image_pixels"]


def __getattr__(name: str) -> Any:  # lazy: the CLI's parsers import the limit without loading PIL
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cliplab.imaging' has no attribute {name!r}")
