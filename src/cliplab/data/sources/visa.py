"""``visa:<root>[:category=candle,split=test]``: VisA (Zou et al., ECCV 2022) in its released layout.

```
<root>/split_csv/1cls.csv            columns object,split,label,image,mask (label normal|anomaly;
                                     image and mask paths relative to <root>; mask empty for normal)
<root>/<category>/Data/Images/{Normal,Anomaly}/*.JPG
<root>/<category>/Data/Masks/Anomaly/*.png       nonzero = defect
<root>/<category>/image_anno.csv     optional: columns image,label,mask; ``label`` names the defect
```

This is the layout of ``VisA_20220922.tar`` with the one-class split file of the VisA repository
(github.com/amazon-science/spot-diff, ``split_csv/1cls.csv``) placed under ``<root>/split_csv/``. The
``defect_type`` of an anomalous image is its ``label`` in ``<category>/image_anno.csv`` when that file is
there, else ``anomaly``; a normal image's is ``good``. ``split=train`` is the normal images only.
"""

from __future__ import annotations

import csv
import re
from functools import cache
from pathlib import Path
from typing import Any

from cliplab.data.anomaly_files import ANOMALY_SPLITS, NORMAL, AnomalyFiles, AnomalySample, choose_categories
from cliplab.data.registry import register_data_source

SPLIT_FILE = Path("split_csv") / "1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")


def split_rows(root: Path) -> list[dict[str, str]]:
    """The rows of ``<root>/split_csv/1cls.csv`` (its columns checked)."""
    path = root / SPLIT_FILE
    if not root.is_dir():
        raise FileNotFoundError(f"VisA folder not found: {root}")
    if not path.is_file():
        raise FileNotFoundError(
            f"VisA split file not found: {path} (copy split_csv/1cls.csv of github.com/amazon-science/spot-diff there)"
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
        rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    bad = [r for r in rows if r["label"] not in ("normal", "anomaly") or r["split"] not in ANOMALY_SPLITS]
    if bad:
        raise ValueError(f"{path}: row {bad[0]} has a label other than normal/anomaly or a split other than train/test")
    return rows


def _defect_name(label: str) -> str:
    """``"melt, scratch"`` → ``"melt+scratch"``; spaces become underscores."""
    return re.sub(r"\s*,\s*", "+", (label or "").strip()).replace(" ", "_")


@cache
def _defect_names(anno: Path, stamp: float) -> dict[str, str]:
    if not anno.is_file():
        return {}
    with open(anno, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"image", "label"} <= set(reader.fieldnames or []):
            return {}
        return {row["image"].strip(): _defect_name(row["label"]) for row in reader}


def defect_names(root: Path, category: str) -> dict[str, str]:
    """``image path → defect name`` from ``<root>/<category>/image_anno.csv`` ({} without it)."""
    anno = root / category / "image_anno.csv"
    return _defect_names(anno, anno.stat().st_mtime if anno.is_file() else 0.0)


def load(target: str, split: str | None = "test", *, category: str | None = None) -> AnomalyFiles:
    """VisA (one category, or all); see the module docstring."""
    root = Path(target)
    rows = split_rows(root)
    present = sorted({r["object"] for r in rows})
    chosen = set(choose_categories(root, present, category, "VisA"))
    split = split or "test"
    samples: list[AnomalySample] = []
    names: dict[str, dict[str, str]] = {}
    for r in rows:
        if r["object"] not in chosen or r["split"] != split:
            continue
        path = root / r["image"]
        if not path.is_file():
            raise ValueError(f"VisA: image {path} listed in {root / SPLIT_FILE} not found")
        if r["label"] == "normal":
            samples.append(AnomalySample(path, 0, NORMAL, r["object"]))
        else:
            if r["object"] not in names:
                names[r["object"]] = defect_names(root, r["object"])
            defect = names[r["object"]].get(r["image"], "anomaly") or "anomaly"
            mask = root / r["mask"] if r["mask"] else None
            samples.append(AnomalySample(path, 1, defect, r["object"], mask))
    samples.sort(key=lambda s: (s.category, s.label, s.path))
    return AnomalyFiles(root, samples, name=f"visa-{category or 'all'}-{split}", split=split, kind="visa")


def check(target: str, split: str | None = "test", *, spec: str, category: str | None = None, **_: Any) -> None:
    """The split file is there, its columns right, and the category in it (no image is read)."""
    root = Path(target)
    try:
        rows = split_rows(root)
        choose_categories(root, sorted({r["object"] for r in rows}), category, "VisA")
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"dataset {spec!r}: {err}") from err


register_data_source(
    "visa",
    load,
    splits=ANOMALY_SPLITS,
    check=check,
    description="visa:<root>[:category=candle,split=train|test] (VisA with split_csv/1cls.csv and masks)",
)
