"""Per-pixel class maps of the shapes world (``ShapesDataset.segmentation``), for open-vocabulary segmentation.

Each object's region is its filled polygon — the extent an annotator would outline, whatever its style
(outline, sketch) or patterned fill — rasterised on the renderer's double-size canvas and reduced as the image
is: an output pixel belongs to an object when at least 2 of its 4 canvas pixels do; a later-drawn object
covers an earlier one, as in the image. Classes: 0 background, then ``1 + index`` into
``segmentation_classes(by)`` minus its first entry (``SHAPES`` then ``HELD_OUT_SHAPES``, or ``COLOURS`` then
``HELD_OUT_COLOURS``), so in-distribution ids do not depend on what is held out. Corruptions that move pixels
(none of cliplab's do) would make the map approximate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cliplab.data.shapes_geometry import _ALL_COLOURS, _ALL_SHAPES, _UNIT
from cliplab.data.shapes_paint import polygon_mask

__all__ = ["BACKGROUND", "segmentation_classes", "shapes_class_map"]

BACKGROUND = "background"
_BY = {"shape": ("shape", _ALL_SHAPES), "colour": ("colour", _ALL_COLOURS), "color": ("colour", _ALL_COLOURS)}


def segmentation_classes(by: str = "shape") -> list[str]:
    """``["background", *shapes]`` or ``["background", *colours]`` (held-out ones last)."""
    if by not in _BY:
        raise ValueError(f"segmentation by 'shape' or 'colour', got {by!r}")
    return [BACKGROUND, *_BY[by][1]]


def shapes_class_map(dataset: Any, index: int, by: str = "shape") -> np.ndarray:
    """int64 ``[S, S]`` class map of image ``index`` of ``dataset`` (a ``ShapesDataset``; see the module docstring)."""
    segmentation_classes(by)  # validates ``by``
    key = _BY[by][0]
    i = dataset._index(index)
    a, S = dataset._a, dataset.image_size
    C = 2 * S
    seg = np.zeros((S, S), dtype=np.int64)
    for k in range(int(a["n_objects"][i])):
        c, s = np.cos(a["angle"][i, k]), np.sin(a["angle"][i, k])
        pts = _UNIT[a["shape"][i, k]] @ np.array([[c, s], [-s, c]]) * (a["radius"][i, k] * C) + a["xy"][i, k] * C
        region = polygon_mask(pts, C).reshape(S, 2, S, 2).sum(axis=(1, 3)) >= 2
        seg[region] = 1 + int(a[key][i, k])
    return seg
