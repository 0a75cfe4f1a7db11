"""``imagenet:<dir>[:variant=val|v2|sketch|a|r]``: ImageNet-1k and its variants from their folder layouts.

- ``val`` (ImageNet-1k validation, as ``torchvision``/``valprep.sh`` arrange it) and ``sketch``
  (ImageNet-Sketch's ``sketch/``): one folder per class named by WordNet id (``n01440764/``); the label is the
  class's index among the 1000 (sorted wnids), so a folder holding only some classes keeps the 1000 labels.
- ``v2`` (ImageNetV2, e.g. ``imagenetv2-matched-frequency-format-val/``): folders ``0``..``999`` by class index.
- ``a`` (ImageNet-A) and ``r`` (ImageNet-R): wnid folders of their 200 classes. The dataset has the 200 classes
  (labels ``0..199``, ``classnames`` the 200 names, as CoOp's ImageNetA/ImageNetR do), so zero-shot weights
  built from its ``classnames`` are restricted to the subset, which is the standard evaluation;
  ``class_subset`` gives the subset's indices among the 1000 (``logits_1000[:, ds.class_subset]`` restricts a
  1000-way classifier the same way).

Without ``variant``, numeric class folders mean ``v2`` and wnid folders ``val``. Class names are CLIP's curated
ones and ``templates`` its 80 ImageNet templates (``{c}``), shipped in ``cliplab/data/assets/`` (sources in the
README there). Non-folder entries (ImageNet-A/R's ``README.txt``) and hidden files are ignored.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cliplab.data.base import files_fingerprint, stable_hash
from cliplab.data.folders import IMAGE_EXTENSIONS, ImageFileDataset
from cliplab.data.registry import register_data_source

VARIANTS = ("val", "v2", "sketch", "a", "r")


def _asset_lines(name: str) -> list[str]:
    text = resources.files("cliplab.data").joinpath(f"assets/{name}").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


@cache
def imagenet_classes() -> tuple[list[str], list[str]]:
    """``(wnids, names)`` of the 1000 ImageNet classes in index order (CLIP's curated names)."""
    wnids, names = _asset_lines("imagenet_wnids.txt"), _asset_lines("imagenet_classnames.txt")
    if len(wnids) != 1000 or len(names) != 1000:  # pragma: no cover - shipped data
        raise RuntimeError("cliplab's ImageNet class files are damaged: reinstall cliplab")
    return wnids, names


@cache
def imagenet_templates() -> list[str]:
    """CLIP's 80 ImageNet prompt templates, written with ``{c}``."""
    return _asset_lines("imagenet_templates.txt")


@cache
def imagenet_subset(variant: str) -> list[int]:
    """Indices among the 1000 classes of ImageNet-A (``"a"``) or ImageNet-R (``"r"``), sorted."""
    if variant not in ("a", "r"):
        raise ValueError(f"only ImageNet-A and -R are class subsets, not {variant!r}")
    position = {w: i for i, w in enumerate(imagenet_classes()[0])}
    return [position[w] for w in _asset_lines(f"imagenet_{variant}_wnids.txt")]


def _class_folders(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def guess_variant(folders: list[str]) -> str:
    """``v2`` when every class folder is a number, else ``val``."""
    return "v2" if folders and all(f.isdigit() for f in folders) else "val"


class ImageNetFolder(ImageFileDataset):
    """ImageNet or a variant read from its class folders (see the module docstring).

    ``wnids`` are the dataset's classes (1000, or the 200 of A/R), ``class_subset`` their indices among the
    1000 (None for the full set).
    """

    def __init__(self, root: str | os.PathLike, variant: str | None = None):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageNet folder not found: {self.root}")
        folders = _class_folders(self.root)
        if not folders:
            raise ValueError(f"{self.root} has no class folders (expected <wnid>/ or, for ImageNetV2, 0/..999/)")
        variant = variant or guess_variant(folders)
        if variant not in VARIANTS:
            raise ValueError(f"unknown ImageNet variant {variant!r}; choose from {', '.join(VARIANTS)}")
        self.variant = variant
        all_wnids, all_names = imagenet_classes()
        self.class_subset: np.ndarray | None = None
        classes = list(range(1000))
        if variant in ("a", "r"):
            classes = imagenet_subset(variant)
            self.class_subset = np.asarray(classes, dtype=np.int64)
        self.wnids = [all_wnids[i] for i in classes]
        self.classnames = [all_names[i] for i in classes]
        self.templates = imagenet_templates()
        label_of = {str(i): i for i in range(1000)} if variant == "v2" else {w: i for i, w in enumerate(self.wnids)}
        unknown = [f for f in folders if f not in label_of]
        if unknown:
            expected = {
                "v2": "class indices 0..999",
                "a": "the 200 ImageNet-A WordNet ids",
                "r": "the 200 ImageNet-R WordNet ids",
            }.get(variant, "ImageNet-1k WordNet ids (n01440764, ...)")
            raise ValueError(
                f"{self.root}: class folder(s) {unknown[:5]} are not {expected} (variant={variant}); "
                f"pick the variant matching the data ({', '.join(VARIANTS)})"
            )
        self.paths: list[Path] = []
        labels: list[int] = []
        for folder in folders:
            files = sorted(
                p
                for p in (self.root / folder).rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
            )
            self.paths.extend(files)
            labels.extend([label_of[folder]] * len(files))
        if not self.paths:
            raise ValueError(f"{self.root} contains no image files ({', '.join(IMAGE_EXTENSIONS)})")
        self._labels = np.asarray(labels, dtype=np.int64)
        self.name = f"imagenet-{variant}"

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @cached_property
    def _fingerprint(self) -> str:
        return stable_hash(
            {
                "kind": "imagenet",
                "variant": self.variant,
                "root": str(self.root.resolve()),
                "files": files_fingerprint(self.paths),
                "labels": hashlib.sha256(self._labels.tobytes()).hexdigest()[:16],
                "classnames": hashlib.sha256("\n".join(self.classnames or []).encode()).hexdigest()[:16],
            }
        )

    def fingerprint(self) -> str:
        return self._fingerprint


def load(target: str, split: str | None = None, *, variant: str | None = None) -> ImageNetFolder:
    """``imagenet:<dir>[:variant=...]`` (see the module docstring)."""
    return ImageNetFolder(target, variant)


def check(target: str, split: str | None = None, *, spec: str, variant: str | None = None, **options: Any) -> None:
    """The folder exists and the variant is known (folders are not walked)."""
    if not os.path.isdir(target):
        raise FileNotFoundError(f"dataset {spec!r}: ImageNet folder not found: {target}")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"dataset {spec!r}: unknown ImageNet variant {variant!r}; choose from {', '.join(VARIANTS)}")


register_data_source(
    "imagenet",
    load,
    check=check,
    description="imagenet:<dir>[:variant=val|v2|sketch|a|r] (ImageNet-1k val and its variants, class folders)",
)
