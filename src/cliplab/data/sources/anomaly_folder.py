"""``anomaly-folder:<root>[:split=test,test_fraction=0.5,category=<name>]``: a plain folder of inspection images.

What a factory has, in MVTec AD's naming:

```
<root>/good/*.png                   normal images
<root>/<defect_type>/*.png          anomalous images, one folder per defect type
<root>/masks/<defect_type>/<name>.png or <name>_mask.png   optional ground-truth masks (nonzero = defect)
```

There is one pool of normal images, so the splits divide it: ``split=test`` holds every anomalous image and
a ``test_fraction`` (default 0.5) of the normal ones, spread evenly over their sorted names (normal image
``k`` of ``n`` is a test image when ``floor((k+1)·f) > floor(k·f)``); ``split=train`` the other normal ones
(the few-shot references). With ``masks/``, every anomalous image needs its mask (a missing one is an
error naming the file); without it the data has no masks (``has_masks`` False). ``category`` (default: the
folder's name) is the object's name, used in prompts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from cliplab.data.anomaly_files import ANOMALY_SPLITS, NORMAL, AnomalyFiles, AnomalySample, image_files
from cliplab.data.folders import IMAGE_EXTENSIONS
from cliplab.data.registry import register_data_source

MASKS = "masks"


def _check_layout(root: Path, test_fraction: Any) -> list[str]:
    """The defect-type folders of ``root``; raises for a missing root or ``good/``, or a bad fraction."""
    if not root.is_dir():
        raise FileNotFoundError(f"anomaly folder not found: {root}")
    if not (root / NORMAL).is_dir():
        raise ValueError(f"{root} has no {NORMAL}/ folder of normal images (expected <root>/good/, <root>/<defect>/)")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")
    return sorted(
        e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".") and e.name not in (NORMAL, MASKS)
    )


def _mask_for(folder: Path, image: Path) -> Path:
    """``<folder>/<stem><ext>`` or ``<folder>/<stem>_mask<ext>`` (the first present; else the ``_mask.png`` one)."""
    for stem in (image.stem, f"{image.stem}_mask"):
        for ext in (".png", *IMAGE_EXTENSIONS):
            candidate = folder / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
    return folder / f"{image.stem}_mask.png"


def is_test_normal(k: int, fraction: float) -> bool:
    """Whether normal image ``k`` (sorted) is held out for the test split: an even spread of ``fraction``."""
    return math.floor((k + 1) * fraction) > math.floor(k * fraction)


def load(
    target: str, split: str | None = "test", *, test_fraction: float = 0.5, category: str | None = None
) -> AnomalyFiles:
    """The plain layout (see the module docstring)."""
    root = Path(target)
    defects = _check_layout(root, test_fraction)
    split = split or "test"
    name = str(category) if category is not None else (root.resolve().name or "object")
    normals = image_files(root / NORMAL)
    held = [is_test_normal(k, float(test_fraction)) for k in range(len(normals))]
    samples = [AnomalySample(p, 0, NORMAL, name) for p, h in zip(normals, held) if h == (split == "test")]
    has_masks = (root / MASKS).is_dir()
    if split == "test":
        for defect in defects:
            for p in image_files(root / defect):
                mask = _mask_for(root / MASKS / defect, p) if has_masks else None
                samples.append(AnomalySample(p, 1, defect, name, mask))
    return AnomalyFiles(
        root, samples, name=f"anomaly-folder-{name}-{split}", split=split, kind="anomaly-folder", has_masks=has_masks
    )


def check(target: str, split: str | None = "test", *, spec: str, test_fraction: float = 0.5, **_: Any) -> None:
    """The root has ``good/`` and the fraction is valid (no image is read)."""
    try:
        _check_layout(Path(target), test_fraction)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"dataset {spec!r}: {err}") from err


register_data_source(
    "anomaly-folder",
    load,
    splits=ANOMALY_SPLITS,
    check=check,
    description="anomaly-folder:<root>[:split=train|test,test_fraction=0.5] (good/ + one folder per defect type"
    " + optional masks/<type>/)",
)
