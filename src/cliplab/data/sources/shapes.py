"""``shapes[:key=value,...]``: the built-in world (``cliplab.data.shapes_world``)."""

from __future__ import annotations

import inspect
from typing import Any

from cliplab.data.registry import register_data_source
from cliplab.data.shapes_world import SPLITS, ShapesDataset, shapes

OPTIONS = tuple(p for p in inspect.signature(shapes).parameters if p != "split")


def load(target: str, split: str | None = "test", **options: Any) -> ShapesDataset:
    """The shapes world with ``options`` (``shapes`` takes no target)."""
    return shapes(split=split or "test", **options)


def check(target: str, split: str | None = "test", *, spec: str, **options: Any) -> None:
    """Build the dataset with one image only: every option is validated, nothing is rendered."""
    n = options.get("n", 1)
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        options["n"] = 1  # only the options matter here; one image's attributes are drawn, none rendered
    try:
        shapes(split=split or "test", **options)
    except (ValueError, TypeError) as err:
        raise ValueError(f"dataset spec {spec!r}: {err}") from err


register_data_source(
    "shapes",
    load,
    options=OPTIONS,
    splits=SPLITS,
    target=False,
    check=check,
    description="shapes or builtin:shapes[:key=value,...] (the built-in world, e.g. shapes:task=colour,n=2000)",
)
