"""How the shapes world paints an object: filled, hollow or sketched masks, and patterned fills.

Masks are boolean ``[C, C]`` arrays on the renderer's double-size canvas (``cliplab.data.shapes_world``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["pattern_mask", "polygon_mask", "shape_mask"]


def polygon_mask(pts: np.ndarray, C: int, *, width: int = 0) -> np.ndarray:
    """Boolean ``[C, C]`` mask of a filled polygon (``width=0``) or of its closed outline ``width`` px wide."""
    img = Image.new("L", (C, C), 0)
    draw = ImageDraw.Draw(img)
    flat = pts.ravel().tolist()
    if width:
        draw.line([*flat, *flat[:2]], fill=255, width=width, joint="curve")
    else:
        draw.polygon(flat, fill=255)
    return np.asarray(img) > 127


def shape_mask(pts: np.ndarray, C: int, style: str, radius: float, rng: np.random.Generator | None) -> np.ndarray:
    """Where an object's paint goes: the filled polygon, a hollow contour, or two wobbly pencil strokes."""
    if style == "solid":
        return polygon_mask(pts, C)
    if style == "outline":
        return polygon_mask(pts, C, width=max(2, round(0.22 * radius)))
    assert rng is not None
    mask = np.zeros((C, C), dtype=bool)
    for _ in range(2):  # each stroke: every vertex displaced, the whole contour slightly shifted
        wobble = rng.normal(0, 0.06 * radius, pts.shape) + rng.normal(0, 0.04 * radius, (1, 2))
        mask |= polygon_mask(pts + wobble, C, width=max(2, round(0.1 * radius)))
    return mask


def pattern_mask(name: str, angle: int, phase: np.ndarray, C: int, S: int) -> np.ndarray:
    """Where a patterned fill keeps paint: stripes, a grid of dots or a checkerboard, in canvas pixels.

    Periods are in output pixels (``S``): stripes and checks every 4 px, dots every 5 px; the pattern's
    orientation is a multiple of 45° and its phase random, so no single pixel position identifies it.
    """
    scale = C / S
    y, x = np.mgrid[0:C, 0:C].astype(np.float64) / scale
    t = np.deg2rad(45.0 * angle)
    u = x * np.cos(t) + y * np.sin(t)
    v = -x * np.sin(t) + y * np.cos(t)
    if name == "striped":
        return ((u / 4.0 + phase[0]) % 1.0) < 0.5
    if name == "checkered":
        return (np.floor(u / 4.0 + phase[0]) + np.floor(v / 4.0 + phase[1])) % 2 == 0
    if name == "dotted":
        du = ((u / 5.0 + phase[0]) % 1.0) - 0.5
        dv = ((v / 5.0 + phase[1]) % 1.0) - 0.5
        return du * du + dv * dv < 0.3**2
    raise ValueError(f"unknown pattern {name!r}")
