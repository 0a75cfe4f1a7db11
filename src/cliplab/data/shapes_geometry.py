"""The shapes world's objects: the shape and colour names, the palette, and each shape's unit polygon.

A leaf of ``cliplab.data.shapes_world`` (which re-exports the public names), so the modules that draw on the
same geometry — the segmentation maps (``shapes_segmentation``) and the defects world (``shapes_defects``) — need
not import the world itself.
"""

from __future__ import annotations

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
HELD_OUT_SHAPES: tuple[str, ...] = ("pentagon", "heart", "moon")
HELD_OUT_COLOURS: tuple[str, ...] = ("pink", "cyan")
_ALL_SHAPES = SHAPES + HELD_OUT_SHAPES
_ALL_COLOURS = COLOURS + HELD_OUT_COLOURS
# red, green, blue, yellow, purple, orange; held out: pink, cyan
_RGB = np.array([(220, 40, 40), (40, 180, 60), (50, 90, 230), (235, 215, 40), (150, 60, 200), (245, 140, 30)]
                + [(255, 140, 200), (40, 215, 225)], dtype=np.int16)  # fmt: skip


# ---------------------------------------------------------------------------------------------- geometry
def _ring(k: int, radius: float = 1.0, start: float = -90.0) -> np.ndarray:
    a = np.deg2rad(start + 360.0 * np.arange(k) / k)
    return radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def _star() -> np.ndarray:
    pts = _ring(10)
    pts[1::2] *= 0.45
    return pts


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    return np.stack([16 * np.sin(t) ** 3, np.cos(4 * t) + 2 * np.cos(3 * t) + 5 * np.cos(2 * t) - 13 * np.cos(t)], 1)


def _moon(d: float = 0.7) -> np.ndarray:
    """A crescent: the unit disk minus the unit disk shifted right by ``d``."""
    t0 = np.arctan2(np.sqrt(1 - d * d / 4), d / 2)
    outer = np.linspace(t0, 2 * np.pi - t0, 28)
    inner = np.linspace(np.pi + t0, np.pi - t0, 20)
    return np.concatenate(
        [np.stack([np.cos(outer), np.sin(outer)], 1), np.stack([d + np.cos(inner), np.sin(inner)], 1)]
    )


def _normalise(pts: np.ndarray) -> np.ndarray:
    """Centre on the bounding box and scale the larger half-extent to 1."""
    lo, hi = pts.min(0), pts.max(0)
    return (pts - (lo + hi) / 2) / ((hi - lo).max() / 2)


_W = 0.34  # half-width of the cross's arms
_POLYGONS: dict[str, np.ndarray] = {
    "circle": _ring(40),
    "square": np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float),
    "triangle": _ring(3),
    "star": _star(),
    "cross": np.array(
        [(-_W, -1), (_W, -1), (_W, -_W), (1, -_W), (1, _W), (_W, _W), (_W, 1), (-_W, 1), (-_W, _W), (-1, _W)]
        + [(-1, -_W), (-_W, -_W)],
        dtype=float,
    ),
    "diamond": np.array([(0, -1), (0.7, 0), (0, 1), (-0.7, 0)], dtype=float),
    "pentagon": _ring(5),
    "heart": _normalise(_heart()),
    "moon": _normalise(_moon()),
}
# per-shape scale so that shapes of one size class look about equally large
_SHAPE_SCALE = {"circle": 0.95, "square": 0.82, "triangle": 1.15, "star": 1.15, "cross": 1.0, "diamond": 1.05}
_SHAPE_SCALE.update({"pentagon": 1.0, "heart": 1.0, "moon": 1.0})
_UNIT = [_POLYGONS[s] * _SHAPE_SCALE[s] for s in _ALL_SHAPES]
