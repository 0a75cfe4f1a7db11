"""``report.html``: a self-contained page (tables + matplotlib figures as embedded PNGs) for one bench run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cliplab._io import write_text_atomic
from cliplab.bench import html as H
from cliplab.bench.data_kinds import data_class_attr, data_kind
from cliplab.bench.figures import MISSING, data_label, finite, fmt, numbers
from cliplab.bench.stage import STAGES, Section, Stage

#: names in the report's time table of the timing keys that are not stages (stages: their ``Stage.title``)
STEP_NAMES = {"load_model": "load model", "report": "report figures"}


def _step_name(key: str) -> str:
    return STAGES[key].title if key in STAGES else STEP_NAMES.get(key, key)


def _duration(seconds: float | None) -> str:
    if seconds is None or not finite(seconds):
        return MISSING
    return f"{seconds:.1f} s" if seconds < 90 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def headlines(results: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    """``(stage title, label, value, detail)`` of every stage's headline items (stages that ran, in stage order);
    each detail names the stage's task (the stage's own words) and the run's data."""
    data = data_label(results)
    items: list[tuple[str, str, Any, str]] = []
    for stage_name, stage in STAGES.items():
        r = results["stages"].get(stage_name)
        if stage.headline and isinstance(r, dict):
            for label, value, *detail in stage.headline(r):
                text = " · ".join(p for p in (*detail[:1], data) if p)
                items.append((stage.title, label, value, text))
    return items


def _headline(results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """The overview cards: each stage's headline items, then the total time."""
    items = [(label, value, detail) for _, label, value, detail in headlines(results)]
    timings = results["timings"]
    load = timings.get("load_model")
    items.append(("total time", _duration(timings.get("total")), f"model load {_duration(load)}" if load else ""))
    return items


def _overview(results: dict[str, Any], report_data: Any = None) -> str:
    timings = results["timings"]
    total = timings.get("total")
    steps = [(k, v) for k, v in timings.items() if k != "total"]
    rows = [numbers([_step_name(k), v, _share(v, total)]) for k, v in steps]
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
            ["data", f"{data['spec']} ({data.get('kind') or data_kind(data['spec'])})"],
            *([["OOD data", ", ".join(data["ood"])]] if data.get("ood") else []),
            *data_class_attr(data["spec"], "size_rows")(results),
            *_few_shot_rows(results),
            *_templates_rows(results),
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
        + _skipped_images(results)
        + '<div class="cols"><div><h3>Run</h3>'
        + info
        + "</div><div><h3>Time per step (seconds)</h3>"
        + H.table(["step", "seconds", "share"], rows, digits=2)
        + "</div></div>",
    )


def _few_shot_rows(results: dict[str, Any]) -> list[list[Any]]:
    """The few-shot shots and seeds, when the few-shot stage ran."""
    if "adapt" not in results["stages"]:
        return []
    config = results["config"]
    return [["few-shot", f"shots {_join(config.get('shots'))}; seeds {_join(config.get('seeds'))}"]]


def _templates_rows(results: dict[str, Any]) -> list[list[Any]]:
    """One row per dataset whose classifiers used templates (``results["templates"]``; absent in older files)."""
    from cliplab.bench.stages.zeroshot import templates_text

    used = results.get("templates") or {}
    if len(used) == 1:
        return [["templates", templates_text(next(iter(used.values())))]]
    rows = []
    for source in ("given", "dataset", "fallback"):
        names = [n for n, r in used.items() if r.get("source") == source]
        if names and source == "dataset":
            rows.append(["templates", f"each data set's own ({', '.join(names)}; see the zero-shot section)"])
        elif names:
            rows.append(["templates", f"{templates_text(used[names[0]])}, for {', '.join(names)}"])
    return rows


#: at most this many unreadable images are listed in the report (all are in results.json)
MAX_SKIPPED_LISTED = 20


def _skipped_images(results: dict[str, Any]) -> str:
    """A note listing the images skipped as unreadable (``skipped_images``: [{file, error}], with
    ``--skip-bad-images``); empty when there are none or the file predates the key."""
    skipped = [s for s in results.get("skipped_images") or [] if isinstance(s, dict)]
    if not skipped:
        return ""
    items = "".join(
        f"<li><code>{H.esc(s.get('file', '?'))}</code>: {H.esc(s.get('error', ''))}</li>"
        for s in skipped[:MAX_SKIPPED_LISTED]
    )
    more = len(skipped) - MAX_SKIPPED_LISTED
    tail = f"<li>… and {more} more (all in results.json, <code>skipped_images</code>)</li>" if more > 0 else ""
    n = len(skipped)
    return (
        f'<div class="note" id="skipped-images"><b>{n} image{"s" if n != 1 else ""} could not be read and '
        f"{'were' if n != 1 else 'was'} skipped</b> (--skip-bad-images); every number below leaves "
        f"{'them' if n != 1 else 'it'} out.<ul>{items}{tail}</ul></div>"
    )


def _share(seconds: float | None, total: float | None) -> H.Raw:
    if seconds is None or total is None or not (finite(seconds) and finite(total)):
        return H.Raw(MISSING)
    share = seconds / total if total else 0.0
    return H.Raw(f"{H.bar(share)}{100 * share:.0f}%")


def _join(values: Any) -> str:
    return ", ".join(str(v) for v in values or [])


def _metrics_section(stage: Stage) -> Section:
    """The default section of a stage without its own: a table of its metrics."""

    def build(results: dict[str, Any], data: Any = None) -> str | None:
        r = results["stages"].get(stage.name)
        if r is None:
            return None
        if isinstance(r, dict) and "skipped" in r:
            return H.skipped(stage.name, stage.title, r["skipped"])
        rows = [numbers([key.split("/", 1)[1], v]) for key, v, _ in stage.values(r)]
        return H.section(stage.name, stage.title, "", H.table(["metric", "value"], rows))

    return build


def sections() -> list[tuple[str, str, Section]]:
    """Report sections in page order: (anchor, nav label, builder); the overview, then every registered stage."""
    return [("overview", "Overview", _overview)] + [
        (s.name, s.nav, s.section or _metrics_section(s)) for s in STAGES.values()
    ]


def render_sections(results: dict[str, Any], report_data: dict[str, Any] | None = None) -> dict[str, str]:
    """The HTML of every section but the overview (the figures: the slow part), keyed by anchor.

    ``report_data``: stage name -> the in-memory data its ``run`` returned for its section (absent: None).
    """
    report_data = report_data or {}
    out = {}
    for anchor, _, build in sections()[1:]:
        html = build(results, report_data.get(anchor))
        if html:
            out[anchor] = html
    return out


def write_report(
    results: dict[str, Any],
    path: str | os.PathLike,
    report_data: dict[str, Any] | None = None,
    *,
    rendered: dict[str, str] | None = None,
    links: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write ``results`` (and each stage's in-memory ``report_data``, such as sample images) as one HTML file.

    ``rendered``: sections from :func:`render_sections` (the overview, with the final timings, is built here).
    ``links``: ``(label, relative URL)`` pages linked from the navigation (a suite's leaderboard).
    """
    rendered = render_sections(results, report_data) if rendered is None else rendered
    rendered = {"overview": _overview(results), **rendered}
    parts = [(anchor, label, rendered[anchor]) for anchor, label, _ in sections() if anchor in rendered]
    timings = results["timings"]
    meta = (
        f"{results['model']['spec']} on {results['data']['spec']} · {_duration(timings.get('total'))} · "
        f"{results['created'].replace('T', ' ').replace('+00:00', ' UTC')}"
    )
    footer = f"cliplab {results['cliplab_version']} · results.json schema version {results['schema_version']}"
    doc = H.page("cliplab bench report", meta, parts, footer=footer, links=links)
    path = Path(path)
    write_text_atomic(path, doc)
    return path
