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


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.1f} s" if seconds < 90 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _best_few_shot(results: dict[str, Any]) -> tuple[str, Any] | None:
    res = results["stages"].get("adapt") or {}
    if "results" not in res or not res.get("shots"):
        return None
    k = str(res["shots"][-1])
    adapters = {m: r for m, r in res["results"].items() if m != "zeroshot" and k in r}
    if not adapters:
        return None
    best = max(adapters.items(), key=lambda kv: kv[1][k]["mean"])
    return f"best {k}-shot · {best[0]}", best[1][k]["mean"]


def _overview(results: dict[str, Any], extras: dict[str, Any]) -> str:
    items: list[tuple[str, Any]] = []
    zs = results["stages"].get("zeroshot", {})
    for task, rep in zs.items():
        if "acc1" in rep:
            items.append((f"zero-shot acc · {task}", rep["acc1"]))
    best = _best_few_shot(results)
    if best:
        items.append(best)
    ret = results["stages"].get("retrieval", {})
    if "image_retrieval_recall@1" in ret:
        items.append(("text→image R@1", ret["image_retrieval_recall@1"]))
        items.append(("image→text R@1", ret["text_retrieval_recall@1"]))
    timings = results["timings"]
    items.append(("total time", _duration(timings.get("total"))))
    total = timings.get("total") or 0.0
    rows = [[k, v, f"{100 * v / total:.0f}%" if total and k != "total" else ""] for k, v in timings.items()]
    model, data = results["model"], results["data"]
    info = H.table(
        ["", ""],
        [
            ["model", model["spec"]],
            ["fingerprint", model["fingerprint"]],
            ["geometry", model["geometry"]],
            ["logit scale", model["logit_scale"]],
            ["logit bias", model["logit_bias"]],
            ["data", data["spec"]],
            *([["OOD data", ", ".join(data["ood"])]] if data.get("ood") else []),
            ["few-shot seeds", ", ".join(str(s) for s in results["config"].get("seeds", []))],
            ["cliplab", results["cliplab_version"]],
            ["python / platform", f"{results['environment']['python']} · {results['environment']['platform']}"],
            ["created", results["created"]],
        ],
    )
    return H.section(
        "overview",
        "Overview",
        "Headline numbers, run configuration and where the time went.",
        H.cards(items)
        + '<div class="cols"><div><h3>Run</h3>'
        + info
        + "</div><div><h3>Timings (s)</h3>"
        + H.table(["step", "seconds", "share"], rows, digits=2)
        + "</div></div>",
    )


def _confusion(plt: Any, task: str, rep: dict[str, Any]) -> str:
    cm = np.asarray(rep["confusion_matrix"], dtype=float)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = rep["classnames"]
    big = len(names) > 12
    side = 0.24 * len(names) + 2.2 if big else 4.6
    fig, ax = plt.subplots(figsize=(side + 0.8, side))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    size = 7 if big else 9
    ax.set_xticks(
        range(len(names)), names, rotation=60 if not big else 90, ha="right" if not big else "center", fontsize=size
    )
    ax.set_yticks(range(len(names)), names, fontsize=size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{task}: confusion (rows sum to 1)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    return H.figure_png(fig, f"Confusion matrix, {task} task", layout="square" if big else "")


def _samples(plt: Any, samples: dict[str, Any]) -> str:
    ds, pred, lab, names = samples["dataset"], samples["pred"], samples["labels"], samples["classnames"]
    indices = samples.get("indices") or list(range(len(pred)))
    n = min(len(pred), 24)
    cols = min(8, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.65 * cols, 1.95 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(ds.image(indices[i]))
        ok = pred[i] == lab[i]
        title = names[pred[i]] if ok else f"{names[pred[i]]} ≠ {names[lab[i]]}"
        ax.set_title(title, fontsize=9 if ok else 8, color="#136f3a" if ok else "#b3261e")
    fig.suptitle("zero-shot predictions on test images (green: correct; red: predicted ≠ true)", fontsize=11)
    fig.tight_layout()
    return H.figure_png(
        fig, f"Sample predictions ({sum(p == t for p, t in zip(pred[:n], lab[:n]))}/{n} correct)", layout="wide"
    )


def _zeroshot(results: dict[str, Any], extras: dict[str, Any]) -> str | None:
    zs = results["stages"].get("zeroshot")
    if not zs:
        return None
    plt = _plt()
    rows = [[t, r.get("acc1"), r.get("acc5"), r.get("mean_per_class_recall"), r.get("n")] for t, r in zs.items()]
    body = H.table(["task", "acc@1", "acc@5", "mean per-class recall", "n"], rows, best={1: "max"})
    figs = []
    samples = extras.get("samples")
    if samples:
        figs.append(_samples(plt, samples))
    for task, rep in zs.items():
        if "confusion_matrix" in rep and len(rep["classnames"]) <= 60:
            figs.append(_confusion(plt, task, rep))
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
        return H.skipped("retrieval", "Retrieval and caption scoring", ret["skipped"])
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


def render_sections(results: dict[str, Any], extras: dict[str, Any] | None = None) -> dict[str, str]:
    """The HTML of every section but the overview (the figures: the slow part), keyed by anchor."""
    extras = extras or {}
    out = {}
    for anchor, _, build in SECTIONS:
        if build is not _overview:
            html = build(results, extras)
            if html:
                out[anchor] = html
    return out


def write_report(
    results: dict[str, Any],
    path: str | os.PathLike,
    extras: dict[str, Any] | None = None,
    *,
    rendered: dict[str, str] | None = None,
) -> Path:
    """Write ``results`` (and in-memory ``extras`` such as sample images) as a self-contained HTML file.

    ``rendered``: sections from :func:`render_sections` (the overview, with the final timings, is built here).
    """
    extras = extras or {}
    rendered = render_sections(results, extras) if rendered is None else rendered
    rendered = {"overview": _overview(results, extras), **rendered}
    parts = [(anchor, label, rendered[anchor]) for anchor, label, _ in SECTIONS if anchor in rendered]
    meta = f"{results['model']['spec']} on {results['data']['spec']} · cliplab {results['cliplab_version']}"
    doc = H.page("cliplab bench report", meta, parts, footer=f"generated {results['created']} by cliplab bench")
    path = Path(path)
    write_text_atomic(path, doc)
    return path
