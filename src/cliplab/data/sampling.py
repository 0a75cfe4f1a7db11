"""Reproducible few-shot sampling and class subsets.

- ``k_shot_indices`` / ``k_shot``: cliplab's own draw (NumPy generator per seed, ``k`` per class).
- ``dassl_few_shot``: Dassl's draw (CoOp, CoCoOp, Tip-Adapter, ... all use it), reproduced exactly: after
  ``random.seed(seed)``, items are grouped by label in order of first appearance and ``random.sample(items, k)``
  is drawn per label (all items when a label has fewer), for the training split first, then for the
  validation split with ``min(k, 4)``. Seeds 1–3 thus give CoOp's support sets.
- A dataset may declare its own draw: ``few_shot_indices(k, seed)`` (the ``coop:`` datasets do), which
  ``k_shot`` then uses; ``sampler_for(dataset)`` gives the matching ``(labels, k, seed) -> indices`` function
  for code that samples label arrays (the few-shot protocol over cached features).
- ``base_new_classes`` / ``subsample_classes``: CoCoOp's base-to-new split (Dassl ``subsample_classes``):
  labels sorted, the first ``ceil(n/2)`` are base, the rest new, each relabelled from 0.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import numpy as np

from cliplab._validation import ArrayLike, as_labels
from cliplab.data.base import Dataset, Subset

Sampler = Callable[[ArrayLike, int, int], np.ndarray]


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


def _dassl_draw(rng: random.Random, labels: Sequence[int], k: int) -> list[int]:
    """Dassl ``generate_fewshot_dataset`` (repeat=False) on positions: group by label, first-appearance order."""
    groups: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        groups.setdefault(int(label), []).append(position)
    out: list[int] = []
    for members in groups.values():
        out.extend(rng.sample(members, k) if len(members) >= k else members)
    return out


def dassl_few_shot(
    train_labels: ArrayLike, k: int, seed: int, val_labels: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Dassl's few-shot draw: ``(train indices, val indices or None)``, positions into each split.

    ``random.seed(seed)`` (here a private ``random.Random(seed)``, the same sequence without touching the
    global state), then per label of ``train_labels`` in order of first appearance ``random.sample(items, k)``
    (a label with fewer than ``k`` items keeps them all), then the same on ``val_labels`` with ``min(k, 4)``.
    The order of the result is Dassl's: labels in order of first appearance, each label's draw in order.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = random.Random(seed)
    train = np.asarray(_dassl_draw(rng, np.asarray(train_labels).tolist(), k), dtype=np.int64)
    if val_labels is None:
        return train, None
    val = np.asarray(_dassl_draw(rng, np.asarray(val_labels).tolist(), min(k, 4)), dtype=np.int64)
    return train, val


def dassl_k_shot_indices(labels: ArrayLike, k: int, seed: int = 0) -> np.ndarray:
    """The training part of ``dassl_few_shot`` (a ``Sampler``: ``(labels, k, seed) -> indices``)."""
    return dassl_few_shot(labels, k, seed)[0]


def sampler_for(dataset: Dataset | None) -> Sampler:
    """The ``(labels, k, seed) -> indices`` draw that matches ``dataset``'s protocol.

    A dataset declares one with a ``k_shot_sampler`` attribute (``coop:`` data: Dassl's); otherwise it is
    cliplab's ``k_shot_indices``.
    """
    own = getattr(dataset, "k_shot_sampler", None)
    if own is not None:
        return own
    n_cls = len(dataset.classnames) if dataset is not None and dataset.classnames else None
    return lambda labels, k, seed: k_shot_indices(labels, k, seed, num_classes=n_cls)


def k_shot(dataset: Dataset, k: int, seed: int = 0) -> Subset:
    """A ``Subset`` of ``dataset`` with ``k`` images per class.

    A dataset with its own draw (``few_shot_indices(k, seed)``, e.g. ``coop:`` data: Dassl's) gets it;
    others get ``k_shot_indices``.
    """
    own = getattr(dataset, "few_shot_indices", None)
    if callable(own):
        return Subset(dataset, own(k, seed))
    if dataset.labels is None:
        raise ValueError(f"dataset {dataset.name!r} has no labels, so k-shot sampling is impossible")
    n_cls = len(dataset.classnames) if dataset.classnames else None
    return Subset(dataset, k_shot_indices(dataset.labels, k, seed, num_classes=n_cls))


def base_new_classes(labels: ArrayLike) -> tuple[list[int], list[int]]:
    """CoCoOp's base and new classes: the distinct labels sorted, first ``ceil(n/2)`` base, the rest new."""
    distinct = sorted({int(v) for v in np.asarray(labels).reshape(-1).tolist()})
    m = math.ceil(len(distinct) / 2)
    return distinct[:m], distinct[m:]


class ClassSubset(Subset):
    """The images of ``parent`` whose label is in ``classes``, relabelled ``0..len(classes)-1`` in that order."""

    def __init__(self, parent: Dataset, classes: Sequence[int]):
        if parent.labels is None:
            raise ValueError(f"dataset {parent.name!r} has no labels, so it cannot be restricted to classes")
        self.classes = [int(c) for c in classes]
        remap = np.full(int(max([*self.classes, int(parent.labels.max())])) + 1, -1, dtype=np.int64)
        remap[self.classes] = np.arange(len(self.classes))
        keep = np.nonzero(remap[parent.labels] >= 0)[0]
        super().__init__(parent, keep)
        self._remap = remap
        names = parent.classnames
        self.classnames = None if names is None else [names[c] for c in self.classes]
        self.name = f"{parent.name}[classes]"

    @property
    def labels(self) -> np.ndarray:
        parent = self.parent.labels
        assert parent is not None  # checked in __init__
        return self._remap[parent[self.indices]]

    def fingerprint(self) -> str:
        from cliplab.data.base import stable_hash

        return stable_hash({"subset": super().fingerprint(), "classes": self.classes})


def subsample_classes(dataset: Dataset, subsample: str = "all", *, reference: Dataset | None = None) -> Dataset:
    """Dassl's ``subsample_classes``: ``"base"`` (first half of the sorted labels), ``"new"`` (the rest), ``"all"``.

    The halves are computed from ``reference``'s labels (Dassl: the training split) or ``dataset``'s own;
    the result is relabelled from 0 with the matching class names.
    """
    if subsample not in ("all", "base", "new"):
        raise ValueError(f"subsample must be 'all', 'base' or 'new', got {subsample!r}")
    if subsample == "all":
        return dataset
    source = reference if reference is not None else dataset
    if source.labels is None:
        raise ValueError(f"dataset {source.name!r} has no labels, so base and new classes cannot be split")
    base, new = base_new_classes(source.labels)
    return ClassSubset(dataset, base if subsample == "base" else new)
