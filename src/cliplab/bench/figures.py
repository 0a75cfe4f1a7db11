"""Shared look of the report's figures: matplotlib style, figure sizes, display names of methods.

Figures are drawn at a fixed width per layout so that text renders at the same size in every figure:
``HALF`` figures sit two per row (about 520 CSS px each), ``WIDE`` ones span the section (about 1080 px).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

#: figure sizes in inches (width, height) per layout
HALF = (5.6, 4.2)
WIDE_WIDTH = 11.2

#: method and estimator names as written in papers
NAMES = {
    "zeroshot": "zero-shot",
    "tip_adapter": "Tip-Adapter",
    "tip_adapter_f": "Tip-Adapter-F",
    "gda": "GDA",
    "linear_probe": "linear probe",
    "clip_adapter": "CLIP-Adapter",
    "lp++": "LP++",
    "amu": "AMU",
    "msp": "MSP",
    "max_logit": "MaxLogit",
    "energy": "Energy",
    "mcm": "MCM",
    "neglabel": "NegLabel",
    "knn": "KNN",
    "vim": "ViM",
    "mahalanobis": "Mahalanobis",
    "logit_norm": "logit norm",
    "average_confidence": "average confidence",
    "doc": "DoC",
    "atc": "ATC",
    "atc_entropy": "ATC (entropy)",
    "mano": "MaNo",
    "nuclear_norm": "nuclear norm",
    "shape_colour": "shape + colour",
}


def name(key: str) -> str:
    """The display name of a method, estimator or task key (the key itself when unknown)."""
    return NAMES.get(key, key.replace("_", " "))


def task_label(task: str | None, style: str | None = None) -> str:
    """How cards and titles name a stage's task: ``shape task``, ``shape task (outline style)``; the task of
    data other than the built-in world (``classes``) is ``all classes`` (the data are named beside it)."""
    if not task:
        return "its test set"
    if task == "classes":
        return "all classes"
    return f"{name(task)} task" + (f" ({style} style)" if style and style != "solid" else "")


def task_title(task: str | None, results: dict[str, Any], style: str | None = None) -> str:
    """:func:`task_label` for a section's titles, with the data named where the task is its classes."""
    if task == "classes":
        return f"classes ({data_label(results)})"
    return task_label(task, style)


def data_label(results: dict[str, Any]) -> str:
    """The run's data for cards and titles: its kind and name (``built-in world``, ``webdataset wds_cifar10``,
    ``class folder pets``); ``data.kind`` of results.json, or the kind derived from the spec for older files."""
    from pathlib import PurePath

    from cliplab.bench.data_kinds import data_kind
    from cliplab.data.spec import DataSpec

    data = results.get("data") or {}
    spec = str(data.get("spec", ""))
    kind = data.get("kind") or data_kind(spec)
    if kind == "built-in world":
        return kind
    try:
        target = DataSpec.parse(spec).target or spec
    except ValueError:
        target = spec
    short = PurePath(target.rstrip("/")).name or target
    return f"{kind} {short}".strip()


#: a qualitative palette (Okabe–Ito, colour-blind safe) extended with greys
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D1F", "#7F7F7F", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h"]


#: how the report writes a number that is missing or not a number (``None`` in results.json, NaN in memory)
MISSING = "–"


def finite(value: Any) -> bool:
    """Whether ``value`` is a real, finite number (``None``, NaN, ±inf, bools and strings are not)."""
    is_number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    return is_number and math.isfinite(value)


def fmt(value: Any, spec: str = ".3f") -> str:
    """``format(value, spec)`` for a finite number, else ``MISSING`` (Spearman ρ of constant data is NaN → None)."""
    return format(value, spec) if finite(value) else MISSING


def number(value: Any) -> Any:
    """``value`` with NaN/±inf turned into ``None`` (which tables and cards print as a dash); others unchanged."""
    return None if isinstance(value, float | np.floating) and not math.isfinite(value) else value


def numbers(row: Sequence[Any]) -> list[Any]:
    """A table row with every non-finite float turned into ``None``."""
    return [number(v) for v in row]


def floats(values: Iterable[Any]) -> np.ndarray:
    """A float array for plotting: ``None`` (a NaN saved to JSON) back to NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def rank(value: Any) -> float:
    """A sort key for "best" (``max``): missing or NaN values rank last."""
    return float(value) if finite(value) else -math.inf


def finite_range(*values: Any) -> tuple[float, float] | None:
    """``(min, max)`` over the finite entries of float arrays or numbers, or None when there are none."""
    pooled = np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in values])
    pooled = pooled[np.isfinite(pooled)]
    return (float(pooled.min()), float(pooled.max())) if pooled.size else None


def builtin_world(results: dict[str, Any]) -> bool:
    """Whether the run used the built-in shapes world (the bench data kind's test, on ``results.json``)."""
    from cliplab.bench.data_kinds import is_builtin_world

    return is_builtin_world(results["data"]["spec"])


def plt() -> Any:
    """pyplot with the report style (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    from cycler import cycler

    pyplot.rcParams.update(
        {
            "figure.dpi": 110,
            "figure.facecolor": "white",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "axes.titlesize": 11.5,
            "axes.titleweight": "bold",
            "axes.labelsize": 11,
            "axes.prop_cycle": cycler(color=PALETTE),
            "grid.alpha": 0.3,
            "font.size": 10.5,
            "xtick.labelsize": 10,
            "ytick.labelsize": 10,
            "legend.fontsize": 9.5,
            "legend.framealpha": 0.92,
            "lines.linewidth": 1.8,
        }
    )
    return pyplot
