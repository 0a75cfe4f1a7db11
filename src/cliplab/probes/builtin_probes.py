"""The built-in world's probes as a :class:`SelectionProbe`: one item per image and negative type."""

from __future__ import annotations

from typing import Any

import numpy as np

from cliplab.data.shapes_probes import NEGATIVE_TYPES, ShapesProbes, generate_probes, probes_of
from cliplab.data.shapes_world import ShapesDataset
from cliplab.probes.base import SelectionProbe


def builtin_probe(
    split: str = "test",
    n: int = 200,
    seed: int = 0,
    *,
    types: tuple[str, ...] = NEGATIVE_TYPES,
    dataset: ShapesDataset | None = None,
    **options: Any,
) -> SelectionProbe:
    """``generate_probes(split, n, seed, **options)`` flattened: item = (image, [true caption, negative]), kind = type.

    ``dataset``: generate on this rendered built-in dataset instead (``split``, ``n`` and ``options`` unused).
    """
    unknown = [t for t in types if t not in NEGATIVE_TYPES]
    if unknown:
        raise ValueError(f"unknown negative type(s) {unknown}; accepted: {', '.join(NEGATIVE_TYPES)}")
    probes: ShapesProbes = (
        probes_of(dataset, seed) if dataset is not None else generate_probes(split, n, seed, **options)
    )
    image_index, captions, kinds = [], [], []
    for kind in types:
        for p in probes.probes:
            if kind in p.negatives:
                image_index.append(p.index)
                captions.append([p.positive, p.negatives[kind]])
                kinds.append(kind)
    rows = np.asarray(image_index, dtype=np.int64)
    return SelectionProbe("shapes", probes.dataset, rows, captions, kinds, info=probes.options())
