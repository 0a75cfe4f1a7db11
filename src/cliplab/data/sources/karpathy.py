"""``karpathy:<dataset_coco.json | dataset_flickr30k.json>[:root=<image dir>,split=test]``: retrieval splits.

Karpathy's split files (from his *neuraltalk2* / "Deep Visual-Semantic Alignments" release) list
``images[*]`` with ``split`` (``train``, ``val``, ``test``, and COCO's ``restval``), ``filename``, COCO's
``filepath`` (``val2014`` / ``train2014``) and ``sentences[*].raw``. The result is a caption dataset
(``captions`` flattened in file order, ``text_to_image``), what ``cliplab retrieve`` and the bench's retrieval
stage read: the standard test splits are COCO 5k (25,010 captions) and Flickr30k 1k (5,000 captions).

Images are ``<root>/<filepath>/<filename>`` (``<root>/<filename>`` when there is no ``filepath``); ``root``
defaults to the JSON file's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cliplab.data.base import files_fingerprint, stable_hash
from cliplab.data.folders import CaptionFileDataset
from cliplab.data.registry import register_data_source

SPLITS = ("train", "val", "test", "restval")


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"Karpathy split file not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    images = raw.get("images") if isinstance(raw, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{path}: a Karpathy split file is an object with an 'images' list")
    return images


class KarpathyCaptions(CaptionFileDataset):
    """One split of a Karpathy split file as image–captions pairs (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "test",
        *,
        root: str | os.PathLike | None = None,
        check_files: bool = True,
    ):
        self.path = Path(path).expanduser()
        self.root = Path(root).expanduser() if root is not None else self.path.parent
        self.split = split
        images = _read(self.path)
        self.paths: list[Path] = []
        captions: list[str] = []
        t2i: list[int] = []
        for n, image in enumerate(images):
            if not isinstance(image, dict) or "filename" not in image or "split" not in image:
                raise ValueError(f"{self.path}: images[{n}] has no 'filename' or 'split'")
            if image["split"] != split:
                continue
            sentences = [s.get("raw", "").strip() for s in image.get("sentences", []) if isinstance(s, dict)]
            sentences = [s for s in sentences if s]
            if not sentences:
                raise ValueError(f"{self.path}: images[{n}] ({image['filename']}) has no sentences[*].raw captions")
            self.paths.append(self.root / image.get("filepath", "") / image["filename"])
            captions.extend(sentences)
            t2i.extend([len(self.paths) - 1] * len(sentences))
        if not self.paths:
            found = sorted({str(i.get("split")) for i in images if isinstance(i, dict)})
            raise ValueError(f"{self.path}: no images in split {split!r} (splits in the file: {', '.join(found)})")
        if check_files:
            missing = [str(p) for p in self.paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} of the {len(self.paths)} {split} images named in {self.path} do not exist "
                    f"under root {self.root}, e.g. {missing[:3]} (set root= to the image folder)"
                )
        self._captions = captions
        self._t2i = np.asarray(t2i, dtype=np.int64)
        self.name = f"{self.path.stem}/{split}"

    @cached_property
    def _fingerprint(self) -> str:
        return stable_hash(
            {
                "kind": "karpathy",
                "file": files_fingerprint([self.path]),
                "split": self.split,
                "images": files_fingerprint(self.paths),
                "captions": hashlib.sha256("\n".join(self._captions).encode()).hexdigest()[:16],
                "t2i": hashlib.sha256(self._t2i.tobytes()).hexdigest()[:16],
            }
        )

    def fingerprint(self) -> str:
        return self._fingerprint


def load(
    target: str, split: str | None = "test", *, root: str | None = None, check_files: bool = True
) -> KarpathyCaptions:
    """A split of a Karpathy split file (see the module docstring)."""
    return KarpathyCaptions(target, split or "test", root=None if root is None else str(root), check_files=check_files)


def check(target: str, split: str | None = "test", *, spec: str, root: str | None = None, **options: Any) -> None:
    """The split file and the image root exist (the file is not parsed)."""
    if not os.path.isfile(target):
        raise FileNotFoundError(f"dataset {spec!r}: Karpathy split file not found: {target}")
    if root is not None and not os.path.isdir(os.path.expanduser(str(root))):
        raise FileNotFoundError(f"dataset {spec!r}: image root not found: {root}")


KARPATHY_FILE = re.compile(r"^dataset_(coco|flickr8k|flickr30k)\.json$")


def detect(path: str) -> bool:
    """A bare ``dataset_coco.json`` / ``dataset_flickr30k.json`` / ``dataset_flickr8k.json`` is Karpathy's."""
    return os.path.isfile(path) and bool(KARPATHY_FILE.match(os.path.basename(path)))


register_data_source(
    "karpathy",
    load,
    detect=detect,
    splits=SPLITS,
    check=check,
    description="karpathy:<dataset_coco.json | dataset_flickr30k.json>[:root=<image dir>,split=test] (retrieval)",
)
