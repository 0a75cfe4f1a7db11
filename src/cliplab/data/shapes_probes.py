"""Compositional probes generated on the built-in world: one true caption and hard negatives per image.

Every image of ``shapes(split, n, seed, objects="mixed")`` gets a canonical true caption built from its
attributes (``"a red circle to the left of a blue square."``, ``"a large red circle on the left."``) and one
hard negative of each type that applies (SugarCrepe's and ARO's types, on this world's vocabulary):

* ``swap_att`` — two objects exchange their colours (SugarCrepe swap-att; ARO VG-Attribution);
* ``swap_obj`` — two objects exchange their shapes (SugarCrepe swap-obj);
* ``swap_rel`` — the spatial relation is reversed, "left of" ↔ "right of", "above" ↔ "below" (ARO VG-Relation);
* ``replace_obj`` — one object's shape becomes a shape absent from the image (SugarCrepe replace-obj);
* ``replace_att`` — one object's colour becomes a colour absent from the image (SugarCrepe replace-att);
* ``add_obj`` — an object absent from the image is added with "and" (SugarCrepe add-obj);
* ``shuffle`` — the words of the true caption in another order (ARO COCO/Flickr order).

Swaps need two objects; single-object images get the other types. Negatives are drawn from
``np.random.default_rng([seed, split, index, 7717])``, so each image's probes depend only on (split, seed,
index) and the options, never on ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cliplab.data.shapes_world import COLOURS, SHAPES, ShapesDataset, shapes

__all__ = ["NEGATIVE_TYPES", "ShapesProbe", "ShapesProbes", "generate_probes", "probes_of", "true_caption"]

#: every negative type the built-in probes generate, in report order
NEGATIVE_TYPES: tuple[str, ...] = ("swap_att", "swap_obj", "swap_rel", "replace_obj", "replace_att", "add_obj",
                                   "shuffle")  # fmt: skip
#: position of the first object of a pair relative to the second → its phrase (as the world's captions write it)
RELATIONS = {"left": "to the left of", "right": "to the right of", "top": "above", "bottom": "below"}
PLACES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
          "center": "in the center"}  # fmt: skip
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def _object(obj: dict[str, str], *, size: bool = False) -> str:
    return f"a {obj['size'] + ' ' if size else ''}{obj['colour']} {obj['shape']}"


def true_caption(objects: list[dict[str, str]]) -> str:
    """The canonical caption of an image's objects (``ShapesDataset.describe``): every attribute the world
    names — size, colour, shape and place for one object; colour, shape and relation for two."""
    if len(objects) == 1:
        return f"{_object(objects[0], size=True)} {PLACES[objects[0]['position']]}."
    first, second = objects
    return f"{_object(first)} {RELATIONS[first['position']]} {_object(second)}."


@dataclass
class ShapesProbe:
    """One image's probe: its index in ``dataset``, its objects, the true caption and a negative per type."""

    index: int
    objects: list[dict[str, str]]
    positive: str
    negatives: dict[str, str] = field(default_factory=dict)


def _shuffled(caption: str, rng: np.random.Generator) -> str:
    words = caption.rstrip(".").split()
    for _ in range(20):
        order = rng.permutation(len(words))
        if (order != np.arange(len(words))).any() and [words[i] for i in order] != words:
            return " ".join(words[i] for i in order) + "."
    return " ".join(words[1:] + words[:1]) + "."  # pragma: no cover - 20 identity draws in a row


def _negatives(objects: list[dict[str, str]], rng: np.random.Generator) -> dict[str, str]:
    out: dict[str, str] = {}
    present_shapes = {o["shape"] for o in objects}
    present_colours = {o["colour"] for o in objects}
    if len(objects) == 2:
        a, b = objects
        if a["colour"] != b["colour"]:
            out["swap_att"] = true_caption([{**a, "colour": b["colour"]}, {**b, "colour": a["colour"]}])
        if a["shape"] != b["shape"]:
            out["swap_obj"] = true_caption([{**a, "shape": b["shape"]}, {**b, "shape": a["shape"]}])
        out["swap_rel"] = true_caption([{**a, "position": OPPOSITE[a["position"]]}, b])
    k = int(rng.integers(0, len(objects)))
    other_shapes = [s for s in SHAPES if s not in present_shapes]
    other_colours = [c for c in COLOURS if c not in present_colours]
    replaced = list(objects)
    replaced[k] = {**objects[k], "shape": other_shapes[int(rng.integers(0, len(other_shapes)))]}
    out["replace_obj"] = true_caption(replaced)
    replaced = list(objects)
    replaced[k] = {**objects[k], "colour": other_colours[int(rng.integers(0, len(other_colours)))]}
    out["replace_att"] = true_caption(replaced)
    extra = {"shape": other_shapes[int(rng.integers(0, len(other_shapes)))],
             "colour": other_colours[int(rng.integers(0, len(other_colours)))]}  # fmt: skip
    out["add_obj"] = true_caption(objects)[:-1] + f" and {_object(extra)}."
    out["shuffle"] = _shuffled(true_caption(objects), rng)
    return out


@dataclass
class ShapesProbes:
    """The generated probes of a rendered split: ``dataset`` (the images) and one :class:`ShapesProbe` each."""

    dataset: ShapesDataset
    probes: list[ShapesProbe]
    seed: int

    def __len__(self) -> int:
        return len(self.probes)

    def options(self) -> dict[str, Any]:
        return {**self.dataset.options(), "probes_seed": self.seed}


def generate_probes(split: str = "test", n: int = 200, seed: int = 0, **options: Any) -> ShapesProbes:
    """Probes on ``shapes(split, n, seed, objects="mixed", **options)``; see the module docstring.

    ``options`` are the world's (``image_size``, ``style``, ``corruption``, ...); ``objects`` defaults to
    ``"mixed"`` (half the images with two objects, which the swap types need).
    """
    options.setdefault("objects", "mixed")
    return probes_of(shapes(split, n=n, seed=seed, **options), seed)


def probes_of(dataset: ShapesDataset, seed: int = 0) -> ShapesProbes:
    """Probes for every image of an already rendered built-in dataset (e.g. a bench's test split)."""
    if not isinstance(dataset, ShapesDataset):
        raise TypeError(f"probes are generated on the built-in world (a ShapesDataset), got {type(dataset).__name__}")
    if dataset.held_out is not None:
        raise ValueError("shapes probes use in-distribution shapes and colours (held_out must be None)")
    split_id = ("train", "val", "test").index(dataset.split)
    probes = []
    for i in range(len(dataset)):
        objects = dataset.describe(i)
        rng = np.random.default_rng([seed, split_id, i, 7717])
        probes.append(ShapesProbe(i, objects, true_caption(objects), _negatives(objects, rng)))
    return ShapesProbes(dataset, probes, seed)
