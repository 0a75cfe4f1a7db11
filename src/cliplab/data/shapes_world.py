"""The built-in, procedurally generated image–caption world: coloured shapes on a dark background.

``shapes(split, n, seed, **options)`` returns a ``ShapesDataset``: one or two objects per image, each
with a shape, a colour, a size (small/large) and a position; several captions per image from a small,
fixed vocabulary (``VOCABULARY``); class labels for the shape, colour or shape+colour task; held-out
shapes/colours (OOD), held-out shape–colour combinations (compositional generalisation) and
corruptions with severities 1–5 (distribution shift).

Two axes the captions never mention, so that zero-shot is weak and supervision helps (the regime of
few-shot adaptation papers):

- **patterns** (``task="pattern"``, or ``patterns=True`` on any task): each object is filled plain,
  striped, dotted or checkered; the captions stay those of the plain world, so a model trained on
  them has no words for the classes.
- **styles** (``style="outline"`` or ``"sketch"``): a rendering shift — hollow contours on the usual
  dark background, or wobbly hand-drawn strokes on light paper — for robustness, OOD and estimation.

Everything is deterministic: attributes are drawn in blocks of ``_BLOCK`` images, each block from
``np.random.default_rng([seed, split, block])``, so image ``i`` depends only on (split, seed, i,
options) — not on ``n`` nor on the order images are requested in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from cliplab.data.base import Dataset, stable_hash
from cliplab.data.corruptions import check_corruption
from cliplab.data.shapes_geometry import (
    _ALL_COLOURS,
    _ALL_SHAPES,
    _RGB,
    _UNIT,
    COLOURS,
    HELD_OUT_COLOURS,
    HELD_OUT_SHAPES,
    SHAPES,
)
from cliplab.data.shapes_paint import pattern_mask, shape_mask
from cliplab.data.shifted import corrupt_image

__all__ = ["COLOURS", "HELD_OUT_COLOURS", "HELD_OUT_COMBOS", "HELD_OUT_SHAPES", "PATTERNS", "POSITIONS",
           "RENDER_VERSION", "SHAPES", "SIZES", "STYLES", "TEMPLATES", "VOCABULARY", "ShapesDataset",
           "shapes"]  # fmt: skip

#: bump whenever rendering or captions change (keys feature and model caches)
RENDER_VERSION = 2

PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")
STYLES: tuple[str, ...] = ("solid", "outline", "sketch")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
#: (shape, colour) pairs never shown in the training split by default
HELD_OUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("circle", "green"),
    ("square", "purple"),
    ("triangle", "orange"),
    ("star", "blue"),
)

TASKS = ("shape", "colour", "shape_colour", "pattern")
SPLITS = ("train", "val", "test")
_TASK_ALIASES = {"color": "colour", "shape_color": "shape_colour"}
_HELD_OUT_ALIASES = {"colors": "colours"}
#: zero-shot templates per task; they share the captions' phrasing
TEMPLATES: dict[str, list[str]] = {
    "shape": ["a {}.", "a drawing of a {}.", "a photo of a {}."],
    "colour": ["a {} shape.", "a {} object.", "something {}."],
    "shape_colour": ["a {}.", "a drawing of a {}."],
    "pattern": ["a {} shape.", "a {} object.", "something {}."],
}

_CLASSNAMES = {"shape": SHAPES, "colour": COLOURS, "shape_colour": tuple(f"{c} {s}" for c in COLOURS for s in SHAPES),
               "pattern": PATTERNS}  # fmt: skip
_PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
_PHRASE["center"] = "in the center"
_RELATION = {"left": "to the left of", "right": "to the right of", "top": "above", "bottom": "below"}
_ATTRIBUTE_NAMES = {"shape": _ALL_SHAPES, "colour": _ALL_COLOURS, "size": SIZES, "position": POSITIONS,
                    "pattern": PATTERNS}  # fmt: skip
_OPPOSITE = np.array([1, 0, 3, 2])  # position index of the second object given the first's

# Caption forms. One object: a detailed, a medium and a partial (shape-only or colour-only) caption.
_DETAILED_1 = ("a {z} {c} {s} {p}.", "a {c} {s} {p}.", "a {z} {c} {s}.")
_MEDIUM_1 = ("a {c} {s}.", "a drawing of a {c} {s}.", "a photo of a {c} {s}.")
_PARTIAL_1 = ("a {s}.", "a drawing of a {s}.", "a photo of a {s}.", "a {c} shape.", "a {c} object.", "something {c}.")
_DETAILED_2 = ("a {c} {s} {r} a {c2} {s2}.", "a {z} {c} {s} {r} a {c2} {s2}.")
_MEDIUM_2 = ("a {c} {s} and a {c2} {s2}.", "a drawing of a {c} {s} and a {c2} {s2}.",
             "a photo of a {c} {s} and a {c2} {s2}.")  # fmt: skip
_PARTIAL_2 = ("a {s} and a {s2}.", "a drawing of a {s} and a {s2}.", "a photo of a {s} and a {s2}.",
              "a {c} shape and a {c2} shape.", "a {c} object and a {c2} object.",
              "something {c} and something {c2}.")  # fmt: skip
CAPTIONS_PER_IMAGE = 3

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")  # the word-level pre-tokenisation of cliplab tokenizers


def _vocabulary() -> list[str]:
    texts = [*_DETAILED_1, *_MEDIUM_1, *_PARTIAL_1, *_DETAILED_2, *_MEDIUM_2, *_PARTIAL_2]
    texts += [t for ts in TEMPLATES.values() for t in ts] + list(_PHRASE.values()) + list(_RELATION.values())
    texts += list(_ALL_SHAPES + _ALL_COLOURS + SIZES + PATTERNS)
    stripped = (re.sub(r"\{[a-z0-9]*\}", " ", t) for t in texts)
    return sorted({w for t in stripped for w in _WORD.findall(t.lower())})


#: every word (and punctuation mark) any caption or template can contain, sorted
VOCABULARY: list[str] = _vocabulary()


_BLOCK = 256
_SINGLE_XY = np.array([(0.3, 0.5), (0.7, 0.5), (0.5, 0.3), (0.5, 0.7), (0.5, 0.5)])
_PAIR_XY = np.array([(0.27, 0.5), (0.73, 0.5), (0.5, 0.27), (0.5, 0.73)])
_RADIUS = {1: np.array([0.12, 0.2]), 2: np.array([0.1, 0.155])}  # small / large, fraction of the side
_NOISE_PAD = 128
_NOISE: dict[int, np.ndarray] = {}


def _noise_bank(size: int) -> np.ndarray:
    """A fixed sensor-noise texture (std 3 grey levels) from which each image crops its own window."""
    if size not in _NOISE:
        rng = np.random.default_rng(20240611)
        _NOISE[size] = np.rint(rng.normal(0, 3.0, (size + _NOISE_PAD, size + _NOISE_PAD, 3))).astype(np.int16)
    return _NOISE[size]


# ---------------------------------------------------------------------------------------------- dataset
def _choice(value: Any, accepted: Sequence[Any], what: str, aliases: dict[str, str] | None = None) -> Any:
    value = (aliases or {}).get(value, value) if isinstance(value, str) else value
    if isinstance(value, bool) or value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(repr(a) for a in accepted)}")
    return value


class ShapesDataset(Dataset):
    """Coloured shapes with captions and labels; build it with ``shapes(...)``.

    ``attributes`` holds per-image arrays (``shape``, ``colour``, ``size``, ``position`` of the first
    object, the same with suffix ``2`` for the second object or ``""``, and ``n_objects``).
    """

    def __init__(
        self,
        split: str = "train",
        n: int = 1000,
        seed: int = 0,
        *,
        task: str = "shape",
        objects: int | str = 1,
        held_out: str | None = None,
        corruption: str | None = None,
        severity: int = 3,
        image_size: int = 64,
        combos: str | None = None,
        style: str = "solid",
        patterns: bool | None = None,
    ):
        self.split = _choice(split, SPLITS, "split")
        self.task = _choice(task, TASKS, "task", _TASK_ALIASES)
        self.held_out = _choice(held_out, (None, "shapes", "colours"), "held_out", _HELD_OUT_ALIASES)
        self.objects = _choice(objects, (1, 2, "mixed"), "objects")
        self.objects = self.objects if self.objects == "mixed" else int(self.objects)
        combos = _choice(combos, (None, "held_in", "held_out"), "combos")
        self.style = _choice(style, STYLES, "style")
        if patterns is None:
            patterns = self.task == "pattern"
        if not isinstance(patterns, bool | np.bool_):
            raise ValueError(f"patterns must be true or false, got {patterns!r}")
        if self.task == "pattern" and not patterns:
            raise ValueError("task='pattern' needs patterns=True (plain objects only would leave one class)")
        self.patterns = bool(patterns)
        for name, value in (("n", n), ("seed", seed), ("image_size", image_size), ("severity", severity)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if n <= 0:
            raise ValueError(f"n must be a positive number of images, got {n}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
        if corruption is not None:
            check_corruption(corruption, severity)
        elif severity not in range(1, 6):
            raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
        if self.held_out is not None and combos == "held_out":
            raise ValueError("combos='held_out' needs in-distribution shapes and colours (held_out=None)")
        if combos is None and self.held_out is None:
            combos = "held_in" if self.split == "train" else "all"
        self.combos = combos if self.held_out is None else None
        self.n, self.seed, self.image_size = int(n), int(seed), int(image_size)
        self.corruption, self.severity = corruption, int(severity)
        self._split_id = SPLITS.index(self.split)

        self.classnames = list(_CLASSNAMES[self.task])
        self.templates = list(TEMPLATES[self.task])
        self.name = f"shapes-{self.task}-{self.split}" + (f"-ood-{self.held_out}" if self.held_out else "")
        if self.style != "solid":
            self.name += f"-{self.style}"
        if corruption is not None:
            self.name += f"-{corruption}{self.severity}"
        self._draw()
        self._captions: list[str] | None = None
        self._table: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------------------------- attributes
    def _draw(self) -> None:
        blocks = [self._draw_block(b) for b in range((self.n + _BLOCK - 1) // _BLOCK)]
        a = {k: np.concatenate([blk[k] for blk in blocks])[: self.n] for k in blocks[0]}
        self._a = a
        sh, co = a["shape"][:, 0], a["colour"][:, 0]
        if self.task == "shape":
            lab = None if self.held_out == "shapes" else sh
        elif self.task == "colour":
            lab = None if self.held_out == "colours" else co
        elif self.task == "pattern":
            lab = a["pattern"][:, 0]
        else:
            lab = None if self.held_out else co * len(SHAPES) + sh
        self._labels = None if lab is None else lab.astype(np.int64)

    def _draw_block(self, block: int) -> dict[str, np.ndarray]:
        B = _BLOCK
        rng = np.random.default_rng([self.seed, self._split_id, block, 5309])
        # Options-independent draws first, so that the same index keeps its layout across options.
        u_n = rng.random(B)
        size = rng.integers(0, 2, (B, 2))
        pos1 = rng.integers(0, 5, B)
        orient = rng.integers(0, 4, B)
        jitter = rng.uniform(-1, 1, (B, 2, 2))
        radius_jit = rng.uniform(0.92, 1.08, (B, 2))
        angle = np.deg2rad(rng.uniform(-10, 10, (B, 2)))
        rgb_jit = rng.integers(-12, 13, (B, 2, 3))
        bg = np.clip(rng.integers(10, 46, (B, 1)) + rng.integers(-8, 9, (B, 3)), 0, 255)
        noise_off = rng.integers(0, _NOISE_PAD, (B, 2))
        cap = rng.integers(0, 6, (B, CAPTIONS_PER_IMAGE))

        n_obj = np.full(B, 2 if self.objects == 2 else 1)
        if self.objects == "mixed":
            n_obj = 1 + (u_n < 0.5)
        ho_shapes, ho_colours = self.held_out == "shapes", self.held_out == "colours"
        shape_ids = np.arange(len(SHAPES), len(_ALL_SHAPES)) if ho_shapes else np.arange(len(SHAPES))
        colour_ids = np.arange(len(COLOURS), len(_ALL_COLOURS)) if ho_colours else np.arange(len(COLOURS))
        bad_code = np.array([SHAPES.index(s) * 100 + COLOURS.index(c) for s, c in HELD_OUT_COMBOS])
        shape = np.zeros((B, 2), dtype=np.int64)
        colour = np.zeros((B, 2), dtype=np.int64)
        todo = np.ones((B, 2), dtype=bool)
        if self.combos == "held_out":  # the first object shows a held-out combination
            pick = rng.integers(0, len(HELD_OUT_COMBOS), B)
            shape[:, 0] = [SHAPES.index(HELD_OUT_COMBOS[k][0]) for k in pick]
            colour[:, 0] = [COLOURS.index(HELD_OUT_COMBOS[k][1]) for k in pick]
            todo[:, 0] = False
        while todo.any():  # rejection sampling, deterministic given the block's generator
            k = int(todo.sum())
            shape[todo] = shape_ids[rng.integers(0, len(shape_ids), k)]
            colour[todo] = colour_ids[rng.integers(0, len(colour_ids), k)]
            code = shape * 100 + colour
            todo = np.zeros((B, 2), dtype=bool)
            todo[:, 1] = code[:, 1] == code[:, 0]  # the two objects differ
            if self.combos == "held_in":
                todo |= np.isin(code, bad_code)

        # draws added after the original ones, so that every earlier attribute keeps its value
        pattern = rng.integers(0, len(PATTERNS), (B, 2)) if self.patterns else np.zeros((B, 2), dtype=np.int64)
        pattern_angle = rng.integers(0, 4, (B, 2))  # stripe / grid orientation: 0, 45, 90, 135 degrees
        pattern_phase = rng.random((B, 2, 2))
        single = n_obj == 1
        pair_pos = np.stack([orient, _OPPOSITE[orient]], 1)
        pos = np.where(single[:, None], np.stack([pos1, pos1], 1), pair_pos)
        xy = np.where(single[:, None, None], _SINGLE_XY[pos1][:, None, :], _PAIR_XY[pair_pos])
        # pairs: little jitter along the pair's axis, more across it (y for left/right, x for top/bottom)
        sx = np.where(single, 0.03, np.where(orient < 2, 0.02, 0.06))
        sy = np.where(single, 0.03, np.where(orient < 2, 0.06, 0.02))
        xy = xy + jitter * np.stack([sx, sy], 1)[:, None, :]
        radius = np.where(single[:, None], _RADIUS[1][size], _RADIUS[2][size]) * radius_jit
        rgb = np.clip(_RGB[colour] + rgb_jit, 0, 255)
        absent = np.arange(2)[None, :] >= n_obj[:, None]
        for arr in (shape, colour, size, pos, pattern):
            arr[absent] = -1
        return dict(
            n_objects=n_obj, shape=shape, colour=colour, size=size, position=pos, xy=xy, radius=radius,
            angle=angle, rgb=rgb, bg=bg, noise_off=noise_off, cap=cap, pattern=pattern,
            pattern_angle=pattern_angle, pattern_phase=pattern_phase,
        )  # fmt: skip

    @property
    def attributes(self) -> dict[str, np.ndarray]:
        """Per-image attribute arrays (names as strings; ``""`` where there is no second object)."""
        if self._table is None:
            a = self._a
            self._table = {"n_objects": a["n_objects"].astype(np.int64)}
            for key, names in _ATTRIBUTE_NAMES.items():
                for k, suffix in ((0, ""), (1, "2")):
                    self._table[key + suffix] = np.array([*names, ""])[a[key][:, k]]
        return self._table

    def describe(self, index: int) -> list[dict[str, str]]:
        """The objects of image ``index``: ``[{"shape", "colour", "size", "position", "pattern"}, ...]``."""
        i, table = self._index(index), self.attributes
        return [
            {k: str(table[k + sfx][i]) for k in _ATTRIBUTE_NAMES} for sfx in ("", "2")[: int(table["n_objects"][i])]
        ]

    # ------------------------------------------------------------------------------------- protocol
    def __len__(self) -> int:
        return self.n

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"image index {index} out of range for {self.n} images")
        return i

    def render(self, index: int) -> np.ndarray:
        """Image ``index`` as an ``(image_size, image_size, 3)`` uint8 array (corruption applied)."""
        i = self._index(index)
        a, S = self._a, self.image_size
        C = 2 * S  # drawn at twice the size, then box-filtered: anti-aliased edges
        sketch_rng = np.random.default_rng([self.seed, self._split_id, i, 4241]) if self.style == "sketch" else None
        bg = a["bg"][i] if sketch_rng is None else np.clip(230 - a["bg"][i] // 2, 0, 255)  # light paper
        canvas = np.empty((C, C, 3), dtype=np.uint8)
        canvas[:] = bg.astype(np.uint8)
        for k in range(int(a["n_objects"][i])):
            c, s = np.cos(a["angle"][i, k]), np.sin(a["angle"][i, k])
            r = a["radius"][i, k] * C
            pts = _UNIT[a["shape"][i, k]] @ np.array([[c, s], [-s, c]]) * r + a["xy"][i, k] * C
            rgb = a["rgb"][i, k]
            if sketch_rng is not None:
                rgb = np.clip(rgb * 0.8, 0, 255)  # ink a little darker than paint, so yellow shows on paper
            mask = shape_mask(pts, C, self.style, r, sketch_rng)
            if a["pattern"][i, k] > 0:
                mask &= pattern_mask(PATTERNS[int(a["pattern"][i, k])], int(a["pattern_angle"][i, k]),
                                      a["pattern_phase"][i, k], C, S)  # fmt: skip
            canvas[mask] = rgb.astype(np.uint8)
        arr = np.asarray(Image.fromarray(canvas, "RGB").reduce(2), dtype=np.int16)
        oy, ox = a["noise_off"][i]
        arr = np.clip(arr + _noise_bank(S)[oy : oy + S, ox : ox + S], 0, 255).astype(np.uint8)
        if self.corruption is not None:  # the Corrupted wrapper's path, seeded by (seed, split) and the index
            arr = corrupt_image(arr, self.corruption, self.severity, index=i, seed=(self.seed, self._split_id))
        return arr

    def image(self, index: int) -> Image.Image:
        """Image ``index`` as an RGB PIL image."""
        return Image.fromarray(self.render(index), "RGB")

    def images(self, indices: Sequence[int]) -> list[Image.Image]:
        """Images ``indices`` as RGB PIL images."""
        return [Image.fromarray(self.render(i), "RGB") for i in indices]

    def arrays(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Images ``indices`` (default: all) stacked as an ``[N, H, W, 3]`` uint8 array."""
        idx = range(self.n) if indices is None else indices
        S = self.image_size
        return np.array([self.render(i) for i in idx], dtype=np.uint8).reshape(-1, S, S, 3)

    def segmentation(self, index: int, by: str = "shape") -> np.ndarray:
        """int64 ``[S, S]`` class map: 0 background, else 1 + shape (or colour) index (``shapes_segmentation``)."""
        from cliplab.data.shapes_segmentation import shapes_class_map

        return shapes_class_map(self, index, by)

    @property
    def labels(self) -> np.ndarray | None:
        """int64 class indices into ``classnames`` (first object), or None for a held-out attribute."""
        return None if self._labels is None else self._labels.copy()

    def _caption_list(self) -> list[str]:
        a = self._a
        out: list[str] = []
        for i in range(self.n):
            sh, co, sz, po, cap = a["shape"][i], a["colour"][i], a["size"][i], a["position"][i], a["cap"][i]
            words = {"s": _ALL_SHAPES[sh[0]], "c": _ALL_COLOURS[co[0]], "z": SIZES[sz[0]]}
            if a["n_objects"][i] == 1:
                words["p"] = _PHRASE[POSITIONS[po[0]]]
                forms: tuple[tuple[str, ...], ...] = (_DETAILED_1, _MEDIUM_1, _PARTIAL_1)
            else:
                words.update(s2=_ALL_SHAPES[sh[1]], c2=_ALL_COLOURS[co[1]], r=_RELATION[POSITIONS[po[0]]])
                forms = (_DETAILED_2, _MEDIUM_2, _PARTIAL_2)
            out.extend(f[cap[j] % len(f)].format(**words) for j, f in enumerate(forms))
        return out

    @property
    def captions(self) -> list[str]:
        """All captions (``CAPTIONS_PER_IMAGE`` per image: detailed, medium, partial), flattened."""
        if self._captions is None:
            self._captions = self._caption_list()
        return self._captions

    @property
    def text_to_image(self) -> np.ndarray:
        """The image index of each caption, int64 ``[n * CAPTIONS_PER_IMAGE]``."""
        return np.repeat(np.arange(self.n, dtype=np.int64), CAPTIONS_PER_IMAGE)

    def options(self) -> dict[str, Any]:
        """Everything that defines the content (resolved defaults included)."""
        return {
            "split": self.split, "n": self.n, "seed": self.seed, "task": self.task, "objects": self.objects,
            "held_out": self.held_out, "corruption": self.corruption,
            "severity": self.severity if self.corruption else None, "image_size": self.image_size,
            "combos": self.combos, "style": self.style, "patterns": self.patterns,
        }  # fmt: skip

    def fingerprint(self) -> str:
        """Stable hash of the options and ``RENDER_VERSION``."""
        return stable_hash({"dataset": "shapes", "render": RENDER_VERSION, **self.options()})


def shapes(
    split: str = "train",
    n: int = 1000,
    seed: int = 0,
    *,
    task: str = "shape",
    objects: int | str = 1,
    held_out: str | None = None,
    corruption: str | None = None,
    severity: int = 3,
    image_size: int = 64,
    combos: str | None = None,
    style: str = "solid",
    patterns: bool | None = None,
) -> ShapesDataset:
    """The built-in shapes world: ``n`` images of one or two coloured shapes, with captions and labels.

    Args:
        split: "train", "val" or "test" — disjoint random streams.
        n: number of images. seed: random seed (image ``i`` depends only on split, seed, ``i``, options).
        task: "shape", "colour" (or "color"), "shape_colour" or "pattern" (the first object's fill, which no
            caption names) — sets ``classnames``, ``labels``, ``templates``.
        objects: 1, 2 or "mixed"; labels refer to the first object.
        held_out: None, "shapes" or "colours": draw that attribute from ``HELD_OUT_SHAPES`` /
            ``HELD_OUT_COLOURS`` (OOD data; its task's ``labels`` are None, ``classnames`` stay the ID ones).
        corruption: None or a name from ``CORRUPTIONS``, applied at ``severity`` (1..5) after rendering.
        image_size: side in pixels (at least 16).
        combos: "held_in" (never a pair of ``HELD_OUT_COMBOS``), "held_out" (the first object is such a
            pair) or None: "held_in" for the train split, every combination otherwise.
        style: "solid" (the training world), "outline" (hollow contours) or "sketch" (hand-drawn strokes on
            light paper): a rendering shift; the layout, labels and captions stay those of "solid".
        patterns: fill objects with ``PATTERNS`` at random (default: only for ``task="pattern"``); off, every
            object is plain.
    """
    return ShapesDataset(**locals())
