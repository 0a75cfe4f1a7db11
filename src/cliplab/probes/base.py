"""Probe sets: image–caption *selection* items (SugarCrepe, ARO, built-in) and Winoground's 2×2 *pairs*."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cliplab.data.base import Dataset, files_fingerprint, stable_hash
from cliplab.imaging.decoding import decode_image


class ProbeImages(Dataset):
    """Image files (optionally cropped to a box ``(x, y, w, h)``, as ARO crops Visual Genome) as a cliplab Dataset."""

    def __init__(self, paths: Sequence[str | os.PathLike], boxes: Sequence[Sequence[float] | None] | None = None,
                 *, name: str = "probe-images"):  # fmt: skip
        self.paths = [Path(p) for p in paths]
        self.boxes = list(boxes) if boxes is not None else [None] * len(self.paths)
        if len(self.boxes) != len(self.paths):
            raise ValueError(f"{len(self.paths)} images but {len(self.boxes)} boxes")
        self.name = name

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Image.Image:
        i = self._position(index)
        image = decode_image(self.paths[i])  # errors name the file; pixel bombs refused before decoding
        box = self.boxes[i]
        if box is not None:
            x, y, w, h = (float(v) for v in box)
            image = image.crop((x, y, x + w, y + h))
        return image

    def fingerprint(self) -> str:
        files = files_fingerprint([p.resolve() for p in self.paths])  # size, mtime and ctime of each
        return stable_hash({"kind": "probe_images", "files": files, "boxes": self.boxes})


def check_images(paths: Sequence[Path], where: Path | str) -> None:
    """A FileNotFoundError naming the first missing images (and the annotation file that lists them)."""
    missing = sorted({str(p) for p in paths if not p.is_file()})
    if missing:
        raise FileNotFoundError(f"{len(missing)} image file(s) named in {where} do not exist, e.g. {missing[:3]}")


def read_json(path: Path) -> Any:
    """A JSON file, with errors naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from err


def require_keys(row: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")


@dataclass
class SelectionProbe:
    """Items of one image and several captions, the first true: correct when the true caption scores highest.

    ``image_index[m]``: the image (in ``images``) of item ``m``; ``captions[m]``: ``[true, negative, ...]``;
    ``kinds[m]``: the negative type (SugarCrepe type, ARO relation, built-in type) the metrics group by.
    """

    name: str
    images: Dataset
    image_index: np.ndarray
    captions: list[list[str]]
    kinds: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_index = np.asarray(self.image_index, dtype=np.int64)
        n = len(self.captions)
        if self.image_index.shape != (n,) or len(self.kinds) != n:
            raise ValueError(
                f"probe {self.name!r}: {n} items but {self.image_index.size} images, {len(self.kinds)} kinds"
            )
        if any(len(c) < 2 for c in self.captions):
            raise ValueError(f"probe {self.name!r}: every item needs a true caption and at least one negative")

    def __len__(self) -> int:
        return len(self.captions)


@dataclass
class PairProbe:
    """Winoground items: two images and two captions, caption ``j`` belongs to image ``j``.

    ``image_index[m] = (i0, i1)`` into ``images``; ``captions[m] = (c0, c1)``; ``tags[m]``: the item's tag.
    """

    name: str
    images: Dataset
    image_index: np.ndarray
    captions: list[tuple[str, str]]
    tags: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_index = np.asarray(self.image_index, dtype=np.int64).reshape(-1, 2)
        if len(self.image_index) != len(self.captions) or len(self.tags) != len(self.captions):
            raise ValueError(f"probe {self.name!r}: image pairs, caption pairs and tags differ in number")

    def __len__(self) -> int:
        return len(self.captions)
