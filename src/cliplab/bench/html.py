"""A tiny HTML builder for self-contained reports: sections, tables, embedded PNG figures."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import Any

CSS = """
:root { --fg:#1d2433; --muted:#5b6475; --line:#e3e7ef; --accent:#3a63d8; --bg:#f4f6fa; --good:#136f3a;
        --bad:#b3261e; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif; color:var(--fg);
       background:var(--bg); }
header { background:#18213a; color:#fff; padding:26px 0 20px; }
header > div, nav > div { max-width:1180px; margin:0 auto; padding:0 40px; }
header h1 { margin:0 0 4px; font-size:26px; letter-spacing:.2px; }
header .meta { color:#b8c2dc; font-size:14px; }
nav { position:sticky; top:0; background:#fff; border-bottom:1px solid var(--line); padding:9px 0; z-index:2;
      box-shadow:0 1px 3px rgba(24,33,58,.06); }
nav a { color:var(--accent); text-decoration:none; margin-right:22px; font-size:14px; font-weight:500; }
nav a:hover { text-decoration:underline; }
main { max-width:1180px; margin:0 auto; padding:6px 40px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; margin:20px 0; padding:20px 26px 12px;
          scroll-margin-top:52px; }
section h2 { margin:0 0 2px; font-size:21px; }
section p.lead { color:var(--muted); margin:0 0 14px; max-width:900px; }
h3 { font-size:15px; margin:20px 0 8px; }
table { border-collapse:collapse; margin:4px 0 16px; font-size:14px; font-variant-numeric:tabular-nums;
        max-width:100%; }
th, td { padding:5px 14px; border-bottom:1px solid var(--line); text-align:left; white-space:nowrap; }
th { background:#f1f4fa; font-weight:600; border-bottom:1px solid #d5dbe7; }
th.n, td.n { text-align:right; min-width:78px; }
tr:hover td { background:#fafbfe; }
td.best { font-weight:700; color:var(--good); }
table.kv th { display:none; }
table.kv td:first-child { color:var(--muted); padding-right:28px; }
table.kv td { white-space:normal; overflow-wrap:anywhere; }
.figs { display:flex; flex-wrap:wrap; gap:18px; margin:8px 0 16px; }
figure { margin:0; flex:1 1 380px; max-width:calc(50% - 9px); }
figure.wide { flex-basis:100%; max-width:100%; }
figure img { display:block; width:100%; border:1px solid var(--line); border-radius:6px; background:#fff; }
figcaption { color:var(--muted); font-size:13px; margin-top:5px; }
@media (max-width: 820px) { figure { max-width:100%; } main { padding:8px 12px 40px; }
  table { display:block; max-width:100%; overflow-x:auto; } .cols table { width:auto; } }
.note { color:var(--muted); background:#f6f7fa; border:1px dashed #cfd5e1; border-radius:8px; padding:10px 14px; }
.cols { display:grid; grid-template-columns:repeat(auto-fill, minmax(340px, 1fr)); gap:8px 30px; align-items:start; }
.cols table { width:100%; }
.cols figure { max-width:100%; }
figure.capped { flex-basis:100%; max-width:840px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(170px, 1fr)); gap:12px; margin:8px 0 6px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 14px; background:#fbfcfe; }
.card .v { font-size:25px; font-weight:700; line-height:1.25; font-variant-numeric:tabular-nums; }
.card .k { font-size:13px; font-weight:600; }
.card .s { color:var(--muted); font-size:12px; }
.bar { display:inline-block; margin-right:8px; height:9px; border-radius:2px; background:#8aa4e8;
       vertical-align:middle; }
.samples { display:grid; grid-template-columns:repeat(auto-fill, minmax(118px, 1fr)); gap:12px 10px;
           margin:8px 0 6px; }
.sample { margin:0; font-size:13px; line-height:1.3; text-align:center; }
.sample img { display:block; width:100%; aspect-ratio:1; object-fit:cover; border-radius:6px;
              border:3px solid #cfe8d6; image-rendering:auto; }
.sample.wrong img { border-color:#f0b8b3; }
.sample .p { font-weight:600; color:var(--good); margin-top:3px; overflow-wrap:anywhere; }
.sample.wrong .p { color:var(--bad); }
.sample .t { color:var(--muted); font-size:12px; overflow-wrap:anywhere; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:8px 20px 24px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value))


class Raw(str):
    """A table cell or card value that is HTML already (inserted unescaped)."""


def fmt_cell(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"  # missing (null in results.json, NaN in memory)
    if isinstance(value, float):
        if value and abs(value) < 0.5 * 10.0**-digits:  # would print as 0.000: e.g. a weight decay of 1e-06
            return f"{value:.2g}"
        return f"{value:.{digits}f}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    best: dict[int, str] | None = None,
    digits: int | dict[int, int] = 3,
    kv: bool = False,
) -> str:
    """An HTML table; numeric columns are right-aligned.

    ``best`` maps a column index to "max"/"min" to bold the best value; ``digits``: decimals of floats, for
    every column or per column index (default 3); ``kv``: a key/value list (no header, values left-aligned).
    """
    marks: dict[int, Any] = {}
    for col, how in (best or {}).items():
        values = [r[col] for r in rows if _is_number(r[col])]
        if len(values) > 1 and max(values) > min(values):  # nothing to single out when all are equal
            marks[col] = max(values) if how == "max" else min(values)
    numeric = {i for i in range(len(headers)) if not kv and any(_is_number(r[i]) for r in rows if i < len(r))}
    num = ' class="n"'
    head = "".join(f"<th{num if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = []
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            cls = " ".join(c for c, on in (("n", i in numeric), ("best", i in marks and v == marks[i])) if on)
            places = digits if isinstance(digits, int) else digits.get(i, 3)
            text = v if isinstance(v, Raw) else esc(fmt_cell(v, places))
            attr = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attr}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers) and not kv else ""
    cls = ' class="kv"' if kv else ""
    return f"<table{cls}>{thead}<tbody>{''.join(body)}</tbody></table>"


def bar(share: float | None) -> Raw:
    """A horizontal bar cell, ``share`` in [0, 1]; an empty cell for a missing number (None or NaN)."""
    if share is None or share != share:
        return Raw("")
    return Raw(f'<span class="bar" style="width:{100 * max(0.0, min(1.0, share)):.1f}%"></span>')


def figure_png(fig: Any, caption: str = "", *, layout: str = "") -> str:
    """A matplotlib figure as an embedded ``<img>`` (base64 PNG); the figure is closed.

    ``layout``: ``""`` (half width, two per row), ``"wide"`` (the full width of the section) or ``"capped"``
    (a row of its own, at most 840 px wide).
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=140, bbox_inches="tight", pad_inches=0.12)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    cls = f' class="{esc(layout)}"' if layout else ""
    return f'<figure{cls}><img alt="{esc(caption)}" src="data:image/png;base64,{data}"/>{cap}</figure>'


def image_data_uri(image: Any, max_side: int = 192) -> str:
    """A PIL image as a ``data:`` URI: small images as PNG, photos shrunk to ``max_side`` as JPEG."""
    image = image.convert("RGB")
    buf = io.BytesIO()
    if max(image.size) <= max_side:
        image.save(buf, format="PNG", optimize=True)
        kind = "png"
    else:
        image = image.copy()
        image.thumbnail((max_side, max_side))
        image.save(buf, format="JPEG", quality=85)
        kind = "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(buf.getvalue()).decode()}"


def sample_grid(items: Sequence[tuple[Any, str, str]]) -> str:
    """Thumbnails with their predicted (and, when wrong, true) class: ``(PIL image, predicted, true)``."""
    cells = []
    for image, pred, true in items:
        ok = pred == true
        alt = f"predicted {pred}" + ("" if ok else f", true {true}")
        sub = '<div class="t">correct</div>' if ok else f'<div class="t">true: {esc(true)}</div>'
        cells.append(
            f'<div class="sample{"" if ok else " wrong"}"><img alt="{esc(alt)}" src="{image_data_uri(image)}"/>'
            f'<div class="p">{esc(pred)}</div>{sub}</div>'
        )
    return f'<div class="samples">{"".join(cells)}</div>'


def cards(items: Sequence[tuple[str, Any] | tuple[str, Any, str]]) -> str:
    """Headline numbers: (label, value) or (label, value, detail) per card."""
    inner = []
    for item in items:
        label, value, detail = (*item, "")[:3]
        text = value if isinstance(value, Raw) else esc(fmt_cell(value))
        sub = f'<div class="s">{esc(detail)}</div>' if detail else ""
        inner.append(f'<div class="card"><div class="v">{text}</div><div class="k">{esc(label)}</div>{sub}</div>')
    return f'<div class="cards">{"".join(inner)}</div>'


def figs(figures: Sequence[str]) -> str:
    return f'<div class="figs">{"".join(figures)}</div>' if figures else ""


def section(anchor: str, title: str, lead: str, body: str) -> str:
    lead_html = f'<p class="lead">{esc(lead)}</p>' if lead else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{lead_html}{body}</section>'


def skipped(anchor: str, title: str, reason: str) -> str:
    """A section for a stage that did not run, saying why."""
    return section(anchor, title, "", f'<p class="note">Not run: {esc(reason)}</p>')


def page(
    title: str,
    meta: str,
    sections: Sequence[tuple[str, str, str]],
    footer: str = "",
    links: Sequence[tuple[str, str]] = (),
) -> str:
    """A whole document; ``sections`` are (anchor, nav label, html); ``links`` (label, relative URL) end the nav."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(label)}</a>' for a, label, _ in sections)
    nav += "".join(f'<a href="{esc(url)}">{esc(label)}</a>' for label, url in links)
    body = "".join(s for _, _, s in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><div><h1>{esc(title)}</h1><div class="meta">{esc(meta)}</div></div></header>'
        f"<nav><div>{nav}</div></nav><main>{body}</main><footer>{esc(footer)}</footer></body></html>"
    )
