"""Stage ``adapt``: few-shot adaptation, every method × shots × seeds (section in ``report_sections``)."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from cliplab.bench.figures import MISSING, finite, fmt, name, number, rank
from cliplab.bench.report_sections import adapt_section
from cliplab.bench.stage import BenchContext, Metric, Stage, register_stage


def run(ctx: BenchContext) -> dict[str, Any]:
    """Few-shot adaptation: every method × shots × seeds (support sets from the source's support role)."""
    from cliplab.adapt.protocol import base_to_new, run_few_shot

    sets, train = ctx.source.support("adapt")
    test, W = sets.test, sets.weights
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
    return [(f"best {k}-shot accuracy", number(mean), f"{name(method)} · {gain} pt over zero-shot")]


register_stage(
    Stage(
        "adapt",
        run,
        title="few-shot adaptation",
        nav="Few-shot",
        section=adapt_section,
        headline=headline,
        metrics=(Metric("{}/{}-shot", "results.*.*.mean"),),
    )
)
