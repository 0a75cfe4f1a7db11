"""``report.html``: a self-contained page (tables + matplotlib figures as embedded PNGs) for one bench run."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cliplab._io import write_text_atomic
from cliplab.bench import html as H
from cliplab.bench.report_sections import adapt_section, calibration_section, estimate_section, ood_section


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 10,
        }
    )
    return plt


def _overview(results: dict[str, Any], extras: dict[str, Any]) -> str:
    items: list[tuple[str, Any]] = []
    zs = results["stages"].get("zeroshot", {})
    for task, rep in zs.items():
        if "acc1" in rep:
            items.append((f"zero-shot acc · {task}", rep["acc1"]))
    ret = results["stages"].get("retrieval", {})
    if "image_retrieval_recall@1" in ret:
        items.append(("text→image R@1", ret["image_retrieval_recall@1"]))
        items.append(("image→text R@1", ret["text_retrieval_recall@1"]))
    items.append(("total seconds", results["timings"].get("total")))
    rows = [[k, v] for k, v in results["timings"].items()]
    model = results["model"]
    info = H.table(
        ["", ""],
        [
            ["model", model["spec"]],
            ["fingerprint", model["fingerprint"]],
            ["geometry", model["geometry"]],
            ["logit scale", model["logit_scale"]],
            ["logit bias", model["logit_bias"]],
            ["data", results["data"]["spec"]],
            ["cliplab", results["cliplab_version"]],
            ["created", results["created"]],
        ],
    )
    return H.section(
        "overview",
        "Overview",
        "Headline numbers, run configuration and stage timings.",
        H.cards(items)
        + "<h3>Run</h3>"
        + info
        + "<h3>Stage timings (s)</h3>"
        + H.table(["stage", "seconds"], rows, digits=2),
    )


def _zeroshot(results: dict[str, Any], extras: dict[str, Any]) -> str | None:
    zs = results["stages"].get("zeroshot")
    if not zs:
        return None
    plt = _plt()
    rows = [[t, r.get("acc1"), r.get("acc5"), r.get("mean_per_class_recall"), r.get("n")] for t, r in zs.items()]
    body = H.table(["task", "acc@1", "acc@5", "mean per-class recall", "n"], rows, best={1: "max"})
    figs = []
    for task, rep in zs.items():
        if "confusion_matrix" not in rep or len(rep["classnames"]) > 40:
            continue
        cm = np.asarray(rep["confusion_matrix"], dtype=float)
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(4.6, 4.0))
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
        ax.grid(False)
        names = rep["classnames"]
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{task}: row-normalised confusion")
        figs.append(H.figure_png(fig, f"Confusion matrix, {task} task"))
    samples = extras.get("samples")
    if samples:
        ds, pred, lab, names = samples["dataset"], samples["pred"], samples["labels"], samples["classnames"]
        n = min(len(pred), 16)
        fig, axes = plt.subplots(2, n // 2, figsize=(n * 0.85, 2.3))
        for i, ax in enumerate(np.ravel(axes)):
            ax.imshow(ds.image(i))
            ax.set_xticks([])
            ax.set_yticks([])
            ok = pred[i] == lab[i]
            ax.set_title(names[pred[i]], fontsize=8, color="#136f3a" if ok else "#b3261e")
        fig.suptitle("sample test images with zero-shot predictions (green = correct)", fontsize=9, y=1.06)
        figs.append(H.figure_png(fig, "Sample predictions"))
    if figs:
        body += '<div class="figs">' + "".join(figs) + "</div>"
    return H.section(
        "zeroshot",
        "Zero-shot classification",
        "Class weights from prompt ensembles; logits = scale · cos(image, class weight).",
        body,
    )


def _retrieval(results: dict[str, Any], extras: dict[str, Any]) -> str | None:
    ret = results["stages"].get("retrieval")
    if not ret:
        return None
    if "skipped" in ret:
        return H.section("retrieval", "Retrieval", ret["skipped"], "")
    ks = sorted({int(k.split("@")[1]) for k in ret if "recall@" in k})
    rows = [[f"R@{k}", ret[f"image_retrieval_recall@{k}"], ret[f"text_retrieval_recall@{k}"]] for k in ks]
    body = H.table(["k", "text → image", "image → text"], rows)
    body += H.table(
        ["CLIPScore (w = 2.5)", "mean"],
        [["matching captions", ret["clipscore_matching"]], ["shuffled captions", ret["clipscore_shuffled"]]],
    )
    return H.section(
        "retrieval",
        "Retrieval and caption scoring",
        f"{ret['n_images']} images, {ret['n_captions']} captions; CLIP_benchmark recall definitions.",
        body,
    )


#: report sections in page order: (anchor, nav label, builder)
SECTIONS: list[tuple[str, str, Callable[[dict[str, Any], dict[str, Any]], str | None]]] = [
    ("overview", "Overview", _overview),
    ("zeroshot", "Zero-shot", _zeroshot),
    ("adapt", "Few-shot", adapt_section),
    ("retrieval", "Retrieval", _retrieval),
    ("ood", "OOD", ood_section),
    ("calibration", "Calibration", calibration_section),
    ("estimate", "Estimation", estimate_section),
]


def write_report(results: dict[str, Any], path: str | os.PathLike, extras: dict[str, Any] | None = None) -> Path:
    """Render ``results`` (and in-memory ``extras`` such as sample images) to a self-contained HTML file."""
    extras = extras or {}
    parts = []
    for anchor, label, build in SECTIONS:
        html = build(results, extras)
        if html:
            parts.append((anchor, label, html))
    meta = f"{results['model']['spec']} on {results['data']['spec']} · cliplab {results['cliplab_version']}"
    doc = H.page("cliplab bench report", meta, parts, footer=f"generated {results['created']} by cliplab bench")
    path = Path(path)
    write_text_atomic(path, doc)
    return path
