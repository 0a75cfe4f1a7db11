"""Stage ``retrieval``: image–text retrieval recall@k and CLIPScore of matching vs shuffled captions."""

from __future__ import annotations

from typing import Any

from cliplab.bench import html as H
from cliplab.bench.figures import finite, fmt, number, numbers
from cliplab.bench.stage import BenchContext, Metric, Stage, register_stage


def run(ctx: BenchContext) -> dict[str, Any]:
    """Image–text retrieval recall@1/5/10 and CLIPScore of matching vs shuffled captions."""
    import torch

    from cliplab.metrics import clipscore, retrieval
    from cliplab.metrics.retrieval_metrics import default_ties

    ds = ctx.data.retrieval_set()
    if not ds.captions:
        return {"skipped": f"dataset {ds.name!r} has no captions"}
    feats = ctx.embed(ds)
    ties = default_ties(str(ctx.data_spec))  # CLIP_benchmark's topk on its webdatasets, so recall matches its tables
    out: dict[str, Any] = dict(retrieval(feats.images, feats.texts, feats.text_to_image, ks=(1, 5, 10), ties=ties))
    out["ties"] = ties
    paired = feats.images[feats.text_to_image]
    shuffled = feats.texts[torch.randperm(feats.texts.shape[0], generator=torch.Generator().manual_seed(ctx.seed))]
    out["clipscore_matching"] = float(clipscore(paired, feats.texts).mean())
    out["clipscore_shuffled"] = float(clipscore(paired, shuffled).mean())
    out["n_images"], out["n_captions"] = len(feats), int(feats.texts.shape[0])
    return out


def headline(ret: dict[str, Any]) -> list[tuple[str, Any, str]]:
    if "image_retrieval_recall@1" not in ret:
        return []
    i2t = fmt(ret.get("text_retrieval_recall@1"))
    detail = f"captioned test set, {ret['n_images']} images · image → text R@1 {i2t}"
    return [("text → image R@1", number(ret["image_retrieval_recall@1"]), detail)]


def section(results: dict[str, Any], data: Any = None) -> str | None:
    ret = results["stages"].get("retrieval")
    if not ret:
        return None
    if "skipped" in ret:
        return H.skipped("retrieval", "Retrieval and caption scoring", ret["skipped"])
    ks = sorted({int(k.split("@")[1]) for k in ret if "recall@" in k})
    rows = [numbers([f"R@{k}", ret[f"image_retrieval_recall@{k}"], ret[f"text_retrieval_recall@{k}"]]) for k in ks]
    recall = H.table(["", "text → image", "image → text"], rows)
    matching, shuffled = number(ret["clipscore_matching"]), number(ret["clipscore_shuffled"])
    gap = matching - shuffled if finite(matching) and finite(shuffled) else None
    score = H.table(
        ["captions", "mean CLIPScore"],
        [["matching", matching], ["shuffled", shuffled], ["difference", gap]],
    )
    body = (
        '<div class="cols"><div><h3>Recall@k</h3>' + recall + "</div>"
        "<div><h3>Caption scoring (CLIPScore, w = 2.5)</h3>" + score + "</div></div>"
    )
    return H.section(
        "retrieval",
        "Retrieval and caption scoring",
        f"{ret['n_images']} images, {ret['n_captions']} captions. Text → image: share of captions whose image "
        "ranks in the top k; image → text: share of images with one of their captions in the top k "
        f"(CLIP_benchmark definitions; ties: {ret.get('ties', 'pessimistic')}).",
        body,
    )


register_stage(
    Stage(
        "retrieval",
        run,
        order=40,
        title="retrieval",
        nav="Retrieval",
        section=section,
        headline=headline,
        metrics=(Metric("{}", "*recall@*"),),
    )
)
