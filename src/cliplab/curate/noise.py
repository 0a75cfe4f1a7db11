"""A built-in world caption dataset with injected noise, to measure curation (``write_noisy_world``).

Noise, each at a chosen rate: captions swapped for another image's (``mismatched``), near-duplicate copies of
images (``duplicates``: the same picture with ±2 grey levels of noise, with its captions), an over-represented
concept (``overrepresented``: that share of the images show the ``concept`` shape first), captions of one
meaningless word (``short``), captions in a non-Latin script (``foreign``) and unreadable image files
(``unreadable``). ``noise.json`` beside the caption file records which rows carry which noise.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cliplab._io import write_text_atomic
from cliplab.data.shapes_world import SHAPES, shapes

_FOREIGN = ("красный круг слева.", "一个蓝色的正方形。", "مربع أخضر.", "κόκκινο αστέρι.")


def write_noisy_world(
    root: str | os.PathLike,
    n: int = 600,
    seed: int = 0,
    *,
    mismatched: float = 0.3,
    duplicates: float = 0.2,
    overrepresented: float = 0.5,
    concept: str = "circle",
    short: float = 0.02,
    foreign: float = 0.02,
    unreadable: float = 0.01,
    image_size: int = 32,
    objects: int | str = "mixed",
    progress: bool = False,
) -> Path:
    """Write ``root/captions.csv`` (+ ``images/``, ``noise.json``) with ``n`` distinct train-split images; returns
    the caption file. Rates are shares of images (``duplicates``, ``overrepresented``, ``unreadable``) or of
    captions (``mismatched``, ``short``, ``foreign``)."""
    if concept not in SHAPES:
        raise ValueError(f"concept must be one of the world's shapes {SHAPES}, got {concept!r}")
    for name, v in (("mismatched", mismatched), ("duplicates", duplicates), ("overrepresented", overrepresented),
                    ("short", short), ("foreign", foreign), ("unreadable", unreadable)):  # fmt: skip
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be a share in [0, 1], got {v}")
    rng = np.random.default_rng([seed, 9203])
    pool = shapes("train", n=4 * n, seed=seed, objects=objects, image_size=image_size)
    first = pool.attributes["shape"]
    with_c, without = np.nonzero(first == concept)[0], np.nonzero(first != concept)[0]
    n_c = int(round(overrepresented * n)) if overrepresented > 0 else 0
    n_c = min(max(n_c, 0), with_c.size)
    chosen = np.concatenate([with_c[:n_c], without[: n - n_c]])
    chosen = chosen[rng.permutation(chosen.size)]
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    per_image = pool._item_tables()[1]
    if per_image is None:  # the shapes world always has captions
        raise ValueError("the shapes pool has no captions")
    rows: list[tuple[str, str]] = []
    noise: dict[str, list[int]] = {k: [] for k in ("mismatched", "duplicate", "short", "foreign", "unreadable")}
    files = []
    for k, i in enumerate(tqdm(chosen, disable=not progress, desc="noisy world", unit="img")):
        name = f"images/{k:05d}.png"
        Image.fromarray(pool.render(int(i))).save(root / name)
        files.append((name, int(i)))
    n_dup = int(round(duplicates * len(files)))
    for d, (_, i) in enumerate([files[j] for j in rng.choice(len(files), n_dup, replace=False)]):
        arr = pool.render(i).astype(np.int16) + rng.integers(-2, 3, (image_size, image_size, 3))
        dup = f"images/dup{d:05d}.png"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / dup)
        files.append((dup, -1 - i))  # negative: a copy of pool image i
    bad = set(rng.choice(len(files), int(round(unreadable * len(files))), replace=False).tolist())
    for f, (name, i) in enumerate(files):
        src = -1 - i if i < 0 else i
        for cap in per_image[src]:
            u = rng.random()
            if u < mismatched:
                other = int(rng.integers(0, len(pool)))
                while other == src:
                    other = int(rng.integers(0, len(pool)))
                cap, kind = per_image[other][int(rng.integers(0, len(per_image[other])))], "mismatched"
            elif u < mismatched + short:
                cap, kind = "image", "short"
            elif u < mismatched + short + foreign:
                cap, kind = _FOREIGN[int(rng.integers(0, len(_FOREIGN)))], "foreign"
            else:
                kind = None
            if kind:
                noise[kind].append(len(rows))
            if i < 0:
                noise["duplicate"].append(len(rows))
            if f in bad:
                noise["unreadable"].append(len(rows))
            rows.append((name, cap))
    for f in bad:
        (root / files[f][0]).write_bytes(b"not a png")
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "caption"])
    w.writerows(rows)
    write_text_atomic(root / "captions.csv", buf.getvalue())
    info: dict[str, Any] = {"n_images": len(files), "n_pairs": len(rows), "concept": concept,
                            "concept_images": int(n_c), "rows": noise}  # fmt: skip
    write_text_atomic(root / "noise.json", json.dumps(info, indent=1))
    return root / "captions.csv"
