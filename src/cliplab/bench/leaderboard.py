"""A suite's results table: ``results.csv``, ``results.md`` and ``leaderboard.html``.

Every cell contributes the metrics its stages declare (``Stage.metrics``, the rows ``--compare`` shows; timings
left out). The leaderboard puts one *primary* metric per dataset in a models × datasets table — the first of
:data:`PRIMARY` the cell has (zero-shot top-1 accuracy, text → image recall@5 as CLIP_benchmark's default
``--recall_k 5``, the linear probe's top-1, the few-shot accuracy at most shots), else its first metric — with
the mean over the datasets each model has a number for.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import math
from pathlib import Path
from typing import Any

from cliplab._io import write_text_atomic
from cliplab.bench import html as H

#: primary metric of a cell, by preference: fnmatch patterns over its metric names
PRIMARY = (
    "zeroshot/*/acc1",
    "retrieval/image_retrieval_recall@5",
    "linear_probe/lp_acc1",
    "adapt/*/16-shot",
    "adapt/*",
)


def cell_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """``metric -> value`` of a run (its stages' declared metrics, no timings)."""
    from cliplab.bench.comparison import metrics

    return {k: v for k, v, _ in metrics(results) if not k.startswith("seconds/")}


def primary(values: dict[str, Any]) -> tuple[str, Any] | None:
    """``(metric, value)`` shown for a cell in the leaderboard (see :data:`PRIMARY`), None without metrics."""
    for pattern in PRIMARY:
        hits = [k for k in values if fnmatch.fnmatchcase(k, pattern)]
        if hits:
            return hits[0], values[hits[0]]
    return next(iter(values.items()), None)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def tables(summary: dict[str, Any], results_of: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """The numbers every format shows: per-cell rows, metric columns, and the models × datasets matrix."""
    cells = summary["cells"]
    per_cell = {
        (c["model"], c["data"]): cell_metrics(results_of[(c["model"], c["data"])])
        for c in cells
        if (c["model"], c["data"]) in results_of
    }
    columns = list(dict.fromkeys(k for m in per_cell.values() for k in m))
    datasets = [d["name"] for d in summary["suite"]["datasets"]]
    models = [m["name"] for m in summary["suite"]["models"]]
    heads: dict[str, str] = {}  # dataset -> its primary metric (from the first model that has one)
    for d in datasets:
        for m in models:
            p = primary(per_cell.get((m, d), {}))
            if p:
                heads[d] = p[0]
                break
    matrix = []
    for m in models:
        row = [per_cell.get((m, d), {}).get(heads.get(d, ""), None) for d in datasets]
        scores = [float(v) for v in row if v is not None and _finite(v)]
        matrix.append(
            {"model": m, "values": row, "mean": sum(scores) / len(scores) if scores else None, "n": len(scores)}
        )
    matrix.sort(key=lambda r: -r["mean"] if r["mean"] is not None else math.inf)
    return {"per_cell": per_cell, "columns": columns, "datasets": datasets, "heads": heads, "matrix": matrix}


def _csv(summary: dict[str, Any], t: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "data", "model_spec", "data_spec", "status", "error", *t["columns"]])
    for c in summary["cells"]:
        values = t["per_cell"].get((c["model"], c["data"]), {})
        row = [c["model"], c["data"], c["model_spec"], c["data_spec"], c["status"], c.get("error", "")]
        w.writerow(row + ["" if not _finite(values.get(k)) else values[k] for k in t["columns"]])
    return buf.getvalue()


def _md_cell(v: Any) -> str:
    return f"{v:.4f}" if _finite(v) else "–"


def _md(summary: dict[str, Any], t: dict[str, Any]) -> str:
    suite = summary["suite"]
    heads = [f"{d} ({t['heads'].get(d, '–').split('/')[-1]})" for d in t["datasets"]]
    lines = [
        f"# {suite['name']}",
        "",
        f"| model | mean | datasets | {' | '.join(heads)} |",
        "|---|---:|---:|" + "---:|" * len(heads),
    ]
    for r in t["matrix"]:
        cells = " | ".join(_md_cell(v) for v in r["values"])
        lines.append(f"| {r['model']} | {_md_cell(r['mean'])} | {r['n']}/{len(t['datasets'])} | {cells} |")
    lines += ["", "Primary metric per dataset: " + "; ".join(f"{d}: `{h}`" for d, h in t["heads"].items()), ""]
    lines += ["| model | data | status | report |", "|---|---|---|---|"]
    for c in summary["cells"]:
        link = f"[report]({c['dir']}/report.html)" if c["status"] != "failed" else c.get("error", "")
        lines.append(f"| {c['model']} | {c['data']} | {c['status']} | {link.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _html(summary: dict[str, Any], t: dict[str, Any]) -> str:
    suite = summary["suite"]
    n = len(t["datasets"])
    heads = ["model", "mean", "datasets", *(f"{d} · {t['heads'].get(d, '–').split('/', 1)[-1]}" for d in t["datasets"])]
    rows = [[r["model"], r["mean"], f"{r['n']}/{n}", *r["values"]] for r in t["matrix"]]
    board = H.table(heads, rows, best={i: "max" for i in [1, *range(3, 3 + n)]})
    lead = (
        f"{len(suite['models'])} model(s) × {n} dataset(s); each dataset's primary metric (the mean is over the "
        "datasets a model has a number for). Every cell links to its own report."
    )
    cell_rows = []
    for c in summary["cells"]:
        if c["status"] == "failed":
            report = H.Raw(f'<span class="note">{H.esc(c.get("error", ""))}</span>')
        else:
            report = H.Raw(
                f'<a href="{H.esc(c["dir"])}/report.html">report</a> · '
                f'<a href="{H.esc(c["dir"])}/results.json">results.json</a>'
            )
        p = primary(t["per_cell"].get((c["model"], c["data"]), {}))
        cell_rows.append([c["model"], c["data"], c["status"], p[0] if p else "–", p[1] if p else None, report])
    cells = H.table(["model", "data", "status", "metric", "value", "files"], cell_rows)
    parts = [
        ("leaderboard", "Leaderboard", H.section("leaderboard", f"Leaderboard: {suite['name']}", lead, board)),
        ("cells", "Cells", H.section("cells", "Cells", "Status and files of every model × dataset run.", cells)),
    ]
    if t["columns"]:
        full = [
            [c["model"], c["data"], *(t["per_cell"].get((c["model"], c["data"]), {}).get(k) for k in t["columns"])]
            for c in summary["cells"]
        ]
        body = H.table(["model", "data", *t["columns"]], full)
        parts.append(("metrics", "All metrics", H.section("metrics", "All metrics", "", body)))
    meta = f"{suite['name']} · {sum(c['status'] != 'failed' for c in summary['cells'])}/{len(summary['cells'])} cells"
    return H.page("cliplab leaderboard", meta, parts, footer="cliplab bench suite")


def write_leaderboard(
    summary: dict[str, Any], results_of: dict[tuple[str, str], dict[str, Any]], output_dir: str | Path
) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and ``leaderboard.html`` into ``output_dir``; returns their paths."""
    out = Path(output_dir)
    t = tables(summary, results_of)
    paths = {"csv": out / "results.csv", "md": out / "results.md", "html": out / "leaderboard.html"}
    write_text_atomic(paths["csv"], _csv(summary, t))
    write_text_atomic(paths["md"], _md(summary, t))
    write_text_atomic(paths["html"], _html(summary, t))
    return paths
