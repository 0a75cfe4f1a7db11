"""The dataset protocol every cliplab dataset follows.

A dataset is an indexable collection of images with, optionally, class labels (``labels``,
``classnames``) and captions (``captions`` flattened, ``text_to_image`` mapping each caption to its
image). ``fingerprint()`` is a stable hash of everything that defines the content; the feature cache
is keyed by it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image


def stable_hash(obj: Any) -> str:
    """SHA-256 (hex, 16 chars) of a JSON-serialisable object, key order independent."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class Dataset:
    """Base class. Subclasses implement ``__len__``, ``image`` and ``fingerprint``."""

    name: str = "dataset"
    classnames: list[str] | None = None
    #: zero-shot templates suited to this data (format strings with ``{}``), or None
    templates: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, index: int) -> Image.Image:
        """The ``index``-th image as an RGB PIL image."""
        raise NotImplementedError

    def images(self, indices: Sequence[int]) -> list[Image.Image]:
        """Several images at once (subclasses may batch)."""
        return [self.image(int(i)) for i in indices]

    @property
    def labels(self) -> np.ndarray | None:
        """int64 class indices ``[N]`` into ``classnames``, or None."""
        return None

    @property
    def captions(self) -> list[str] | None:
        """All captions, flattened; ``text_to_image[m]`` is the image of caption ``m``."""
        return None

    @property
    def text_to_image(self) -> np.ndarray | None:
        return None

    def fingerprint(self) -> str:
        raise NotImplementedError

    def subset(self, indices: Sequence[int]) -> Subset:
        return Subset(self, indices)

    def __repr__(self) -> str:
        n_cls = len(self.classnames) if self.classnames else 0
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, classes={n_cls})"


class Subset(Dataset):
    """A view of ``parent`` restricted to ``indices`` (captions follow their images)."""

    def __init__(self, parent: Dataset, indices: Sequence[int]):
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(parent)):
            raise IndexError(f"subset indices out of range for a dataset of {len(parent)} images")
        self.parent = parent
        self.indices = idx
        self.name = f"{parent.name}[subset]"
        self.classnames = parent.classnames
        self.templates = parent.templates

    def __len__(self) -> int:
        return int(self.indices.size)

    def image(self, index: int) -> Image.Image:
        return self.parent.image(int(self.indices[index]))

    def images(self, indices: Sequence[int]) -> list[Image.Image]:
        return self.parent.images([int(self.indices[i]) for i in indices])

    @property
    def labels(self) -> np.ndarray | None:
        lab = self.parent.labels
        return None if lab is None else lab[self.indices]

    def _caption_rows(self) -> tuple[np.ndarray, np.ndarray] | None:
        t2i = self.parent.text_to_image
        if t2i is None or self.parent.captions is None:
            return None
        position = np.full(len(self.parent), -1, dtype=np.int64)
        position[self.indices] = np.arange(self.indices.size)
        rows = np.nonzero(position[t2i] >= 0)[0]
        return rows, position[t2i[rows]]

    @property
    def captions(self) -> list[str] | None:
        sel = self._caption_rows()
        if sel is None:
            return None
        caps = self.parent.captions
        return [caps[r] for r in sel[0]]

    @property
    def text_to_image(self) -> np.ndarray | None:
        sel = self._caption_rows()
        return None if sel is None else sel[1]

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.indices.tobytes()).hexdigest()[:16]
        return stable_hash({"parent": self.parent.fingerprint(), "indices": digest})


def check_nonempty(dataset: Dataset) -> None:
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} is empty: there are no images to process")
