"""The dataset protocol every cliplab dataset follows.

A dataset is an indexable collection of images with, optionally, class labels (``labels``,
``classnames``) and captions (``captions`` flattened, ``text_to_image`` mapping each caption to its
image). ``fingerprint()`` is a stable hash of everything that defines the content; the feature cache
is keyed by it.

Datasets are ``torch.utils.data.Dataset``s: ``dataset[i]`` is ``{"image": PIL image, "index": i}`` plus
``"label"`` (an int) when the dataset has labels and ``"captions"`` (that image's captions) when it has
captions. ``Wrapper`` is the base of datasets derived image by image from a parent (``Subset``,
``Corrupted``, augmented views): class names, templates and labels follow the parent unless the wrapper
sets its own.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch.utils.data
from PIL import Image


def stable_hash(obj: Any) -> str:
    """SHA-256 (hex, 16 chars) of a JSON-serialisable object, key order independent."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_stamp(path: str | os.PathLike) -> list[int]:
    """``[size, st_mtime_ns, st_ctime_ns]`` of a file: what tells a rewritten file from the one cached.

    The size and modification time alone miss a file rewritten with the same size whose mtime was set back
    (``touch -r``, ``os.utime``, ``rsync -t``, an archive extracted with its times); the inode change time
    cannot be set back by a user, and any write, rename or ``utime`` call moves it.
    """
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def files_fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """SHA-256 (hex, 16) of each file's path and ``file_stamp`` (a missing file hashes as missing).

    One ``stat`` per file, no byte read: cheap for any size of data; see ``file_stamp`` for what it detects.
    """
    h = hashlib.sha256()
    for p in paths:
        try:
            size, mtime, ctime = file_stamp(p)
            h.update(f"{os.fspath(p)}|{size}|{mtime}|{ctime}\n".encode())
        except OSError:
            h.update(f"{os.fspath(p)}|missing\n".encode())
    return h.hexdigest()[:16]


class Dataset(torch.utils.data.Dataset):
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

    def subset(self, indices: Sequence[int] | np.ndarray) -> Subset:
        return Subset(self, indices)

    def _position(self, index: int) -> int:
        i = operator.index(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        return i

    def item_meta(self, index: int) -> dict[str, Any]:
        """``{"index": i}`` plus ``"label"`` / ``"captions"`` of image ``index`` where the dataset has them."""
        i = self._position(index)
        labels, captions = self._item_tables()
        meta: dict[str, Any] = {"index": i}
        if labels is not None:
            meta["label"] = int(labels[i])
        if captions is not None:
            meta["captions"] = list(captions[i])
        return meta

    def _item_tables(self) -> tuple[np.ndarray | None, list[list[str]] | None]:
        """Labels and per-image captions, computed once (``labels`` may copy, captions need grouping)."""
        tables = self.__dict__.get("_item_tables_cache")
        if tables is None:
            labels = self.labels
            captions, t2i = self.captions, self.text_to_image
            per_image: list[list[str]] | None = None
            if captions is not None and t2i is not None:
                per_image = [[] for _ in range(len(self))]
                for caption, image in zip(captions, np.asarray(t2i).tolist()):
                    per_image[image].append(caption)
            tables = (None if labels is None else np.asarray(labels), per_image)
            self.__dict__["_item_tables_cache"] = tables
        return tables

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``{"image": PIL image, "index": i, "label"?: int, "captions"?: [str, ...]}``."""
        meta = self.item_meta(index)
        return {"image": self.image(meta["index"]), **meta}

    def __repr__(self) -> str:
        n_cls = len(self.classnames) if self.classnames else 0
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, classes={n_cls})"


_UNSET: Any = object()


class Wrapper(Dataset):
    """A dataset derived from ``parent`` image by image (same length and labels unless overridden).

    ``classnames`` and ``templates`` follow the parent's until set on the wrapper; ``labels`` are the
    parent's. Captions are not carried over (an altered image may not match them) unless a subclass says
    so (``Subset`` keeps and re-indexes them).
    """

    def __init__(self, parent: Dataset, name: str | None = None):
        self.parent = parent
        self.name = parent.name if name is None else name

    @property
    def classnames(self) -> list[str] | None:
        own = self.__dict__.get("_classnames", _UNSET)
        return self.parent.classnames if own is _UNSET else own

    @classnames.setter
    def classnames(self, value: list[str] | None) -> None:
        self.__dict__["_classnames"] = value

    @property
    def templates(self) -> list[str] | None:
        own = self.__dict__.get("_templates", _UNSET)
        return self.parent.templates if own is _UNSET else own

    @templates.setter
    def templates(self, value: list[str] | None) -> None:
        self.__dict__["_templates"] = value

    def __len__(self) -> int:
        return len(self.parent)

    @property
    def labels(self) -> np.ndarray | None:
        return self.parent.labels


class Subset(Wrapper):
    """A view of ``parent`` restricted to ``indices`` (captions follow their images)."""

    def __init__(self, parent: Dataset, indices: Sequence[int] | np.ndarray):
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(parent)):
            raise IndexError(f"subset indices out of range for a dataset of {len(parent)} images")
        super().__init__(parent, f"{parent.name}[subset]")
        self.indices = idx

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
        assert caps is not None  # _caption_rows found captions
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
