"""Stage ``probes``: compositional probes — accuracy of the true caption over hard negatives, per negative type.

On the built-in world the probes are generated on the retrieval test set (two objects per image in half of it):
swapped attributes, shapes and relations, replaced shapes and colours, an added object and shuffled words. On a
caption file, the captions' own words are rewritten (``cliplab.data.caption_negatives``). The released
benchmarks (SugarCrepe, Winoground, ARO) run through ``cliplab probe``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cliplab.bench import html as H
from cliplab.bench.figures import fmt, number
from cliplab.bench.stage import BenchContext, Metric, Stage, StageResult, register_stage

#: probes use the first this many images of the retrieval test set (their features are shared with retrieval)
MAX_IMAGES = 300


def caption_probe(dataset: Any, seed: int = 0) -> Any:
    """A :class:`~cliplab.probes.SelectionProbe` from a captioned dataset: each caption against its rewrites."""
    from cliplab.data.caption_negatives import caption_negatives
    from cliplab.probes import SelectionProbe

    image_index, captions, kinds = [], [], []
    for m, (caption, image) in enumerate(zip(dataset.captions, np.asarray(dataset.text_to_image).tolist())):
        for kind, negative in caption_negatives(caption, np.random.default_rng([seed, m, 4093])).items():
            image_index.append(image)
            captions.append([caption, negative])
            kinds.append(kind)
    index = np.asarray(image_index, dtype=np.int64)
    return SelectionProbe(getattr(dataset, "name", "captions"), dataset, index, captions, kinds)


def run(ctx: BenchContext) -> dict[str, Any] | StageResult:
    """Probe accuracy per negative type on the retrieval test set's images."""
    from cliplab.data.shapes_world import ShapesDataset
    from cliplab.probes import builtin_probe, evaluate_probe

    ds = ctx.data.retrieval_set()
    if isinstance(ds, ShapesDataset):
        probe, generated = builtin_probe(dataset=ds, seed=ctx.seed), "built-in world"
    elif ds.captions:
        probe, generated = caption_probe(ds, ctx.seed), "rewritten captions"
    else:
        return {"skipped": f"dataset {ds.name!r} has no captions to probe"}
    keep = [m for m in range(len(probe)) if probe.image_index[m] < MAX_IMAGES]
    probe.image_index = probe.image_index[keep]
    probe.captions, probe.kinds = [probe.captions[m] for m in keep], [probe.kinds[m] for m in keep]
    if not len(probe):
        return {"skipped": f"no caption of {ds.name!r} has a word the hard negatives rewrite"}
    feats = ctx.embed(ds)
    out = evaluate_probe(ctx.model, probe, batch_size=ctx.batch_size, image_features=feats.images)
    out.pop("info", None)
    out.pop("probe", None)
    return {**out, "source": generated, "n_images": min(len(ds), MAX_IMAGES)}


def headline(r: dict[str, Any]) -> list[tuple[str, Any, str]]:
    if "by_type" not in r:
        return []
    known = [
        (k, v["accuracy"])
        for k, v in r["by_type"].items()
        if v["accuracy"] is not None and v["accuracy"] == v["accuracy"]
    ]
    detail = f"captioned test set, {r.get('n_images')} images · mean over {len(r['by_type'])} negative types"
    if known:
        worst = min(known, key=lambda kv: kv[1])
        detail += f" · worst {worst[0]} {fmt(worst[1])}"
    return [("probe accuracy", number(r["macro_accuracy"]), detail)]


def _figure(r: dict[str, Any], model: str) -> str:
    from cliplab.bench.probe_figures import probe_bar_chart

    fig = probe_bar_chart({model: {k: v["accuracy"] for k, v in r["by_type"].items()}})
    return H.figure_png(fig, "Accuracy per hard-negative type; the dashed line is chance.")


def section(results: dict[str, Any], data: Any = None) -> str | None:
    r = results["stages"].get("probes")
    if not r:
        return None
    title = "Compositional probes"
    if "skipped" in r:
        return H.skipped("probes", title, r["skipped"])
    rows = [[k.replace("_", " "), v["accuracy"], H.bar(v["accuracy"]), v["n"]] for k, v in r["by_type"].items()]
    rows.append(["all items", r["accuracy"], H.bar(r["accuracy"]), r["n"]])
    rows.append(["mean over types", r["macro_accuracy"], H.bar(r["macro_accuracy"]), None])
    body = '<div class="cols"><div>' + H.table(["negative type", "accuracy", "", "items"], rows) + "</div>"
    try:
        body += "<div>" + _figure(r, results["model"]["spec"]) + "</div>"
    except ImportError:  # matplotlib is optional
        pass
    body += "</div>"
    lead = (
        f"{r['n']} items on {r['n_images']} test images ({r['source']}): the share of images whose true caption "
        "scores above a hard negative that reuses its words (SugarCrepe's metric; chance is 0.5). A bag-of-words "
        "model fails the swaps and the shuffle."
    )
    return H.section("probes", title, lead, body)


register_stage(
    Stage(
        "probes",
        run,
        order=50,
        title="compositional probes",
        nav="Probes",
        section=section,
        headline=headline,
        metrics=(
            Metric("{}/accuracy", "by_type.*.accuracy"),
            Metric("accuracy", "accuracy"),
            Metric("macro_accuracy", "macro_accuracy"),
        ),
    )
)
