"""Reproducible few-shot sampling (CoOp protocol: k images per class, seeded)."""

from __future__ import annotations

import numpy as np

from cliplab._validation import ArrayLike, as_labels
from cliplab.data.base import Dataset, Subset


def k_shot_indices(labels: ArrayLike, k: int, seed: int = 0, num_classes: int | None = None) -> np.ndarray:
    """Indices of ``k`` samples per class, drawn without replacement with ``seed``.

    The result is sorted by class then by draw order and depends only on (labels, k, seed).
    Raises ``ValueError`` when a class has fewer than ``k`` samples.
    """
    y = as_labels(labels, "labels").numpy()
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    c = num_classes if num_classes is not None else int(y.max()) + 1
    rng = np.random.default_rng(seed)
    out = []
    short = []
    for cls in range(c):
        members = np.nonzero(y == cls)[0]
        if members.size < k:
            short.append((cls, int(members.size)))
            continue
        out.append(rng.choice(members, size=k, replace=False))
    if short:
        raise ValueError(
            f"asked for {k} shots per class but {len(short)} class(es) have fewer samples "
            f"(class, available): {short[:10]}"
        )
    return np.concatenate(out).astype(np.int64)


def k_shot(dataset: Dataset, k: int, seed: int = 0) -> Subset:
    """A ``Subset`` of ``dataset`` with ``k`` images per class (see ``k_shot_indices``)."""
    if dataset.labels is None:
        raise ValueError(f"dataset {dataset.name!r} has no labels, so k-shot sampling is impossible")
    n_cls = len(dataset.classnames) if dataset.classnames else None
    return Subset(dataset, k_shot_indices(dataset.labels, k, seed, num_classes=n_cls))
