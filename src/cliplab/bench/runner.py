"""``cliplab bench``: one run, one ``results.json`` for a model on a dataset.

A bench is a sequence of named stages sharing one context (model, datasets, cached features). Each
stage returns a JSON-able dict; the runner records it with its wall time. Stages are registered in
``STAGES`` so later capabilities plug in without changing the runner.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cliplab
from cliplab._io import to_jsonable, write_text_atomic
from cliplab.data.base import Dataset
from cliplab.models.base import Model

SCHEMA_VERSION = 1

#: Built-in world: the task (and shapes options) each stage runs on, chosen so that zero-shot is weak there.
#: Few-shot: the pattern task — no training caption names a pattern, so zero-shot is at chance and
#: supervision helps (the regime of the few-shot papers). Calibration: shapes drawn as outlines, a style the
#: model never saw (zero-shot well below its clean accuracy, overconfident). Estimation: the shape task over
#: corruptions and the unseen styles, whose accuracies span chance to clean. Zero-shot reports every task.
BUILTIN_TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "adapt": ("pattern", {}),
    "calibration": ("shape", {"style": "outline"}),
    "estimate": ("shape", {}),
}
#: Built-in world: rendering styles the model never saw, as extra shifted sets (estimation) and far OOD.
STYLE_SHIFTS = ("outline", "sketch")


@dataclass
class BenchContext:
    model: Model
    data_spec: str
    n: int
    batch_size: int = 64
    cache_dir: Any = None
    progress: bool = True
    seed: int = 0
    seeds: tuple[int, ...] = (1, 2, 3)
    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    ood_specs: tuple[str, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def builtin_world(self) -> bool:
        return self.data_spec.removeprefix("builtin:").split(":")[0] == "shapes"

    def dataset(self, split: str = "test", **options: Any) -> Dataset:
        from cliplab.data import load_dataset

        if self.builtin_world:
            options.setdefault("n", self.n)
        return load_dataset(self.data_spec, split=split, **options)

    def embed(self, dataset: Dataset):
        from cliplab.features import embed

        return embed(self.model, dataset, batch_size=self.batch_size, cache_dir=self.cache_dir, progress=self.progress)


def stage_zeroshot(ctx: BenchContext) -> dict[str, Any]:
    """Zero-shot classification per task (shape, colour, shape+colour and pattern on the built-in world)."""
    from cliplab.metrics.classification import classification_report, confusion_matrix
    from cliplab.zeroshot import zeroshot_logits, zeroshot_weights

    tasks = ("shape", "colour", "shape_colour", "pattern") if ctx.builtin_world else ("classes",)
    out = {}
    for task in tasks:
        ds = ctx.dataset("test", task=task) if ctx.builtin_world else ctx.dataset("test")
        feats = ctx.embed(ds)
        if feats.labels is None or not feats.classnames:
            out[task] = {"skipped": f"dataset {ds.name!r} has no class labels"}
            continue
        weights = zeroshot_weights(ctx.model, feats.classnames, ds.templates)
        m = ctx.model
        logits = zeroshot_logits(feats.images, weights, m.logit_scale, m.logit_bias, m.geometry)
        rep = classification_report(logits, feats.labels, feats.classnames)
        pred = logits.argmax(1)
        rep["classnames"] = feats.classnames
        rep["confusion_matrix"] = confusion_matrix(pred, feats.labels, len(feats.classnames)).tolist()
        out[task] = rep
        if task in (tasks[0], "pattern"):  # a random sample (image folders are sorted by class)
            pick = np.random.default_rng(ctx.seed).permutation(len(ds))[:24]
            ctx.extras.setdefault("samples", []).append(
                {
                    "dataset": ds,
                    "indices": pick.tolist(),
                    "pred": pred[pick].tolist(),
                    "labels": feats.labels[pick].tolist(),
                    "classnames": feats.classnames,
                    "task": task if ctx.builtin_world else None,
                }
            )
    return out


def stage_retrieval(ctx: BenchContext) -> dict[str, Any]:
    """Image–text retrieval recall@1/5/10 and CLIPScore of matching vs shuffled captions."""
    import torch

    from cliplab.metrics import clipscore, retrieval

    ds = ctx.dataset("test", objects="mixed") if ctx.builtin_world else ctx.dataset("test")
    if not ds.captions:
        return {"skipped": f"dataset {ds.name!r} has no captions"}
    feats = ctx.embed(ds)
    out: dict[str, Any] = dict(retrieval(feats.images, feats.texts, feats.text_to_image, ks=(1, 5, 10)))
    paired = feats.images[feats.text_to_image]
    shuffled = feats.texts[torch.randperm(feats.texts.shape[0], generator=torch.Generator().manual_seed(ctx.seed))]
    out["clipscore_matching"] = float(clipscore(paired, feats.texts).mean())
    out["clipscore_shuffled"] = float(clipscore(paired, shuffled).mean())
    out["n_images"], out["n_captions"] = len(feats), int(feats.texts.shape[0])
    return out


def _task_setup(ctx: BenchContext, task: str = "shape", **options: Any) -> tuple[Any, Any, Any]:
    """(test features, zero-shot weights, test dataset) of the main classification task."""
    from cliplab.zeroshot import zeroshot_weights

    ds = ctx.dataset("test", task=task, **options) if ctx.builtin_world else ctx.dataset("test")
    feats = ctx.embed(ds)
    if feats.labels is None or not feats.classnames:
        raise ValueError(f"dataset {ds.name!r} has no class labels")
    return feats, zeroshot_weights(ctx.model, feats.classnames, ds.templates), ds


def stage_adapt(ctx: BenchContext) -> dict[str, Any]:
    """Few-shot adaptation: every method × shots × seeds (support from the train split)."""
    from cliplab.adapt.protocol import base_to_new, run_few_shot
    from cliplab.assess import split_half

    task, opts = BUILTIN_TASKS["adapt"] if ctx.builtin_world else ("classes", {})
    test, W, _ = _task_setup(ctx, task, **opts)
    if ctx.builtin_world:
        train = ctx.embed(ctx.dataset("train", task=task, n=max(ctx.n, 400), **opts))
    else:
        tr, te = split_half(test.labels, ctx.seed)
        train, test = test.subset(tr), test.subset(te)
    max_k = int(torch.bincount(train.labels).min())
    shots = [k for k in ctx.shots if k <= max_k]
    if not shots:
        return {"skipped": "a class has no training image"}
    with warnings.catch_warnings():
        # 1-shot support sets leave the linear probe no validation split; its fallback C is the documented choice
        warnings.filterwarnings("ignore", message=".*no validation split possible")
        res = run_few_shot(
            train, test, W, logit_scale=ctx.model.logit_scale, shots=shots, seeds=ctx.seeds, progress=ctx.progress
        )
        res["base_to_new"] = base_to_new(
            train, test, W, logit_scale=ctx.model.logit_scale, methods=res["methods"], k=shots[-1], seeds=ctx.seeds[:1]
        )
    res["task"] = task
    res["style"] = opts.get("style", "solid") if ctx.builtin_world else None
    return res


def stage_ood(ctx: BenchContext) -> dict[str, Any]:
    """OOD detection: held-out shapes and colours (built-in world), or the ``--ood-data`` sets vs the test set.

    Built-in world: near OOD = the held-out attribute in the training style; far OOD = the same drawn in the
    sketch style (on light paper), which no training image resembles.

    On other data, half of each class of the test set serves as ID training features (KNN, ViM, Mahalanobis)
    and the other half as the ID test set.
    """
    from cliplab.assess import ood_evaluation, split_half
    from cliplab.data import load_dataset

    kw = {"train_features": None, "encode_texts": ctx.model.encode_texts, "curves": True}
    if not ctx.builtin_world:
        if not ctx.ood_specs:
            return {"skipped": "no OOD data given: pass --ood-data DIR (images of none of the classes) to run it"}
        feats, W, _ = _task_setup(ctx)
        tr, te = split_half(feats.labels, ctx.seed)
        ood = {Path(s).name or s: ctx.embed(load_dataset(s, split="test")) for s in ctx.ood_specs}
        kw["train_features"] = feats.subset(tr)
        return {"classes": ood_evaluation(feats.subset(te), ood, W, ctx.model.logit_scale, **kw)}
    out = {}
    for task, held in (("shape", "shapes"), ("colour", "colours")):
        test, W, _ = _task_setup(ctx, task)
        ood = {
            f"held-out {held}": ctx.embed(ctx.dataset("test", task=task, held_out=held)),
            f"held-out {held}, sketch": ctx.embed(ctx.dataset("test", task=task, held_out=held, style="sketch")),
        }
        kw["train_features"] = ctx.embed(ctx.dataset("train", task=task, n=max(ctx.n, 400)))
        out[task] = ood_evaluation(test, ood, W, ctx.model.logit_scale, **kw)
    return out


def stage_calibration(ctx: BenchContext) -> dict[str, Any]:
    """Calibration and selective classification of zero-shot predictions (temperature fit on val)."""
    from cliplab.assess import calibration_evaluation, split_half
    from cliplab.zeroshot import zeroshot_logits

    task, opts = BUILTIN_TASKS["calibration"] if ctx.builtin_world else ("classes", {})
    test, W, _ = _task_setup(ctx, task, **opts)
    m = ctx.model

    def logits_of(f: Any) -> torch.Tensor:
        return zeroshot_logits(f.images, W, m.logit_scale, m.logit_bias, m.geometry)

    if ctx.builtin_world:
        val = ctx.embed(ctx.dataset("val", task=task, **opts))
        out = calibration_evaluation(logits_of(val), val.labels, logits_of(test), test.labels)
    else:
        vi, ti = split_half(test.labels, ctx.seed)
        z = logits_of(test)
        out = calibration_evaluation(z[vi], test.labels[vi], z[ti], test.labels[ti])
    return {**out, "task": task, "style": opts.get("style", "solid") if ctx.builtin_world else None}


def stage_estimate(ctx: BenchContext) -> dict[str, Any]:
    """Label-free accuracy estimation over the corruption family (14 corruptions × severities 1, 3, 5).

    Built-in world: rendered corrupted test sets plus the unseen rendering styles (``STYLE_SHIFTS``, keys
    ``style:<name>``), clean validation split. Other data: half of each class of the test set is the clean
    validation set, and up to ``n / 4`` images of the other half are corrupted.
    """
    from cliplab.assess import estimation_evaluation, split_half
    from cliplab.data.corruptions import CORRUPTIONS
    from cliplab.data.shifted import Corrupted
    from cliplab.zeroshot import zeroshot_logits

    task, opts = BUILTIN_TASKS["estimate"] if ctx.builtin_world else ("classes", {})
    feats, W, ds = _task_setup(ctx, task, **opts)
    m = ctx.model
    n = max(100, ctx.n // 4)

    def logits_of(f: Any) -> torch.Tensor:
        return zeroshot_logits(f.images, W, m.logit_scale, m.logit_bias, m.geometry)

    if ctx.builtin_world:
        val = ctx.embed(ctx.dataset("val", task=task, **opts))

        def shifted(c: str, sev: int) -> Dataset:
            return ctx.dataset("test", task=task, n=n, corruption=c, severity=sev, **opts)
    else:
        vi, ti = split_half(feats.labels, ctx.seed)
        val = feats.subset(vi)
        pick = np.sort(np.random.default_rng(ctx.seed).permutation(ti)[:n])
        base = ds.subset(pick)
        pp = m.preprocess
        size = max(pp.crop) if pp.crop else (pp.resize if isinstance(pp.resize, int) else 224)

        def shifted(c: str, sev: int) -> Dataset:
            return Corrupted(base, c, sev, seed=ctx.seed, size=size)

    sets = []
    for c in CORRUPTIONS:
        for sev in (1, 3, 5):
            f = ctx.embed(shifted(c, sev))
            sets.append((f"{c}@{sev}", logits_of(f), f.labels))
    if ctx.builtin_world:
        for style in STYLE_SHIFTS:
            f = ctx.embed(ctx.dataset("test", task=task, n=n, style=style))
            sets.append((f"style:{style}", logits_of(f), f.labels))
    return {**estimation_evaluation(logits_of(val), val.labels, sets), "task": task}


STAGES: dict[str, Callable[[BenchContext], dict[str, Any]]] = {
    "zeroshot": stage_zeroshot,
    "adapt": stage_adapt,
    "retrieval": stage_retrieval,
    "ood": stage_ood,
    "calibration": stage_calibration,
    "estimate": stage_estimate,
}


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
) -> dict[str, Any]:
    """Run the selected stages (all by default); write ``results.json`` and ``report.html`` in ``output_dir``.

    ``ood_data``: dataset specs of OOD images for the ``ood`` stage on data other than the built-in world.
    ``load_seconds``: how long loading (or, for ``builtin:shapes`` on first use, training) the model took;
    recorded as ``timings.load_model`` and counted in ``timings.total``. The schema of ``results.json`` is
    documented in ``docs/bench-results.md``.
    """
    names = list(STAGES) if not only else only
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
    )
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
        "config": {"stages": names, "batch_size": batch_size, "seeds": list(seeds), "shots": list(shots)},
        "environment": {"python": platform.python_version(), "platform": platform.platform()},
        "stages": {},
        "timings": {} if load_seconds is None else {"load_model": round(load_seconds, 3)},
    }
    for name in names:
        if log:
            log(f"[bench] {name} ...")
        t0 = time.perf_counter()
        results["stages"][name] = STAGES[name](ctx)
        results["timings"][name] = round(time.perf_counter() - t0, 3)
        if log:
            log(f"[bench] {name} done in {results['timings'][name]:.1f}s")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        from cliplab.bench.report import render_sections

        report = render_sections(to_jsonable(results), ctx.extras)
    except ImportError as err:  # matplotlib is optional
        report = None
        if log:
            log(f"[bench] report.html skipped ({err}); pip install matplotlib")
    results["timings"]["report"] = round(time.perf_counter() - t0, 3)
    results["timings"]["total"] = round(time.perf_counter() - started + (load_seconds or 0.0), 3)
    write_text_atomic(out / "results.json", json.dumps(to_jsonable(results), indent=2))
    if report is not None:
        from cliplab.bench.report import write_report

        write_report(to_jsonable(results), out / "report.html", ctx.extras, rendered=report)
    return results
