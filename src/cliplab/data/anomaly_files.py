"""Anomaly-detection datasets read from files: images with a normal/anomalous label and ground-truth masks.

``AnomalyFiles`` is what the ``mvtec:``, ``visa:`` and ``anomaly-folder:`` sources return. Per image it has
``label`` (0 normal, 1 anomalous; ``classnames = ["normal", "anomalous"]``), ``defect_type`` (``"good"``
for a normal image, as MVTec AD names it), ``category`` (the object, e.g. ``bottle``) and ``mask(i)``: a
bool ``[H, W]`` array at the image's size, True where the image is defective (all False for a normal image).
A mask file counts as defect wherever it is nonzero (MVTec AD's masks are 0/255, VisA's 0/class index).

Every anomalous image's mask file is checked when the dataset is built — it exists, and its size (read from
the file's header, no pixel decoded) is the image's — so a missing or mis-sized mask is a ValueError naming
the file before any feature is computed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from cliplab.data.base import files_fingerprint, stable_hash
from cliplab.data.folders import IMAGE_EXTENSIONS, ImageFileDataset

__all__ = ["ANOMALY_CLASSNAMES", "NORMAL", "AnomalyData", "AnomalyFiles", "AnomalySample", "choose_categories",
           "read_mask"]  # fmt: skip

#: the class names of ``label`` (0 normal, 1 anomalous)
ANOMALY_CLASSNAMES = ["normal", "anomalous"]
#: the ``defect_type`` of a normal image (MVTec AD's folder name for it)
NORMAL = "good"
ANOMALY_SPLITS = ("train", "test")


@runtime_checkable
class AnomalyData(Protocol):
    """What anomaly-detection data offers beyond a ``Dataset`` (``AnomalyFiles``, ``ShapesDefects``).

    ``labels`` are 0 normal / 1 anomalous; ``dataset[i]`` carries ``defect_type`` and ``category`` too.
    """

    @property
    def defect_types(self) -> list[str]: ...

    @property
    def categories(self) -> list[str]: ...

    def mask(self, index: int) -> np.ndarray:
        """Bool ``[H, W]`` at the image's size, True on the defect."""
        ...

    def defect_type(self, index: int) -> str: ...

    def category(self, index: int) -> str: ...


@dataclass(frozen=True)
class AnomalySample:
    """One image: its path, ``label`` (0/1), ``defect_type``, ``category`` and mask file (None: no mask)."""

    path: Path
    label: int
    defect_type: str
    category: str
    mask_path: Path | None = None


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (by extension, hidden ones skipped), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def choose_categories(root: Path, present: Sequence[str], category: str | None, what: str) -> list[str]:
    """``[category]`` if it is one of ``present`` (all of them when None); else a ValueError listing them."""
    if not present:
        raise ValueError(f"{root} holds no {what} category (see docs/datasets.md for the layout)")
    if category is None:
        return list(present)
    if str(category) not in present:
        raise ValueError(
            f"unknown {what} category {category!r}: {root} has {', '.join(present)} (category=<one of these>)"
        )
    return [str(category)]


def read_mask(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as a bool ``[H, W]`` array, True where any channel is nonzero; ``size`` (W, H) is checked."""
    with Image.open(path) as img:
        if size is not None and img.size != tuple(size):
            raise ValueError(f"mask {path} is {img.size[0]}x{img.size[1]} but its image is {size[0]}x{size[1]}")
        arr = np.asarray(img)
    if arr.ndim == 3:
        return np.any(arr[..., : min(3, arr.shape[2])] != 0, axis=2)
    return np.asarray(arr != 0)


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:  # the header only: no pixel is decoded
        return img.size


class AnomalyFiles(ImageFileDataset):
    """Images with anomaly labels, defect types, categories and masks (see the module docstring).

    ``has_masks``: whether the data has ground-truth masks (False for a plain folder without ``masks/``;
    ``mask(i)`` of an anomalous image then raises). Build it with ``samples`` in their final order.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        samples: Sequence[AnomalySample],
        *,
        name: str,
        split: str,
        kind: str,
        has_masks: bool = True,
    ):
        self.root = Path(root)
        if not samples:
            raise ValueError(f"{name}: no image found under {self.root} for split={split!r}")
        self.samples = list(samples)
        self.paths = [s.path for s in self.samples]
        self.name, self.split, self.kind, self.has_masks = name, split, kind, has_masks
        self.classnames = list(ANOMALY_CLASSNAMES)
        self._labels = np.asarray([s.label for s in self.samples], dtype=np.int64)
        if has_masks:
            self._check_masks()

    def _check_masks(self) -> None:
        for s in self.samples:
            if s.label == 0:
                continue
            if s.mask_path is None or not s.mask_path.is_file():
                where = "none is listed" if s.mask_path is None else f"expected {s.mask_path}"
                raise ValueError(f"{self.name}: the anomalous image {s.path} has no mask file ({where})")
            size, mask_size = _image_size(s.path), _image_size(s.mask_path)
            if size != mask_size:
                raise ValueError(
                    f"{self.name}: mask {s.mask_path} is {mask_size[0]}x{mask_size[1]} but its image {s.path} "
                    f"is {size[0]}x{size[1]}"
                )

    @property
    def labels(self) -> np.ndarray:
        """int64 ``[N]``: 0 normal, 1 anomalous."""
        return self._labels

    @cached_property
    def defect_types(self) -> list[str]:
        """Each image's defect type (``"good"`` for a normal one)."""
        return [s.defect_type for s in self.samples]

    @cached_property
    def categories(self) -> list[str]:
        """Each image's category (the object)."""
        return [s.category for s in self.samples]

    def defect_type(self, index: int) -> str:
        return self.samples[self._position(index)].defect_type

    def category(self, index: int) -> str:
        return self.samples[self._position(index)].category

    def mask(self, index: int) -> np.ndarray:
        """Bool ``[H, W]`` at the image's size: True on the defect; all False for a normal image."""
        s = self.samples[self._position(index)]
        size = _image_size(s.path)
        if s.label == 0:
            return np.zeros((size[1], size[0]), dtype=bool)
        if not self.has_masks or s.mask_path is None:
            raise ValueError(f"{self.name}: no ground-truth mask for {s.path} (this data has no masks)")
        return read_mask(s.mask_path, size)

    def masks(self, indices: Sequence[int]) -> list[np.ndarray]:
        return [self.mask(int(i)) for i in indices]

    def item_meta(self, index: int) -> dict[str, Any]:
        """``{"index", "label", "defect_type", "category"}``."""
        meta = super().item_meta(index)
        s = self.samples[meta["index"]]
        meta.update(defect_type=s.defect_type, category=s.category)
        return meta

    @cached_property
    def _fingerprint(self) -> str:
        masks = [s.mask_path for s in self.samples if s.mask_path is not None]
        table = "\n".join(f"{s.label}|{s.defect_type}|{s.category}|{s.mask_path}" for s in self.samples)
        return stable_hash(
            {
                "kind": self.kind,
                "split": self.split,
                "root": str(self.root.resolve()),
                "files": files_fingerprint(self.paths),
                "masks": files_fingerprint(masks),
                "samples": hashlib.sha256(table.encode()).hexdigest()[:16],
            }
        )

    def fingerprint(self) -> str:
        """The images' and masks' paths, sizes, mtimes and ctimes, and each image's label, type, category."""
        return self._fingerprint
