"""``cliplab bench --compare A.json B.json``: the metrics of two runs side by side (each registered stage's
``Stage.metrics``), each difference marked better or worse by the metric's ``higher_is_better``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cliplab.bench.stages  # noqa: F401  (registers the built-in stages)
from cliplab.bench.figures import finite
from cliplab.bench.stage import STAGES


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(res, dict) or "schema_version" not in res or "stages" not in res:
        raise ValueError(f"{path} is not a cliplab bench results.json (no schema_version/stages)")
    return res


def metrics(res: dict[str, Any]) -> list[tuple[str, Any, bool | None]]:
    """``(metric, value, higher_is_better)`` of a run: every registered stage's metrics, then the timings."""
    out: list[tuple[str, Any, bool | None]] = []
    for stage_name, stage in STAGES.items():
        if stage_name in res["stages"]:
            out.extend(stage.values(res["stages"][stage_name]))
    out.extend((f"seconds/{k}", v, False) for k, v in res.get("timings", {}).items())
    return out


def headline(res: dict[str, Any]) -> dict[str, float | None]:
    """Flatten a run into comparable ``metric -> value`` rows."""
    return {key: value for key, value, _ in metrics(res)}


def direction(delta: float | None, higher_is_better: bool | None) -> str | None:
    """``better``, ``worse`` or ``same`` for a difference B − A; None when there is no difference or no direction."""
    if delta is None or higher_is_better is None or not finite(delta):
        return None
    if delta == 0:
        return "same"
    return "better" if (delta > 0) == higher_is_better else "worse"


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[metric, A, B, B − A, direction]`` over the union of both runs' metrics; direction is ``better`` or
    ``worse`` (for B against A, by the metric's ``higher_is_better``), ``same``, or None."""
    ma, mb = metrics(a), metrics(b)
    ha, hb = {k: v for k, v, _ in ma}, {k: v for k, v, _ in mb}
    higher = {k: h for k, _, h in [*ma, *mb]}
    rows = []
    for key in list(dict.fromkeys([*ha, *hb])):
        va, vb = ha.get(key), hb.get(key)
        delta = vb - va if finite(va) and finite(vb) else None  # None (or NaN) on either side: no difference
        rows.append([key, va, vb, delta, direction(delta, higher[key])])
    return rows
