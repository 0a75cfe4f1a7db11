"""Stage ``zeroshot``: zero-shot classification of every task of the data (its report section too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cliplab.bench import figures
from cliplab.bench import html as H
from cliplab.bench.figures import HALF, fmt, number, numbers, task_label, task_title
from cliplab.bench.stage import BenchContext, Metric, Stage, StageResult, register_stage
from cliplab.progress import track


@dataclass
class Samples:
    """A sample grid for the report: a random pick of a task's test images with predicted and true labels."""

    dataset: Any
    indices: list[int]
    pred: list[int]
    labels: list[int]
    classnames: list[str]
    task: str | None


def run(ctx: BenchContext) -> StageResult:
    """Zero-shot classification per task (shape, colour, shape+colour and pattern on the built-in world).

    Metrics as CLIP_benchmark: ``acc1``, ``acc5`` (NaN with fewer than 5 classes), ``mean_per_class_recall``.
    Templates: the run's ``ctx.templates`` when given (a suite's per-dataset ``templates``), else the dataset's.
    """
    from cliplab.features.embedding import images_read
    from cliplab.metrics.classification import classification_report, confusion_matrix
    from cliplab.zeroshot import zeroshot_logits, zeroshot_weights

    sets = ctx.data.zeroshot_sets()
    out: dict[str, Any] = {}
    samples: list[Samples] = []
    for task, ds in track(sets, "tasks", enabled=ctx.progress, bar=False, note=lambda item: item[0]):
        feats = ctx.embed(ds)
        ds = images_read(ds, feats)  # --skip-bad-images: row i of feats is image i of ds
        if feats.labels is None or not feats.classnames:
            out[task] = {"skipped": f"dataset {ds.name!r} has no class labels"}
            continue
        templates = ctx.templates_for(ds)
        weights = zeroshot_weights(ctx.model, feats.classnames, templates)
        m = ctx.model
        logits = zeroshot_logits(feats.images, weights, m.logit_scale, m.logit_bias, m.geometry)
        rep = classification_report(logits, feats.labels, feats.classnames)
        pred = logits.argmax(1)
        rep["classnames"] = feats.classnames
        rep["templates"] = ctx.templates_used.get(ds.name)
        rep["confusion_matrix"] = confusion_matrix(pred, feats.labels, len(feats.classnames)).tolist()
        out[task] = rep
        if task in (sets[0][0], "pattern"):  # a random sample (image folders are sorted by class)
            pick = np.random.default_rng(ctx.seed).permutation(len(ds))[:24]
            samples.append(
                Samples(
                    ds,
                    pick.tolist(),
                    pred[pick].tolist(),
                    feats.labels[pick].tolist(),
                    feats.classnames,
                    task,
                )
            )
    return StageResult(out, samples)


def headline(zs: dict[str, Any]) -> list[tuple[str, Any, str]]:
    return [
        ("zero-shot accuracy", number(rep["acc1"]), f"{task_label(task)} · {rep['n']} test images")
        for task, rep in zs.items()
        if isinstance(rep, dict) and "acc1" in rep
    ]


def _confusion(plt: Any, title: str, rep: dict[str, Any]) -> str:
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
    ax.set_title(f"{title} (acc@1 {fmt(rep['acc1'])})")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="share of the true class")
    caption = f"Confusion matrix, {title}; each row sums to 1"
    return H.figure_png(fig, caption, layout="capped" if big else "")


def _top_errors(title: str, rep: dict[str, Any], k: int = 5) -> str:
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
    head = f"<h3>{H.esc(title)}</h3>"
    if not rows:
        return f'<div>{head}<p class="note">No errors.</p></div>'
    return f"<div>{head}{H.table(['true', 'predicted', 'images', 'share of true'], rows)}</div>"


def _samples(samples: Samples, results: dict[str, Any]) -> str:
    ds, pred, lab, names = samples.dataset, samples.pred, samples.labels, samples.classnames
    indices = samples.indices or list(range(len(pred)))
    n = min(len(pred), 24)
    items = [(ds.image(indices[i]), names[pred[i]], names[lab[i]]) for i in range(n)]
    right = sum(p == t for p, t in zip(pred[:n], lab[:n]))
    title = task_title(samples.task, results)
    head = f"<h3>Sample predictions ({H.esc(title)}): {right} of {n} correct</h3>"
    return head + H.sample_grid(items)


def templates_text(record: dict[str, Any] | None) -> str:
    """A templates record in words: ``imagenet80: 80 templates, e.g. “a bad photo of a {}.” (the dataset's
    own)``, ``simple: “a photo of a {}.” (fallback: no templates of its own)``."""
    if not record:
        return "–"
    count, examples = record.get("count") or 0, record.get("examples") or []
    what = f"“{examples[0]}”" if count == 1 and examples else f"{count} template{'s' if count != 1 else ''}"
    if count > 1 and examples:
        what += f", e.g. “{examples[0]}”"
    if record.get("described_classes"):
        what += f" + descriptions of {record['described_classes']} classes"
    name = record.get("name")
    if name and not str(name).startswith("sha256:"):
        what = f"{name}: {what}"
    source = {
        "given": "given with --templates",
        "dataset": "the dataset's own",
        "fallback": "fallback: no templates of its own",
    }.get(record.get("source", ""), record.get("source", ""))
    return f"{what} ({source})"


def _templates_cell(record: dict[str, Any] | None) -> Any:
    return H.Raw(f'<span style="white-space:normal">{H.esc(templates_text(record))}</span>')


def section(results: dict[str, Any], samples: list[Samples] | None) -> str | None:
    """Accuracy per task, sample grids (``samples``: this run's report data), confusion matrices, top errors."""
    zs = results["stages"].get("zeroshot")
    if not zs:
        return None
    plt = figures.plt()
    ok = {t: r for t, r in zs.items() if "acc1" in r}
    titles = {t: task_title(t, results) for t in zs}
    rows = [
        numbers([titles[t], r["acc1"], r["acc5"], r["mean_per_class_recall"], len(r["classnames"]), r["n"]])
        + [_templates_cell(r.get("templates"))]
        for t, r in ok.items()
    ]
    rows += [[titles[t], f"not run: {r['skipped']}", "", "", "", "", ""] for t, r in zs.items() if t not in ok]
    headers = ["task", "acc@1", "acc@5", "mean per-class recall", "classes", "images", "templates"]
    body = H.table(headers, rows)
    for grid in samples or []:  # one grid per task shown
        body += _samples(grid, results)
    figs = [_confusion(plt, titles[t], rep) for t, rep in ok.items() if len(rep.get("classnames", [])) <= 60]
    if figs:
        body += "<h3>Confusion matrices</h3>" + H.figs(figs)
    errors = [_top_errors(titles[t], rep) for t, rep in ok.items() if "confusion_matrix" in rep]
    if errors:
        body += "<h3>Most frequent errors</h3>" + f'<div class="cols">{"".join(errors)}</div>'

    return H.section(
        "zeroshot",
        "Zero-shot classification",
        "Class weights from prompt ensembles (every template filled with the class name, averaged); "
        "logits = scale · cos(image, class weight).",
        body,
    )


register_stage(
    Stage(
        "zeroshot",
        run,
        order=10,
        title="zero-shot",
        nav="Zero-shot",
        section=section,
        headline=headline,
        metrics=(
            Metric("{}/acc1", "*.acc1"),
            Metric("{}/acc5", "*.acc5"),
            Metric("{}/mean_per_class_recall", "*.mean_per_class_recall"),
        ),
    )
)
