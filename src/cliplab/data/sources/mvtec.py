"""``mvtec:<root>[:category=bottle,split=test]``: MVTec AD (Bergmann et al., CVPR 2019) in its released layout.

```
<root>/<category>/train/good/*.png                      normal training images
<root>/<category>/test/good/*.png                       normal test images (no mask: all normal)
<root>/<category>/test/<defect_type>/<name>.png         anomalous test images
<root>/<category>/ground_truth/<defect_type>/<name>_mask.png
```

A category is a folder of ``<root>`` with a ``train/`` or ``test/`` folder; without ``category`` every one
is read (each image keeps its own ``category``). ``split=train`` is the normal images only. A category's
own folder given as the root (``mvtec:/data/mvtec/bottle``) reads that category.
Returns an ``AnomalyFiles`` (``cliplab.data.anomaly_files``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cliplab.data.anomaly_files import (
    ANOMALY_SPLITS,
    NORMAL,
    AnomalyFiles,
    AnomalySample,
    choose_categories,
    image_files,
)
from cliplab.data.registry import register_data_source


def mvtec_categories(root: Path) -> list[str]:
    """The categories under ``root``: folders holding ``train/`` or ``test/``, sorted."""
    if not root.is_dir():
        raise FileNotFoundError(f"MVTec AD folder not found: {root}")
    return sorted(
        e.name
        for e in os.scandir(root)
        if e.is_dir() and not e.name.startswith(".") and any(os.path.isdir(Path(e.path) / s) for s in ANOMALY_SPLITS)
    )


def _subfolders(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def mvtec_samples(root: Path, category: str, split: str) -> list[AnomalySample]:
    """One category's images of ``split``, normal first, then each defect type (sorted)."""
    base = root / category
    if split == "train":
        return [AnomalySample(p, 0, NORMAL, category) for p in image_files(base / "train" / NORMAL)]
    samples: list[AnomalySample] = []
    for defect in sorted(_subfolders(base / "test"), key=lambda d: (d != NORMAL, d)):
        for p in image_files(base / "test" / defect):
            if defect == NORMAL:
                samples.append(AnomalySample(p, 0, NORMAL, category))
            else:
                mask = base / "ground_truth" / defect / f"{p.stem}_mask.png"
                samples.append(AnomalySample(p, 1, defect, category, mask))
    return samples


def _category_root(root: Path, category: str | None) -> tuple[Path, str | None]:
    """``<root>/<category>`` given as the root (it holds ``train/`` or ``test/``): its parent and its name."""
    if any((root / s).is_dir() for s in ANOMALY_SPLITS) and category in (None, root.name):
        return root.parent, root.name
    return root, category


def load(target: str, split: str | None = "test", *, category: str | None = None) -> AnomalyFiles:
    """MVTec AD (one category, or all); see the module docstring."""
    root, category = _category_root(Path(target), category)
    chosen = choose_categories(root, mvtec_categories(root), category, "MVTec AD")
    split = split or "test"
    samples = [s for c in chosen for s in mvtec_samples(root, c, split)]
    name = f"mvtec-{category or 'all'}-{split}"
    return AnomalyFiles(root, samples, name=name, split=split, kind="mvtec")


def check(target: str, split: str | None = "test", *, spec: str, category: str | None = None, **_: Any) -> None:
    """The root exists and the category is one of its folders (no image is read)."""
    root, category = _category_root(Path(target), category)
    try:
        choose_categories(root, mvtec_categories(root), category, "MVTec AD")
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"dataset {spec!r}: {err}") from err


register_data_source(
    "mvtec",
    load,
    splits=ANOMALY_SPLITS,
    check=check,
    description="mvtec:<root>[:category=bottle,split=train|test] (MVTec AD with ground-truth masks)",
)
