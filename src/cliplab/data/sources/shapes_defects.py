"""``shapes-defects[:key=value,...]``: the built-in world with defects and exact masks (``data.shapes_defects``)."""

from __future__ import annotations

from typing import Any

from cliplab.data.registry import register_data_source
from cliplab.data.shapes_defects import SPLITS, ShapesDefects

OPTIONS = ("n", "seed", "category", "anomaly_rate", "image_size", "defects")


def load(target: str, split: str | None = "test", **options: Any) -> ShapesDefects:
    """``ShapesDefects(split, **options)`` (the scheme takes no target)."""
    return ShapesDefects(split=split or "test", **options)


def check(target: str, split: str | None = "test", *, spec: str, **options: Any) -> None:
    """Every option validated on a one-image dataset (nothing rendered)."""
    n = options.get("n", 1)
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        options["n"] = 1
    try:
        ShapesDefects(split=split or "test", **options)
    except (ValueError, TypeError) as err:
        raise ValueError(f"dataset spec {spec!r}: {err}") from err


register_data_source(
    "shapes-defects",
    load,
    options=OPTIONS,
    splits=SPLITS,
    target=False,
    check=check,
    description="shapes-defects[:split=train|test,n=200,category=circle,defects=scratch+spot,...] "
    "(built-in world with defects and exact masks)",
)
