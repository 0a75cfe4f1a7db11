"""Winoground (Thrush et al., CVPR 2022): 400 items of two images and two captions with the same words.

Data: the Hugging Face dataset ``facebook/winoground`` (gated; accept its terms, then download): its
``data/examples.jsonl`` (rows ``{"id", "caption_0", "caption_1", "image_0", "image_1", "tag", ...}``, images named
without extension) and ``data/images/<name>.png``. ``root`` may be the repository or its ``data`` folder.
Metrics (the paper's, with ``s(c, i)`` the model's score): text score — ``s(c0, i0) > s(c1, i0)`` and
``s(c1, i1) > s(c0, i1)``; image score — ``s(c0, i0) > s(c0, i1)`` and ``s(c1, i1) > s(c1, i0)``; group score —
both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cliplab.probes.base import PairProbe, ProbeImages, check_images, require_keys


def _find_image(folder: Path, name: str) -> Path:
    for suffix in ("", ".png", ".jpg", ".jpeg"):
        p = folder / f"{name}{suffix}"
        if p.is_file():
            return p
    return folder / f"{name}.png"


def load_winoground(root: str | os.PathLike) -> PairProbe:
    """Winoground from ``root`` (``examples.jsonl`` and ``images/``, or the same under ``root/data``)."""
    root = Path(root).expanduser()
    base = root / "data" if (root / "data" / "examples.jsonl").is_file() else root
    file = base / "examples.jsonl"
    if not file.is_file():
        raise FileNotFoundError(f"Winoground annotations not found: {file} (nor {root / 'data' / 'examples.jsonl'})")
    paths: dict[Path, int] = {}
    pairs, captions, tags = [], [], []
    with open(file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{file}:{lineno}: invalid JSON ({err.msg})") from err
            require_keys(row, ("caption_0", "caption_1", "image_0", "image_1"), f"{file}:{lineno}")
            ids = [
                paths.setdefault(_find_image(base / "images", str(row[k])), len(paths)) for k in ("image_0", "image_1")
            ]
            pairs.append(ids)
            captions.append((str(row["caption_0"]), str(row["caption_1"])))
            tags.append(str(row.get("collapsed_tag") or row.get("tag") or ""))
    if not captions:
        raise ValueError(f"{file} contains no items")
    files = list(paths)
    check_images(files, file)
    rows = np.asarray(pairs, dtype=np.int64)
    return PairProbe("winoground", ProbeImages(files, name="winoground"), rows, captions, tags)
