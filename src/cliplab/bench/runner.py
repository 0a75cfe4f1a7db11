"""``cliplab bench``: one run, one ``results.json`` for a model on a dataset.

A bench is a sequence of named stages sharing one context (model, data source, cached features). Each stage
(:class:`~cliplab.bench.stage.Stage`, registered with ``register_stage``; the built-in ones live in
``cliplab.bench.stages``) returns a JSON-able dict, or a :class:`~cliplab.bench.stage.StageResult` with
in-memory data for its report section; the runner records it with its wall time.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import cliplab
from cliplab._io import to_jsonable, write_text_atomic
from cliplab.bench.builtin_data import BUILTIN_TASKS, STYLE_SHIFTS
from cliplab.bench.data_kinds import data_kind
from cliplab.bench.stage import STAGES, BenchContext, Stage, StageResult
from cliplab.data.spec import DataSpec
from cliplab.models.base import Model
from cliplab.progress import display, step
from cliplab.zeroshot.templates import Templates, templates_key

__all__ = [
    "BUILTIN_TASKS", "SCHEMA_VERSION", "STAGES", "STYLE_SHIFTS", "BenchContext", "Stage", "run_bench", "templates_key",
]  # fmt: skip

SCHEMA_VERSION = 1


def run_bench(
    model: Model,
    data_spec: str | DataSpec = "shapes",
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
    ood_data: Sequence[str | DataSpec] = (),
    load_seconds: float | None = None,
    templates: Templates = None,
    links: Sequence[tuple[str, str]] = (),
    progress_stream: TextIO | None = None,
    progress_title: str = "[bench]",
) -> dict[str, Any]:
    """Run the selected stages (all by default); write ``results.json`` and ``report.html`` in ``output_dir``.

    ``ood_data``: dataset specs of OOD images for the ``ood`` stage on data other than the built-in world.
    ``load_seconds``: how long loading (or, for ``builtin:shapes`` on first use, training) the model took;
    recorded as ``timings.load_model`` and counted in ``timings.total``. The schema of ``results.json`` is
    documented in ``docs/bench-results.md``. ``templates``: class-name templates for every zero-shot classifier
    (see ``cliplab.zeroshot.class_prompts``; None: each dataset's own), recorded as ``config.templates`` (a set
    name, or a hash of the templates given); the templates each dataset's classifiers used are recorded under
    ``templates`` (a notice is logged for a dataset that has none and gets the fallback set). ``links``:
    ``(label, relative URL)`` added to the report's navigation.

    Progress: with ``progress`` on a terminal ``progress_stream`` (default stderr), one status line for the whole
    run (``cliplab.progress``: stage k of n, the step inside it, time left; ``progress_title`` leads it);
    elsewhere the encoders' own bars, as before. ``log`` lines are written above the status line.
    """
    names = [n for n in STAGES if STAGES[n].default] if not only else only
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown bench stage(s) {unknown}; available: {', '.join(STAGES)}")
    spec = DataSpec.parse(data_spec)  # the one parse of the data spec: stages get the DataSpec (ctx.data_spec)
    ctx = BenchContext(
        model,
        spec,
        n=n,
        batch_size=batch_size,
        cache_dir=cache_dir,
        progress=progress,
        seeds=tuple(seeds),
        shots=tuple(shots),
        ood_specs=tuple(DataSpec.parse(d) for d in ood_data),
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
        "data": {"spec": str(spec), "kind": data_kind(spec), "n": n, "ood": [str(d) for d in ood_data]},
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
    out = Path(output_dir)
    expected = previous_timings(out / "results.json", results)
    with display(
        enabled=progress, stream=progress_stream, stages=len(names), expected=expected, title=progress_title
    ) as shown:

        def say(message: str) -> None:
            if log is None:
                return
            if shown is not None:
                shown.clear()
            log(message)
            if shown is not None:
                shown.refresh(force=True)

        ctx.log = say if log is not None else None
        for i, name in enumerate(names):
            if shown is None:
                say(f"[bench] {name} ...")
            t0 = time.perf_counter()
            with shown.stage(name, names[i + 1 :]) if shown is not None else nullcontext():
                result = STAGES[name].run(ctx)
            if isinstance(result, StageResult):
                report_data[name] = result.report_data
                result = result.result
            results["stages"][name] = result
            results["timings"][name] = round(time.perf_counter() - t0, 3)
            say(f"[bench] {name} done in {results['timings'][name]:.1f}s")
        left_out = {s["file"]: s["error"] for s in skipped_images()[skipped_before:]}  # once per file
        results["skipped_images"] = [{"file": f, "error": e} for f, e in left_out.items()]  # --skip-bad-images
        if ctx.templates_used:
            results["templates"] = ctx.templates_used
        t0 = time.perf_counter()
        try:
            from cliplab.bench.report import render_sections

            with step("drawing the report figures", enabled=shown is not None):
                report = render_sections(to_jsonable(results), report_data)
        except ImportError as err:  # matplotlib is optional
            report = None
            say(f"[bench] report.html skipped ({err}); pip install matplotlib")
    out.mkdir(parents=True, exist_ok=True)
    results["timings"]["report"] = round(time.perf_counter() - t0, 3)
    results["timings"]["total"] = round(time.perf_counter() - started + (load_seconds or 0.0), 3)
    write_text_atomic(out / "results.json", json.dumps(to_jsonable(results), indent=2))
    if report is not None:
        from cliplab.bench.report import write_report

        write_report(to_jsonable(results), out / "report.html", report_data, rendered=report, links=links)
    return results


def previous_timings(path: Path, results: dict[str, Any]) -> dict[str, float]:
    """Stage timings of an earlier run of the same model, data and settings in ``path`` (for the time left);
    empty when there is none or it differs."""
    try:
        old = json.loads(path.read_text())
        same = (
            old["model"]["fingerprint"] == results["model"]["fingerprint"]
            and old["data"] == results["data"]
            and {k: old["config"].get(k) for k in ("batch_size", "seeds", "shots")}
            == {k: results["config"][k] for k in ("batch_size", "seeds", "shots")}
        )
        if not same:
            return {}
        return {k: float(v) for k, v in old["timings"].items() if k in old["stages"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
