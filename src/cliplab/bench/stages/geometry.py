"""Stage ``geometry``: the modality gap, alignment and uniformity, effective rank, and retrieval with the gap
closed by centring (``cliplab.assess.geometry``), on the retrieval test set."""

from __future__ import annotations

from typing import Any

import numpy as np

from cliplab.bench import html as H
from cliplab.bench.figures import HALF, fmt, number, plt
from cliplab.bench.stage import BenchContext, Metric, Stage, StageResult, register_stage


def run(ctx: BenchContext) -> dict[str, Any] | StageResult:
    """Geometry of the image and caption features of the retrieval test set."""
    from cliplab.assess.geometry import embedding_geometry

    ds = ctx.data.retrieval_set()
    if not ds.captions:
        return {"skipped": f"dataset {ds.name!r} has no captions (the geometry compares images with their captions)"}
    feats = ctx.embed(ds)
    out = embedding_geometry(feats.images, feats.texts, feats.text_to_image, ks=(1, 5))
    out["n_images"], out["n_captions"] = len(feats), int(feats.texts.shape[0])
    return StageResult(out, report_data=(feats.images.numpy(), feats.texts.numpy()))


def headline(r: dict[str, Any]) -> list[tuple[str, Any, str]]:
    if "gap" not in r:
        return []
    share = r["gap_variance_share"]
    detail = f"captioned test set, {r.get('n_images')} images · {fmt(share, '.0%')} of the variance along the gap"
    return [("modality gap", number(r["gap"]), detail)]


def _figure(images: np.ndarray, texts: np.ndarray) -> str:
    """Both modalities projected on their two main directions (PCA of the pooled normalised features)."""
    pyplot = plt()
    x = images / np.linalg.norm(images, axis=1, keepdims=True)
    y = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    z = np.concatenate([x, y])
    mean = z.mean(0)
    _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
    px, py = (x - mean) @ vt[:2].T, (y - mean) @ vt[:2].T
    fig, ax = pyplot.subplots(figsize=HALF)
    ax.scatter(px[:, 0], px[:, 1], s=9, alpha=0.6, label="images")
    ax.scatter(py[:, 0], py[:, 1], s=9, alpha=0.6, label="captions")
    ax.set_xlabel("principal direction 1")
    ax.set_ylabel("principal direction 2")
    ax.set_title("image and caption features")
    ax.legend()
    fig.tight_layout()
    return H.figure_png(fig, "The pooled features on their two main directions: two clouds apart are the gap.")


def section(results: dict[str, Any], data: Any = None) -> str | None:
    r = results["stages"].get("geometry")
    if not r:
        return None
    title = "Embedding geometry"
    if "skipped" in r:
        return H.skipped("geometry", title, r["skipped"])
    rows = [
        ["modality gap ‖μ_image − μ_text‖", r["gap"]],
        ["share of variance along the gap", r["gap_variance_share"]],
        ["(the same for a random direction, 1/D)", r["chance_share"]],
        ["cosine of the two centroids", r["centroid_cosine"]],
        ["alignment E‖x − y‖² of pairs (lower: closer)", r.get("alignment")],
        ["uniformity of images (lower: more uniform)", r["uniformity"]["image"]],
        ["uniformity of captions", r["uniformity"]["text"]],
        [f"effective rank of images (of D = {r['dim']})", r["effective_rank"]["image"]],
        ["effective rank of captions", r["effective_rank"]["text"]],
    ]
    body = '<div class="cols"><div>' + H.table(["", ""], rows, kv=True)
    ret = r.get("retrieval")
    if ret:
        ks = sorted({int(k.split("@")[1]) for k in ret["raw"]})
        rec = []
        for k in ks:
            for key, label in (("image_retrieval_recall", "text → image"), ("text_retrieval_recall", "image → text")):
                rec.append([f"{label} R@{k}", ret["raw"][f"{key}@{k}"], ret["centred"][f"{key}@{k}"]])
        body += "<h3>Closing the gap by centring each modality</h3>" + H.table(["", "as is", "centred"], rec)
    body += "</div>"
    if data is not None:
        try:
            body += "<div>" + _figure(*data) + "</div>"
        except ImportError:  # matplotlib is optional
            pass
    body += "</div>"
    lead = (
        f"{r['n_images']} test images and {r['n_captions']} captions, L2-normalised. Modality gap (Liang et al. "
        "2022), alignment and uniformity (Wang & Isola 2020), effective rank (Roy & Vetterli 2007)."
    )
    return H.section("geometry", title, lead, body)


register_stage(
    Stage(
        "geometry",
        run,
        order=60,
        title="embedding geometry",
        nav="Geometry",
        section=section,
        headline=headline,
        metrics=(
            Metric("gap", "gap", higher_is_better=None),
            Metric("gap_variance_share", "gap_variance_share", higher_is_better=None),
            Metric("alignment", "alignment", higher_is_better=False),
            Metric("uniformity/{}", "uniformity.*", higher_is_better=False),
            Metric("effective_rank/{}", "effective_rank.*", higher_is_better=True),
            Metric("centred/{}", "retrieval.centred.*", higher_is_better=True),
        ),
    )
)
