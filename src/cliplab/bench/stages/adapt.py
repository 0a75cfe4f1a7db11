"""Stage ``adapt``: few-shot adaptation, every method × shots × seeds (section in ``report_sections``)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch

from cliplab.bench.figures import MISSING, finite, fmt, name, number, rank, task_label
from cliplab.bench.report_sections import adapt_section
from cliplab.bench.stage import BenchContext, Metric, Stage, register_stage
from cliplab.progress import step

#: random-crop passes of the support images the bench encodes (Tip-Adapter's and GDA's ``augment_epoch``)
BENCH_PASSES = 10
#: the bench's time budget: the linear probe's L-BFGS stops at 100 iterations per fit (lpclip, and ``cliplab
#: adapt``, allow 1000; its 23 search fits at 1000 iterations dominate the default run on a CPU)
BENCH_METHOD_PARAMS = {"linear_probe": {"max_iter": 100}}


def run(ctx: BenchContext) -> dict[str, Any]:
    """Few-shot adaptation: every method × shots × seeds (support sets from the data's support role).

    The reference protocol (``cliplab.adapt.protocol``): ``BENCH_PASSES`` augmented passes of the support
    images, hyper-parameters searched on the data's own validation split where it has one (the built-in
    world's val split), else on a split of each support set; ``results.protocol`` records which.
    """
    from cliplab.adapt.base_new_protocol import base_to_new
    from cliplab.adapt.protocol import run_few_shot
    from cliplab.adapt.protocol_settings import FewShotProtocol
    from cliplab.adapt.views import embed_support_views

    sets, train = ctx.data.support("adapt")
    test, W = sets.test, sets.weights
    max_k = int(torch.bincount(train.labels).min())
    shots = [k for k in ctx.shots if k <= max_k]
    if not shots:
        return {"skipped": "a class has no training image"}
    support_ds = ctx.data.support_dataset("adapt")
    validation = ctx.data.separate_validation("adapt")
    val = validation[0] if validation is not None else None
    views = None
    if support_ds is not None:
        views = embed_support_views(
            ctx.model,
            support_ds,
            train.labels,
            shots,
            ctx.seeds,
            BENCH_PASSES,
            num_classes=W.shape[0],
            batch_size=ctx.batch_size,
            cache_dir=ctx.cache_dir,
            progress=ctx.progress,
        )
    name = support_ds.name if support_ds is not None else None
    with warnings.catch_warnings():
        # 1-shot support sets without a validation split leave the linear probe none; its fallback C is documented
        warnings.filterwarnings("ignore", message=".*no validation split possible")
        protocol = FewShotProtocol(
            shots=tuple(shots),
            seeds=ctx.seeds,
            dataset=name,
            method_params=BENCH_METHOD_PARAMS,
            progress=ctx.progress,
        )
        scale = ctx.model.logit_scale
        res = run_few_shot(train, test, W, protocol, logit_scale=scale, train_views=views, val=val)
        with step("base-to-new", enabled=ctx.progress, bar=False):
            b2n = dataclasses.replace(protocol, methods=res["methods"], seeds=ctx.seeds[:1])
            res["base_to_new"] = base_to_new(
                train, test, W, b2n, k=shots[-1], logit_scale=scale, train_views=views, val=val
            )
    res["protocol"]["text"] += " Bench budget: linear-probe fits stop at 100 L-BFGS iterations (lpclip: 1000)."
    res["protocol"]["method_params"] = BENCH_METHOD_PARAMS
    res["task"] = sets.task
    res["style"] = sets.style
    return res


def headline(res: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """The best adapter at the most shots, with its gain over zero-shot."""
    if "results" not in res or not res.get("shots"):
        return []
    k = str(res["shots"][-1])
    adapters = {m: r for m, r in res["results"].items() if m != "zeroshot" and k in r}
    if not adapters:
        return []
    method, r = max(adapters.items(), key=lambda kv: rank(kv[1][k]["mean"]))
    mean, zs = r[k]["mean"], res.get("zeroshot")
    gain = fmt(100 * (mean - zs), "+.1f") if finite(mean) and finite(zs) else MISSING
    task = task_label(res.get("task"), res.get("style"))
    return [(f"best {k}-shot accuracy", number(mean), f"{task} · {name(method)} · {gain} pt over zero-shot")]


register_stage(
    Stage(
        "adapt",
        run,
        order=20,
        title="few-shot adaptation",
        nav="Few-shot",
        section=adapt_section,
        headline=headline,
        metrics=(Metric("{}/{}-shot", "results.*.*.mean"),),
    )
)
