"""Run a :class:`~cliplab.bench.suite.Suite`: every model × dataset cell, resumable, one leaderboard.

Layout of the output directory::

    DIR/suite.json             the suite, every cell's status (ran, cached, failed) and its error
    DIR/results.csv|md         one row per cell (see ``cliplab.bench.leaderboard``)
    DIR/leaderboard.html       the models × datasets table, linking every cell's report
    DIR/<model>/<data>/        one cell: results.json + report.html (run_bench), or error.json

A cell whose ``results.json`` is complete (it is written atomically, last) and was made with the same settings
(model and data spec, stages, ``n``, seeds, shots, templates, ``--ood-data``: :func:`cell_settings`) is not
run again: its model is not even loaded. A cell that raises is recorded in ``error.json`` and the suite goes
on; a rerun retries it.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cliplab._io import to_jsonable, write_text_atomic
from cliplab.bench.suite import Suite, SuiteData, SuiteModel

#: where a cell's report links to the leaderboard (cells are two levels below it)
LEADERBOARD_LINK = ("Leaderboard", "../../leaderboard.html")


def cell_dir(output_dir: str | os.PathLike, model: SuiteModel, data: SuiteData) -> Path:
    return Path(output_dir) / model.name / data.name


def cell_settings(suite: Suite, model: SuiteModel, data: SuiteData, ood_data: Sequence[str] = ()) -> dict[str, Any]:
    """What makes two runs of a cell the same, as ``results.json`` records it."""
    from cliplab.bench.runner import templates_key

    return {
        "model": model.spec,
        "data": data.spec,
        "stages": suite.stages_of(data),
        "n": suite.n,
        "seeds": list(suite.seeds),
        "shots": list(suite.shots),
        "templates": templates_key(data.templates),
        "ood": [str(o) for o in ood_data],
    }


def recorded_settings(results: dict[str, Any]) -> dict[str, Any]:
    """The :func:`cell_settings` a ``results.json`` was made with."""
    config, data = results.get("config", {}), results.get("data", {})
    return {
        "model": results.get("model", {}).get("spec"),
        "data": data.get("spec"),
        "stages": config.get("stages"),
        "n": data.get("n"),
        "seeds": config.get("seeds"),
        "shots": config.get("shots"),
        "templates": config.get("templates"),
        "ood": data.get("ood"),
    }


def finished(directory: str | os.PathLike, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The cell's results when ``directory/results.json`` is complete and matches ``settings``, else None."""
    path = Path(directory) / "results.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(results, dict) or "total" not in results.get("timings", {}):
        return None
    return results if recorded_settings(results) == to_jsonable(settings) else None


def _record_failure(directory: Path, err: BaseException, settings: dict[str, Any]) -> str:
    message = f"{type(err).__name__}: {err}"
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"error": message, "settings": settings, "traceback": traceback.format_exc()}
    write_text_atomic(directory / "error.json", json.dumps(to_jsonable(payload), indent=2))
    first = message.strip().splitlines()[0] if message.strip() else message
    return first if len(first) <= 300 else first[:299] + "…"  # tables get one line; error.json has it all


def run_suite(
    suite: Suite,
    output_dir: str | os.PathLike,
    *,
    batch_size: int = 64,
    cache_dir: Any = None,
    device: Any = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    ood_data: Sequence[str] = (),
    load_model: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Run every cell not finished yet (see the module docstring); write the leaderboard; return ``suite.json``.

    ``load_model(spec, device=...)`` defaults to :func:`cliplab.models.load_model`; each model is loaded once,
    when its first unfinished cell runs. Returns ``{"suite", "cells": [{"model", "data", "dir", "status",
    "error"?}], "files"}``.
    """
    from cliplab.bench.leaderboard import write_leaderboard
    from cliplab.bench.runner import run_bench

    if load_model is None:
        from cliplab.models import load_model as load_model_default

        load_model = load_model_default
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: None)
    cells: list[dict[str, Any]] = []
    results_of: dict[tuple[str, str], dict[str, Any]] = {}
    total = len(suite.models) * len(suite.datasets)
    for model in suite.models:
        loaded: Any = None
        load_error: BaseException | None = None
        load_seconds: float | None = None
        for data in suite.datasets:
            where = cell_dir(out, model, data)
            settings = cell_settings(suite, model, data, ood_data)
            cell = {"model": model.name, "data": data.name, "dir": str(where.relative_to(out))}
            cell.update(model_spec=model.spec, data_spec=data.spec)
            prefix = f"[suite {len(cells) + 1}/{total}] {model.name} × {data.name}"
            done = finished(where, settings)
            if done is not None:
                say(f"{prefix}: finished before, skipped")
                cells.append({**cell, "status": "cached"})
                results_of[(model.name, data.name)] = done
                continue
            try:
                if load_error is not None:
                    raise load_error
                if loaded is None:
                    say(f"[suite] loading model {model.spec}")
                    t0 = time.perf_counter()
                    try:
                        loaded = load_model(model.spec, device=device)
                    except Exception as err:
                        load_error = err
                        raise
                    load_seconds = time.perf_counter() - t0
                say(f"{prefix} ...")
                res = run_bench(
                    loaded,
                    data.spec,
                    where,
                    only=suite.stages_of(data),
                    n=suite.n,
                    batch_size=batch_size,
                    cache_dir=cache_dir,
                    progress=progress,
                    log=log,
                    seeds=suite.seeds,
                    shots=suite.shots,
                    ood_data=ood_data,
                    load_seconds=load_seconds,
                    templates=data.templates,
                    links=[LEADERBOARD_LINK],
                    progress_title=prefix,
                )
                load_seconds = None  # counted in the first cell that loaded the model
                (where / "error.json").unlink(missing_ok=True)
                cells.append({**cell, "status": "ran"})
                results_of[(model.name, data.name)] = json.loads((where / "results.json").read_text())
                del res
            except Exception as err:  # a crash in one cell is recorded; the others go on
                message = _record_failure(where, err, settings)
                say(f"{prefix}: failed ({message})")
                cells.append({**cell, "status": "failed", "error": message})
        del loaded
    summary: dict[str, Any] = {
        "suite": {
            "name": suite.name,
            "path": suite.path,
            "models": [{"name": m.name, "spec": m.spec} for m in suite.models],
            "datasets": [{"name": d.name, "spec": d.spec, "stages": suite.stages_of(d)} for d in suite.datasets],
            "n": suite.n,
            "seeds": list(suite.seeds),
            "shots": list(suite.shots),
        },
        "cells": cells,
    }
    summary["files"] = {k: str(v.relative_to(out)) for k, v in write_leaderboard(summary, results_of, out).items()}
    write_text_atomic(out / "suite.json", json.dumps(to_jsonable(summary), indent=2))
    return summary
