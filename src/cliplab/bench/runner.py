"""``cliplab bench``: one run, one ``results.json`` for a model on a dataset.

A bench is a sequence of named stages sharing one context (model, data source, cached features). Each stage
(:class:`~cliplab.bench.stage.Stage`, registered with ``register_stage``; the built-in ones live in
``cliplab.bench.stages``) returns a JSON-able dict, or a :class:`~cliplab.bench.stage.StageResult` with
in-memory data for its report section; the runner records it with its wall time.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cliplab
from cliplab._io import to_jsonable, write_text_atomic
from cliplab.bench.builtin_data import BUILTIN_TASKS, STYLE_SHIFTS
from cliplab.bench.stage import STAGES, BenchContext, Stage, StageResult
from cliplab.models.base import Model

__all__ = ["BUILTIN_TASKS", "SCHEMA_VERSION", "STAGES", "STYLE_SHIFTS", "BenchContext", "Stage", "run_bench"]

SCHEMA_VERSION = 1


def templates_key(templates: Any) -> str | None:
    """How ``results.json`` names a run's templates: None (each dataset's own), a set name, or ``sha256:<12 hex>``
    of the templates as canonical JSON (a CuPL description file is too big to copy into every results file)."""
    if templates is None or isinstance(templates, str):
        return templates
    text = json.dumps(to_jsonable(templates), sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12]


def run_bench(
    model: Model,
    data_spec: str = "shapes",
    output_dir: str | os.PathLike = "cliplab-bench",
    *,
    only: list[str] | None = None,
    n: int = 1000,
    batch_size: int = 64,
    cache_dir: Any = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    seeds: tuple[int, ...] = (1, 2, 3),
    shots: tuple[int, ...] = (1, 2, 4, 8, 16),
    ood_data: Sequence[str] = (),
    load_seconds: float | None = None,
    templates: Any = None,
    links: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Run the selected stages (all by default); write ``results.json`` and ``report.html`` in ``output_dir``.

    ``ood_data``: dataset specs of OOD images for the ``ood`` stage on data other than the built-in world.
    ``load_seconds``: how long loading (or, for ``builtin:shapes`` on first use, training) the model took;
    recorded as ``timings.load_model`` and counted in ``timings.total``. The schema of ``results.json`` is
    documented in ``docs/bench-results.md``. ``templates``: class-name templates for every zero-shot classifier
    (see ``cliplab.zeroshot.class_prompts``; None: each dataset's own), recorded as ``config.templates`` (a set
    name, or a hash of the templates given). ``links``: ``(label, relative URL)`` added to the report's navigation.
    """
    names = [n for n in STAGES if STAGES[n].default] if not only else only
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown bench stage(s) {unknown}; available: {', '.join(STAGES)}")
    ctx = BenchContext(
        model,
        str(data_spec),
        n=n,
        batch_size=batch_size,
        cache_dir=cache_dir,
        progress=progress,
        seeds=tuple(seeds),
        shots=tuple(shots),
        ood_specs=tuple(str(d) for d in ood_data),
        templates=templates,
    )
    from cliplab.features.embedding import skipped_images

    skipped_before = len(skipped_images())  # --skip-bad-images: what this run leaves out
    started = time.perf_counter()
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "cliplab_version": cliplab.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "spec": model.spec,
            "fingerprint": model.fingerprint(),
            "geometry": model.geometry,
            "logit_scale": model.logit_scale,
            "logit_bias": model.logit_bias,
        },
        "data": {"spec": str(data_spec), "n": n, "ood": [str(d) for d in ood_data]},
        "config": {
            "stages": names,
            "batch_size": batch_size,
            "seeds": list(seeds),
            "shots": list(shots),
            "templates": templates_key(templates),
        },
        "environment": {"python": platform.python_version(), "platform": platform.platform()},
        "stages": {},
        "timings": {} if load_seconds is None else {"load_model": round(load_seconds, 3)},
    }
    report_data: dict[str, Any] = {}  # stage -> in-memory data for its report section (never in results.json)
    for name in names:
        if log:
            log(f"[bench] {name} ...")
        t0 = time.perf_counter()
        result = STAGES[name].run(ctx)
        if isinstance(result, StageResult):
            report_data[name] = result.report_data
            result = result.result
        results["stages"][name] = result
        results["timings"][name] = round(time.perf_counter() - t0, 3)
        if log:
            log(f"[bench] {name} done in {results['timings'][name]:.1f}s")
    results["skipped_images"] = [{"file": s["file"], "error": s["error"]} for s in skipped_images()[skipped_before:]]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        from cliplab.bench.report import render_sections

        report = render_sections(to_jsonable(results), report_data)
    except ImportError as err:  # matplotlib is optional
        report = None
        if log:
            log(f"[bench] report.html skipped ({err}); pip install matplotlib")
    results["timings"]["report"] = round(time.perf_counter() - t0, 3)
    results["timings"]["total"] = round(time.perf_counter() - started + (load_seconds or 0.0), 3)
    write_text_atomic(out / "results.json", json.dumps(to_jsonable(results), indent=2))
    if report is not None:
        from cliplab.bench.report import write_report

        write_report(to_jsonable(results), out / "report.html", report_data, rendered=report, links=links)
    return results
