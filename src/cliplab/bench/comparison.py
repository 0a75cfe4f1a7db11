"""``cliplab bench --compare A.json B.json [C.json ...]``: the metrics of runs side by side (each registered
stage's ``Stage.metrics``). Two runs: each difference B − A marked better or worse by the metric's
``higher_is_better``; more runs: the best run of every metric (:func:`compare_runs`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cliplab.bench.figures import finite
from cliplab.bench.stage import STAGES


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """A ``results.json`` (or a run directory holding one); FileNotFoundError / ValueError naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
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
        delta = vb - va if va is not None and vb is not None and finite(va) and finite(vb) else None  # NaN: none
        rows.append([key, va, vb, delta, direction(delta, higher[key])])
    return rows


def best_run(values: list[Any], higher_is_better: bool | None) -> int | None:
    """Index of the best finite value (the first on a tie); None without a direction, with fewer than two finite
    values, or when they are all equal."""
    finite_at = [(i, v) for i, v in enumerate(values) if finite(v)]
    if higher_is_better is None or len(finite_at) < 2 or len({v for _, v in finite_at}) == 1:
        return None
    pick = max if higher_is_better else min
    return pick(finite_at, key=lambda iv: iv[1])[0]


def compare_runs(runs: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows ``[metric, value of run 1, ..., value of run N, index of the best run or None]`` over the union of
    every run's metrics, in order of first appearance."""
    if len(runs) < 2:
        raise ValueError(f"comparing needs at least two runs, got {len(runs)}")
    per_run = [metrics(r) for r in runs]
    values = [{k: v for k, v, _ in m} for m in per_run]
    higher = {k: h for m in per_run for k, _, h in m}
    keys = list(dict.fromkeys(k for m in per_run for k, _, _ in m))
    rows = []
    for key in keys:
        row = [v.get(key) for v in values]
        rows.append([key, *row, best_run(row, higher[key])])
    return rows
