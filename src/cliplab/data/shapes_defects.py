"""Defects in the built-in world: one coloured shape per image, some with a defect and its exact mask.

The offline stand-in for MVTec AD: ``ShapesDefects(split, n, seed, ...)`` (spec ``shapes-defects:...``) draws
one object of the shapes world (``cliplab.data.shapes_world``'s shapes and colours) per image, centred, a
little jittered in place, size, angle, colour and background; its ``category`` is the shape. ``split=train``
is normal objects only (the few-shot references), ``split=test`` a mix: each image is anomalous with
probability ``anomaly_rate``, its defect one of ``DEFECT_TYPES``:

- ``scratch``: a thin light line across the object's surface;
- ``missing``: a wedge cut out of the object (from 0.3 of its radius outwards), background showing through;
- ``spot``: one to three small blobs of another of the world's colours on the object;
- ``stain``: a patch of the object's surface darkened towards brown (a blend of 55%).

Masks are exact: the object is painted on a canvas twice the output size with and without the defect; the
defect's pixels are those the defect changed on that canvas, and an output pixel is defective when at least
2 of its 4 canvas pixels are (the canvas is box-filtered 2×2 into the image, as the shapes world does). A
defect whose mask would be smaller than ``max(4, 0.0015·S²)`` pixels is redrawn (deterministically).

``segmentation(i, by="shape"|"colour")``: the per-pixel class map of the object (0 background, ``1 + index``
in ``SHAPES`` / ``COLOURS``), without the missing wedge. Image ``i`` depends only on (split, seed, i,
options), drawn from ``np.random.default_rng([seed, split, i, 7411])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cliplab.data.base import Dataset, stable_hash
from cliplab.data.shapes_geometry import _RGB, _UNIT, COLOURS, SHAPES
from cliplab.data.shapes_paint import polygon_mask

__all__ = ["DEFECTS_VERSION", "DEFECT_TYPES", "SPLITS", "ShapesDefects"]

#: bump whenever the rendering of defects changes (keys the feature cache)
DEFECTS_VERSION = 1
DEFECT_TYPES: tuple[str, ...] = ("scratch", "missing", "spot", "stain")
SPLITS = ("train", "test")
_STAIN = np.array([90, 55, 25], dtype=np.float64)
_SCRATCH = np.array([225, 225, 215], dtype=np.float64)


def _defect_list(defects: Any) -> tuple[str, ...]:
    """``None`` → every type; ``"scratch+stain"`` (or a sequence) → those, checked."""
    if defects is None:
        return DEFECT_TYPES
    names = [d.strip() for d in defects.split("+")] if isinstance(defects, str) else [str(d) for d in defects]
    unknown = [d for d in names if d not in DEFECT_TYPES]
    if unknown or not names:
        raise ValueError(f"unknown defect type(s) {unknown or names!r}; accepted: {'+'.join(DEFECT_TYPES)}")
    return tuple(dict.fromkeys(names))


class ShapesDefects(Dataset):
    """Normal and defective shapes with exact masks (see the module docstring)."""

    def __init__(
        self,
        split: str = "test",
        n: int = 200,
        seed: int = 0,
        *,
        category: str | None = None,
        anomaly_rate: float = 0.5,
        image_size: int = 64,
        defects: Any = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
        for name, value in (("n", n), ("seed", seed), ("image_size", image_size)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if n <= 0 or seed < 0:
            raise ValueError(f"n must be positive and seed non-negative, got n={n}, seed={seed}")
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels (defects need room), got {image_size}")
        if category is not None and category not in SHAPES:
            raise ValueError(f"unknown category {category!r}; the shapes are {', '.join(SHAPES)}")
        if isinstance(anomaly_rate, bool) or not isinstance(anomaly_rate, int | float) or not 0 < anomaly_rate <= 1:
            raise ValueError(f"anomaly_rate must be a number in (0, 1], got {anomaly_rate!r}")
        self.split, self.n, self.seed, self.image_size = split, int(n), int(seed), int(image_size)
        self.category_option, self.anomaly_rate, self.defects = category, float(anomaly_rate), _defect_list(defects)
        self._split_id = SPLITS.index(split)
        self.classnames = ["normal", "anomalous"]
        self.name = f"shapes-defects-{category or 'all'}-{split}"
        self._params = [self._draw(i) for i in range(self.n)]
        self._labels = np.asarray([p["label"] for p in self._params], dtype=np.int64)
        self._last: tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    # ------------------------------------------------------------------------------------- attributes
    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._split_id, i, 7411])

    def _draw(self, i: int) -> dict[str, Any]:
        rng = self._rng(i)
        shape = int(rng.integers(len(SHAPES)))  # drawn always: the rest of the draws do not depend on category
        shape = SHAPES.index(self.category_option) if self.category_option else shape
        colour = int(rng.integers(len(COLOURS)))
        anomalous = self.split == "test" and rng.random() < self.anomaly_rate
        defect = self.defects[int(rng.integers(len(self.defects)))]
        return {
            "shape": shape,
            "colour": colour,
            "label": int(anomalous),
            "defect": defect if anomalous else "good",
            "xy": 0.5 + rng.uniform(-0.04, 0.04, 2),
            "radius": 0.3 * rng.uniform(0.92, 1.08),
            "angle": np.deg2rad(rng.uniform(-10, 10)),
            "rgb": np.clip(_RGB[colour] + rng.integers(-12, 13, 3), 0, 255),
            "bg": np.clip(rng.integers(10, 46) + rng.integers(-8, 9, 3), 0, 255),
            "defect_seed": int(rng.integers(2**31)),
        }

    def defect_type(self, index: int) -> str:
        """``"good"`` for a normal image, else one of ``DEFECT_TYPES``."""
        return str(self._params[self._position(index)]["defect"])

    def category(self, index: int) -> str:
        """The object's shape."""
        return SHAPES[self._params[self._position(index)]["shape"]]

    @property
    def defect_types(self) -> list[str]:
        return [str(p["defect"]) for p in self._params]

    @property
    def categories(self) -> list[str]:
        return [SHAPES[p["shape"]] for p in self._params]

    # ------------------------------------------------------------------------------------- rendering
    def _object(self, p: dict[str, Any], C: int) -> np.ndarray:
        c, s = np.cos(p["angle"]), np.sin(p["angle"])
        pts = _UNIT[p["shape"]] @ np.array([[c, s], [-s, c]]) * (p["radius"] * C) + p["xy"] * C
        return polygon_mask(pts, C)

    def _defect(self, p: dict[str, Any], obj: np.ndarray, canvas: np.ndarray, rng: np.random.Generator) -> None:
        """Paint ``p``'s defect onto ``canvas`` (in place)."""
        C = canvas.shape[0]
        r = p["radius"] * C
        inside = np.argwhere(obj)
        cy, cx = inside[int(rng.integers(len(inside)))]
        kind = p["defect"]
        if kind == "scratch":
            t = rng.uniform(0, np.pi)
            d = 2 * r * np.array([np.cos(t), np.sin(t)])
            img = Image.new("L", (C, C), 0)
            ImageDraw.Draw(img).line(
                [cx - d[0], cy - d[1], cx + d[0], cy + d[1]], fill=255, width=max(2, round(0.08 * r))
            )
            region = obj & (np.asarray(img) > 127)
            canvas[region] = np.clip(0.25 * canvas[region] + 0.75 * _SCRATCH, 0, 255).astype(np.uint8)
        elif kind == "missing":
            oy, ox = p["xy"][1] * C, p["xy"][0] * C
            yy, xx = np.mgrid[0:C, 0:C]
            theta = np.arctan2(yy - oy, xx - ox)
            t0, width = rng.uniform(-np.pi, np.pi), np.deg2rad(rng.uniform(40, 70))
            in_wedge = np.abs((theta - t0 + np.pi) % (2 * np.pi) - np.pi) < width / 2
            region = obj & in_wedge & (np.hypot(yy - oy, xx - ox) > 0.3 * r)
            canvas[region] = p["bg"].astype(np.uint8)
        elif kind == "spot":
            others = [k for k in range(len(COLOURS)) if k != p["colour"]]
            colour = _RGB[others[int(rng.integers(len(others)))]]
            yy, xx = np.mgrid[0:C, 0:C]
            region = np.zeros_like(obj)
            for _ in range(int(rng.integers(1, 4))):
                y, x = inside[int(rng.integers(len(inside)))]
                rad = rng.uniform(0.1, 0.16) * r
                region |= (yy - y) ** 2 + (xx - x) ** 2 <= rad * rad
            region &= obj
            canvas[region] = colour.astype(np.uint8)
        else:  # stain: a few overlapping ellipses around one point, darkened towards brown
            yy, xx = np.mgrid[0:C, 0:C]
            region = np.zeros_like(obj)
            for _ in range(3):
                y, x = (cy, cx) + rng.normal(0, 0.12 * r, 2)
                a, b = rng.uniform(0.18, 0.32, 2) * r
                region |= ((yy - y) / a) ** 2 + ((xx - x) / b) ** 2 <= 1
            region &= obj
            canvas[region] = np.clip(0.45 * canvas[region] + 0.55 * _STAIN, 0, 255).astype(np.uint8)

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image [S,S,3] uint8, defect mask [S,S] bool, object mask [S,S] bool)`` of image ``index``."""
        i = self._position(index)
        last = self._last  # image(i) then mask(i) render once (one assignment: safe across loader threads)
        if last is not None and last[0] == i:
            return last[1]
        out = self._paint(i)
        self._last = (i, out)
        return out

    def _paint(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, S = self._params[i], self.image_size
        C = 2 * S
        obj = self._object(p, C)
        normal = np.empty((C, C, 3), dtype=np.uint8)
        normal[:] = p["bg"].astype(np.uint8)
        normal[obj] = p["rgb"].astype(np.uint8)
        canvas, changed = normal, np.zeros((C, C), dtype=bool)
        if p["label"]:
            rng = np.random.default_rng(p["defect_seed"])
            min_area = max(4, round(0.0015 * S * S))
            for _ in range(16):  # redraw a defect too small to see (a wedge between a star's points)
                canvas = normal.copy()
                self._defect(p, obj, canvas, rng)
                changed = (canvas != normal).any(axis=2)
                if _coverage(changed, S).sum() >= min_area:
                    break
        arr = np.asarray(Image.fromarray(canvas, "RGB").reduce(2), dtype=np.int16)
        noise = np.random.default_rng([self.seed, self._split_id, i, 913]).normal(0, 3.0, arr.shape)
        image = np.clip(arr + np.rint(noise), 0, 255).astype(np.uint8)
        mask = _coverage(changed, S)
        if p["defect"] != "missing":
            return image, mask, _coverage(obj, S)
        return image, mask, _coverage(obj & ~changed, S) & ~mask  # a pixel is cut out or object, never both

    # ------------------------------------------------------------------------------------- protocol
    def __len__(self) -> int:
        return self.n

    def render(self, index: int) -> np.ndarray:
        """Image ``index`` as an ``[S, S, 3]`` uint8 array."""
        return self._render(index)[0].copy()

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.render(index), "RGB")

    def mask(self, index: int) -> np.ndarray:
        """Bool ``[S, S]``: True on the defect (all False for a normal image)."""
        return self._render(index)[1].copy()

    def masks(self, indices: Sequence[int]) -> list[np.ndarray]:
        return [self.mask(int(i)) for i in indices]

    def segmentation(self, index: int, by: str = "shape") -> np.ndarray:
        """int64 ``[S, S]``: 0 background, ``1 + SHAPES.index`` (``by="shape"``) or ``1 + COLOURS.index``."""
        if by not in ("shape", "colour"):
            raise ValueError(f"segmentation by 'shape' or 'colour', got {by!r}")
        p = self._params[self._position(index)]
        seg = np.zeros((self.image_size, self.image_size), dtype=np.int64)
        seg[self._render(index)[2]] = 1 + p[by]
        return seg

    @property
    def labels(self) -> np.ndarray:
        """int64 ``[N]``: 0 normal, 1 anomalous."""
        return self._labels

    def item_meta(self, index: int) -> dict[str, Any]:
        """``{"index", "label", "defect_type", "category"}``."""
        meta = super().item_meta(index)
        meta.update(defect_type=self.defect_type(meta["index"]), category=self.category(meta["index"]))
        return meta

    def options(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "n": self.n,
            "seed": self.seed,
            "category": self.category_option,
            "anomaly_rate": self.anomaly_rate,
            "image_size": self.image_size,
            "defects": list(self.defects),
        }

    def fingerprint(self) -> str:
        """Stable hash of the options and ``DEFECTS_VERSION`` (no file is involved)."""
        return stable_hash({"dataset": "shapes-defects", "render": DEFECTS_VERSION, **self.options()})


def _coverage(canvas_mask: np.ndarray, S: int) -> np.ndarray:
    """Output pixels with at least 2 of their 2×2 canvas pixels set."""
    return canvas_mask.reshape(S, 2, S, 2).sum(axis=(1, 3)) >= 2
