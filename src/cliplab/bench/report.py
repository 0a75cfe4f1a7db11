"""``report.html``: a self-contained page (tables + matplotlib figures as embedded PNGs) for one bench run."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cliplab._io import write_text_atomic
from cliplab.bench import figures
from cliplab.bench import html as H
from cliplab.bench.figures import HALF, MISSING, builtin_world, finite, fmt, name, number, numbers, rank
from cliplab.bench.report_sections import adapt_section, calibration_section, estimate_section, ood_section

STEP_NAMES = {
    "load_model": "load model",
    "zeroshot": "zero-shot",
    "adapt": "few-shot adaptation",
    "ood": "OOD detection",
    "estimate": "accuracy estimation",
    "report": "report figures",
}


def _duration(seconds: float | None) -> str:
    if not finite(seconds):
        return MISSING
    return f"{seconds:.1f} s" if seconds < 90 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _best_few_shot(results: dict[str, Any]) -> tuple[str, Any, str] | None:
    res = results["stages"].get("adapt") or {}
    if "results" not in res or not res.get("shots"):
        return None
    k = str(res["shots"][-1])
    adapters = {m: r for m, r in res["results"].items() if m != "zeroshot" and k in r}
    if not adapters:
        return None
    method, r = max(adapters.items(), key=lambda kv: rank(kv[1][k]["mean"]))
    mean, zs = r[k]["mean"], res.get("zeroshot")
    gain = fmt(100 * (mean - zs), "+.1f") if finite(mean) and finite(zs) else MISSING
    return f"best {k}-shot accuracy", number(mean), f"{name(method)} · {gain} pt over zero-shot"


def _headline(results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """The overview cards: one or two numbers per stage that ran."""
    stages = results["stages"]
    items: list[tuple[str, Any, str]] = []
    for task, rep in (stages.get("zeroshot") or {}).items():
        if "acc1" in rep:
            items.append(("zero-shot accuracy", number(rep["acc1"]), f"{name(task)} task · {rep['n']} images"))
    best = _best_few_shot(results)
    if best:
        items.append(best)
    ret = stages.get("retrieval") or {}
    if "image_retrieval_recall@1" in ret:
        detail = f"image → text R@1 {fmt(ret.get('text_retrieval_recall@1'))} · {ret['n_images']} images"
        items.append(("text → image R@1", number(ret["image_retrieval_recall@1"]), detail))
    for r in (stages.get("ood") or {}).values():
        if isinstance(r, dict) and r.get("sets"):
            (set_name, table), *_ = r["sets"].items()
            method = max(table, key=lambda m: rank(table[m]["auroc"]))
            items.append(("best OOD AUROC", number(table[method]["auroc"]), f"{name(method)} · {set_name}"))
    cal = stages.get("calibration") or {}
    if "ece" in cal:
        detail = f"{fmt(cal.get('ece_scaled'))} after temperature scaling"
        items.append(("calibration error (ECE)", number(cal["ece"]), detail))
    est = (stages.get("estimate") or {}).get("estimators")
    if est:
        method = max(est, key=lambda m: rank(est[m]["spearman"]))
        n_sets = len(stages["estimate"]["accuracy"])
        rho = number(est[method]["spearman"])
        items.append(("accuracy estimation ρ", rho, f"{name(method)} · {n_sets} shifted sets"))
    timings = results["timings"]
    load = timings.get("load_model")
    items.append(("total time", _duration(timings.get("total")), f"model load {_duration(load)}" if load else ""))
    return items


def _overview(results: dict[str, Any], extras: dict[str, Any]) -> str:
    timings = results["timings"]
    total = timings.get("total")
    steps = [(k, v) for k, v in timings.items() if k != "total"]
    rows = [numbers([STEP_NAMES.get(k, k), v, _share(v, total)]) for k, v in steps]
    rows.append(numbers([H.Raw("<b>total</b>"), total, H.Raw("")]))
    model, data = results["model"], results["data"]
    bias = model["logit_bias"]
    info = H.table(
        ["", ""],
        [
            ["model", model["spec"]],
            ["fingerprint", model["fingerprint"]],
            [
                "logits",
                f"{fmt(model['logit_scale'], '.2f')} · {model['geometry']} similarity"
                + ("" if bias is None else f" {'−' if finite(bias) and bias < 0 else '+'} {fmt(abs(bias), '.2f')}"),
            ],
            ["data", data["spec"]],
            *([["OOD data", ", ".join(data["ood"])]] if data.get("ood") else []),
            *([["images per set", data.get("n")]] if builtin_world(results) else _folder_size(results)),
            [
                "few-shot",
                f"shots {_join(results['config'].get('shots'))}; seeds {_join(results['config'].get('seeds'))}",
            ],
            ["cliplab", results["cliplab_version"]],
            ["python · platform", f"{results['environment']['python']} · {results['environment']['platform']}"],
            ["created", results["created"].replace("T", " ").replace("+00:00", " UTC")],
        ],
        kv=True,
    )
    return H.section(
        "overview",
        "Overview",
        f"{model['spec']} assessed on {data['spec']}: the headline numbers of every stage, the run, and where "
        "the time went.",
        H.cards(_headline(results))
        + '<div class="cols"><div><h3>Run</h3>'
        + info
        + "</div><div><h3>Time per step (seconds)</h3>"
        + H.table(["step", "seconds", "share"], rows, digits=2)
        + "</div></div>",
    )


def _share(seconds: float | None, total: float | None) -> H.Raw:
    if not (finite(seconds) and finite(total)):
        return H.Raw(MISSING)
    share = seconds / total if total else 0.0
    return H.Raw(f"{H.bar(share)}{100 * share:.0f}%")


def _folder_size(results: dict[str, Any]) -> list[list[Any]]:
    zs = (results["stages"].get("zeroshot") or {}).get("classes") or {}
    return [["images", f"{zs['n']} in {len(zs['classnames'])} classes"]] if "n" in zs else []


def _join(values: Any) -> str:
    return ", ".join(str(v) for v in values or [])


def _confusion(plt: Any, task: str, rep: dict[str, Any]) -> str:
    cm = np.asarray(rep["confusion_matrix"], dtype=float)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = rep["classnames"]
    big = len(names) > 12
    if big:
        side = min(7.8, 0.2 * len(names) + 1.6)
        fig, ax = plt.subplots(figsize=(side + 1.2, side))
    else:
        fig, ax = plt.subplots(figsize=HALF)
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    ax.spines[:].set_visible(False)
    size = 8 if big else 10
    ax.set_xticks(range(len(names)), names, rotation=90 if big else 45, ha="center" if big else "right", fontsize=size)
    ax.set_yticks(range(len(names)), names, fontsize=size)
    if not big:  # the share of each cell, where it is legible
        for (i, j), v in np.ndenumerate(cm):
            if v >= 0.005:
                ax.text(
                    j,
                    i,
                    f"{v:.2f}"[1:] if v < 1 else "1",
                    ha="center",
                    va="center",
                    fontsize=8.5,
                    color="white" if v > 0.55 else "#1d2433",
                )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{name(task)} task (acc@1 {fmt(rep['acc1'])})")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="share of the true class")
    caption = f"Confusion matrix, {name(task)} task; each row sums to 1"
    return H.figure_png(fig, caption, layout="capped" if big else "")


def _top_errors(task: str, rep: dict[str, Any], k: int = 5) -> str:
    """The ``k`` most frequent (true → predicted) confusions of a task."""
    cm = np.asarray(rep["confusion_matrix"], dtype=float)
    names = rep["classnames"]
    per_class = np.maximum(cm.sum(1), 1)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None)[:k]
    rows = []
    for flat in order:
        i, j = divmod(int(flat), len(names))
        if off[i, j] > 0:
            rows.append([names[i], names[j], int(off[i, j]), off[i, j] / per_class[i]])
    head = f"<h3>{H.esc(name(task))} task</h3>"
    if not rows:
        return f'<div>{head}<p class="note">No errors.</p></div>'
    return f"<div>{head}{H.table(['true', 'predicted', 'images', 'share of true'], rows)}</div>"


def _samples(samples: dict[str, Any]) -> str:
    ds, pred, lab, names = samples["dataset"], samples["pred"], samples["labels"], samples["classnames"]
    indices = samples.get("indices") or list(range(len(pred)))
    n = min(len(pred), 24)
    items = [(ds.image(indices[i]), names[pred[i]], names[lab[i]]) for i in range(n)]
    right = sum(p == t for p, t in zip(pred[:n], lab[:n]))
    task = samples.get("task")
    head = f"<h3>Sample predictions{f' ({name(task)} task)' if task else ''}: {right} of {n} correct</h3>"
    return head + H.sample_grid(items)


def _zeroshot(results: dict[str, Any], extras: dict[str, Any]) -> str | None:
    zs = results["stages"].get("zeroshot")
    if not zs:
        return None
    plt = figures.plt()
    ok = {t: r for t, r in zs.items() if "acc1" in r}
    rows = [
        numbers([name(t), r["acc1"], r["acc5"], r["mean_per_class_recall"], len(r["classnames"]), r["n"]])
        for t, r in ok.items()
    ]
    rows += [[name(t), f"not run: {r['skipped']}", "", "", "", ""] for t, r in zs.items() if t not in ok]
    body = H.table(["task", "acc@1", "acc@5", "mean per-class recall", "classes", "images"], rows)
    samples = extras.get("samples") or []
    for grid in [samples] if isinstance(samples, dict) else samples:  # one grid per task shown
        body += _samples(grid)
    figs = [_confusion(plt, task, rep) for task, rep in ok.items() if len(rep.get("classnames", [])) <= 60]
    if figs:
        body += "<h3>Confusion matrices</h3>" + H.figs(figs)
    errors = [_top_errors(task, rep) for task, rep in ok.items() if "confusion_matrix" in rep]
    if errors:
        body += "<h3>Most frequent errors</h3>" + f'<div class="cols">{"".join(errors)}</div>'

    return H.section(
        "zeroshot",
        "Zero-shot classification",
        "Class weights from prompt ensembles (every template filled with the class name, averaged); "
        "logits = scale · cos(image, class weight).",
        body,
    )


def _retrieval(results: dict[str, Any], extras: dict[str, Any]) -> str | None:
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
        "(CLIP_benchmark definitions).",
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
    timings = results["timings"]
    meta = (
        f"{results['model']['spec']} on {results['data']['spec']} · {_duration(timings.get('total'))} · "
        f"{results['created'].replace('T', ' ').replace('+00:00', ' UTC')}"
    )
    footer = f"cliplab {results['cliplab_version']} · results.json schema version {results['schema_version']}"
    doc = H.page("cliplab bench report", meta, parts, footer=footer)
    path = Path(path)
    write_text_atomic(path, doc)
    return path
