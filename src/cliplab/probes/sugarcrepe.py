"""SugarCrepe (Hsieh et al., NeurIPS 2023 Datasets & Benchmarks): 7 hard-negative types over COCO val2017.

Data: the JSON files of https://github.com/RAIVNLab/sugar-crepe (``data/``: ``add_att``, ``add_obj`` (``add_ent``
in some revisions), ``replace_att``, ``replace_obj`` (``replace_ent``), ``replace_rel``, ``swap_att``, ``swap_obj``
(``swap_ent``)), each ``{"<id>": {"filename": "000000xxxxxx.jpg", "caption": ..., "negative_caption": ...}}``,
and the COCO 2017 validation images (http://images.cocodataset.org/zips/val2017.zip). Metric (the paper's): per
type, the share of images whose true caption scores higher than the negative.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cliplab.probes.base import ProbeImages, SelectionProbe, check_images, read_json, require_keys

#: the seven types, and the file names each may have
SUGARCREPE_TYPES: dict[str, tuple[str, ...]] = {
    "add_obj": ("add_obj", "add_ent"),
    "add_att": ("add_att",),
    "replace_obj": ("replace_obj", "replace_ent"),
    "replace_att": ("replace_att",),
    "replace_rel": ("replace_rel",),
    "swap_obj": ("swap_obj", "swap_ent"),
    "swap_att": ("swap_att",),
}


def load_sugarcrepe(root: str | os.PathLike, images: str | os.PathLike | None = None) -> SelectionProbe:
    """The SugarCrepe types found in ``root`` (at least one); images from ``images`` (default ``root/val2017``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"SugarCrepe folder not found: {root}")
    image_root = Path(images).expanduser() if images else root / "val2017"
    paths: dict[str, int] = {}
    image_index, captions, kinds = [], [], []
    found = []
    for kind, names in SUGARCREPE_TYPES.items():
        file = next((root / f"{n}.json" for n in names if (root / f"{n}.json").is_file()), None)
        if file is None:
            continue
        found.append(kind)
        data = read_json(file)
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected an object of items keyed by id, got {type(data).__name__}")
        for key, row in data.items():
            require_keys(row, ("filename", "caption", "negative_caption"), f"{file}: item {key!r}")
            path = str(image_root / row["filename"])
            image_index.append(paths.setdefault(path, len(paths)))
            captions.append([str(row["caption"]), str(row["negative_caption"])])
            kinds.append(kind)
    if not found:
        expected = ", ".join(f"{n[0]}.json" for n in SUGARCREPE_TYPES.values())
        raise FileNotFoundError(f"no SugarCrepe file in {root} (expected some of {expected})")
    files = [Path(p) for p in paths]
    check_images(files, root)
    rows = np.asarray(image_index, dtype=np.int64)
    return SelectionProbe("sugarcrepe", ProbeImages(files, name="sugarcrepe"), rows, captions, kinds,
                          info={"types": found})  # fmt: skip
