"""Augmented passes of the few-shot support images, and which passes each adapter gets.

The references build their caches and train their adapters on random crops, never on the clean image
(Tip-Adapter, GDA: 10 passes of ``RandomResizedCrop(224, scale=(0.5, 1))`` + horizontal flip; the trained
adapters re-augment every epoch; LP++ extracts one augmented pass). Encoding is the cost, so cliplab encodes
a *pool* of ``P`` augmented passes once, and only of the images that some support set uses
(``support_rows``), cached on disk per pass (``cliplab.features.embed_views``: one cached dataset per
(augmentation seed, pass), a crop deterministic in (seed, pass, image)). ``SupportViews`` holds the pool;
``views_for`` hands each adapter its share by its declared ``augmentation``:

- ``"cache"`` (Tip-Adapter, GDA): the first ``cache_passes`` (10) passes — Tip averages them, GDA
  concatenates them; the clean view is not added;
- ``"single"`` (LP++): the first pass;
- ``"epochs"`` (Tip-Adapter-F, CLIP-Adapter, AMU): the whole pool, epoch ``e`` training on pass ``e mod P``
  (a fresh crop every epoch while ``P`` >= epochs); Tip-Adapter-F's keys start from the cache passes;
- ``"none"`` (zero-shot, linear probe: lpclip extracts clean features): the clean features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cliplab._validation import ArrayLike, as_labels
from cliplab.data.sampling import k_shot_indices

__all__ = ["CACHE_PASSES", "ROLES", "SupportViews", "embed_support_views", "support_rows", "views_for"]

#: Tip-Adapter's and GDA's ``augment_epoch``
CACHE_PASSES = 10
ROLES = ("none", "cache", "single", "epochs")

Sampler = Callable[[torch.Tensor, int, int], ArrayLike]


def support_rows(
    labels: ArrayLike,
    shots: Iterable[int],
    seeds: Iterable[int],
    *,
    num_classes: int | None = None,
    sampler: Sampler | None = None,
) -> np.ndarray:
    """Sorted training rows used by any support set of ``shots`` × ``seeds`` (the images worth augmenting)."""
    y = as_labels(labels, "labels")
    draw = sampler or (lambda lab, k, seed: k_shot_indices(lab, k, seed, num_classes=num_classes))
    used = [np.asarray(draw(y, int(k), int(s)), dtype=np.int64) for k in shots for s in seeds]
    return np.unique(np.concatenate(used)) if used else np.zeros(0, dtype=np.int64)


@dataclass
class SupportViews:
    """``P`` augmented passes ``views [P, U, D]`` of the training rows ``rows [U]`` (sorted, unique)."""

    rows: torch.Tensor
    views: torch.Tensor

    def __post_init__(self) -> None:
        self.rows = torch.as_tensor(np.asarray(self.rows), dtype=torch.int64).reshape(-1)
        self.views = torch.as_tensor(self.views, dtype=torch.float32)
        if self.views.ndim != 3 or self.views.shape[1] != self.rows.numel():
            raise ValueError(
                f"views must be [P, U, D] with U = {self.rows.numel()} rows, got {tuple(self.views.shape)}"
            )
        if self.rows.numel() > 1 and not bool((self.rows[1:] > self.rows[:-1]).all()):
            raise ValueError("rows must be sorted and unique")

    @classmethod
    def full(cls, views: ArrayLike) -> SupportViews:
        """Passes of every training row: ``views [P, N, D]``."""
        t = torch.as_tensor(np.asarray(views) if not isinstance(views, torch.Tensor) else views)
        if t.ndim != 3:
            raise ValueError(f"train views must be [P, N, D], got {tuple(t.shape)}")
        return cls(torch.arange(t.shape[1]), t)

    @property
    def passes(self) -> int:
        return int(self.views.shape[0])

    def take(self, idx: ArrayLike) -> torch.Tensor:
        """``[P, len(idx), D]`` for training rows ``idx``; ValueError for a row without augmented passes."""
        want = torch.as_tensor(np.asarray(idx), dtype=torch.int64).reshape(-1)
        if self.rows.numel() == 0:
            raise ValueError(f"no augmented passes for training row(s) {want.tolist()[:10]} (see support_rows)")
        pos = torch.searchsorted(self.rows, want).clamp_max(self.rows.numel() - 1)
        bad = self.rows[pos] != want
        if bool(bad.any()):
            raise ValueError(f"no augmented passes for training row(s) {want[bad].tolist()[:10]} (see support_rows)")
        return self.views[:, pos]

    def subset(self, keep: ArrayLike) -> SupportViews:
        """The passes re-indexed for ``features.subset(keep)`` (rows outside ``keep`` dropped)."""
        keep = torch.as_tensor(np.asarray(keep), dtype=torch.int64).reshape(-1)
        new_of_old = {int(old): new for new, old in enumerate(keep.tolist())}
        sel = [i for i, r in enumerate(self.rows.tolist()) if r in new_of_old]
        new_rows = torch.tensor([new_of_old[int(self.rows[i])] for i in sel], dtype=torch.int64)
        order = torch.argsort(new_rows)
        return SupportViews(new_rows[order], self.views[:, torch.tensor(sel, dtype=torch.int64)[order]])


def views_for(
    role: str, clean: torch.Tensor, augmented: torch.Tensor | None, cache_passes: int = CACHE_PASSES
) -> torch.Tensor:
    """The support features an adapter of ``augmentation`` ``role`` is fitted on (see the module docstring).

    ``clean`` ``[N, D]``; ``augmented`` ``[P, N, D]`` or None (no pool: every role gets ``clean``).
    """
    if role not in ROLES:
        raise ValueError(f"unknown augmentation role {role!r}; choose from {ROLES}")
    if augmented is None or role == "none":
        return clean
    if role == "cache":
        return augmented[: max(1, int(cache_passes))]
    if role == "single":
        return augmented[:1]
    return augmented


def embed_support_views(
    model: Any,
    dataset: Any,
    labels: ArrayLike,
    shots: Iterable[int],
    seeds: Iterable[int],
    passes: int,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    sampler: Sampler | None = None,
    **embed_kw: Any,
) -> SupportViews:
    """``passes`` augmented passes (random resized crop, scale (0.5, 1), + flip) of the images any support set
    of ``shots`` × ``seeds`` uses, encoded by ``model`` through ``cliplab.features.embed_views`` (each pass is
    cached on disk, keyed by the augmentation ``seed``, the pass and the rows, so a rerun encodes nothing).
    Use the same arguments for a second encoder (AMU): its passes are the same crops of the same images."""
    from cliplab.features import embed_views

    rows = support_rows(labels, shots, seeds, num_classes=num_classes, sampler=sampler)
    views = embed_views(model, dataset.subset(rows), int(passes), seed=seed, **embed_kw)
    return SupportViews(torch.as_tensor(rows), views)
