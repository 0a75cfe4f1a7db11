"""A tiny HTML builder for self-contained reports: sections, tables, embedded PNG figures."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

CSS = """
:root { --fg:#1d2433; --muted:#5b6475; --line:#e3e7ef; --accent:#3a63d8; --bg:#f7f8fb; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif; color:var(--fg);
       background:var(--bg); }
header { background:#18213a; color:#fff; padding:28px 40px 22px; }
header h1 { margin:0 0 6px; font-size:26px; letter-spacing:.2px; }
header .meta { color:#b8c2dc; font-size:13px; }
nav { position:sticky; top:0; background:#fff; border-bottom:1px solid var(--line); padding:8px 40px; z-index:2; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; font-size:14px; }
main { max-width:1180px; margin:0 auto; padding:12px 40px 60px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; margin:22px 0; padding:20px 26px; }
section h2 { margin:0 0 4px; font-size:20px; }
section p.lead { color:var(--muted); margin:0 0 14px; }
h3 { font-size:15px; margin:18px 0 8px; }
table { border-collapse:collapse; width:100%; margin:6px 0 14px; font-size:14px; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th:first-child, td:first-child { text-align:left; }
th { background:#f1f4fa; font-weight:600; }
tr:hover td { background:#fafbfe; }
td.best { font-weight:700; color:#136f3a; }
.figs { display:flex; flex-wrap:wrap; gap:18px; }
figure { margin:0; flex:1 1 360px; max-width:calc(50% - 9px); }
figure.wide { flex-basis:100%; max-width:100%; }
figure.square { flex-basis:100%; max-width:760px; }
figure img { width:100%; border:1px solid var(--line); border-radius:6px; background:#fff; }
@media (max-width: 820px) { figure { max-width:100%; } main { padding:8px 12px 40px; } }
.note { color:var(--muted); background:#f6f7fa; border:1px dashed var(--line); border-radius:8px; padding:10px 14px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
.cols { display:grid; grid-template-columns:minmax(0,1.4fr) minmax(0,1fr); gap:26px; }
.cols td { white-space:normal; overflow-wrap:anywhere; }
@media (max-width: 820px) { .cols { grid-template-columns:1fr; } }
.cards { display:flex; flex-wrap:wrap; gap:14px; margin:8px 0 4px; }
.card { flex:1 1 120px; border:1px solid var(--line); border-radius:8px; padding:10px 14px; }
.card .v { font-size:24px; font-weight:700; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.4px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:20px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt_cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, best: dict[int, str] | None = None, digits: int = 3
) -> str:
    """An HTML table; ``best`` maps a column index to "max"/"min" to bold the best value."""
    marks: dict[int, Any] = {}
    for col, how in (best or {}).items():
        values = [r[col] for r in rows if isinstance(r[col], int | float)]
        if values:
            marks[col] = max(values) if how == "max" else min(values)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            cls = ' class="best"' if i in marks and v == marks[i] else ""
            cells.append(f"<td{cls}>{esc(fmt_cell(v, digits))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def figure_png(fig: Any, caption: str = "", *, layout: str = "") -> str:
    """A matplotlib figure as an embedded ``<img>`` (base64 PNG); the figure is closed.

    ``layout``: ``""`` (half width, two per row), ``"wide"`` (full width) or ``"square"`` (full row, capped).
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    cls = f' class="{esc(layout)}"' if layout else ""
    return f'<figure{cls}><img alt="{esc(caption)}" src="data:image/png;base64,{data}"/>{cap}</figure>'


def cards(items: Sequence[tuple[str, Any]]) -> str:
    inner = "".join(
        f'<div class="card"><div class="v">{esc(fmt_cell(v))}</div><div class="k">{esc(k)}</div></div>'
        for k, v in items
    )
    return f'<div class="cards">{inner}</div>'


def section(anchor: str, title: str, lead: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2><p class="lead">{esc(lead)}</p>{body}</section>'


def skipped(anchor: str, title: str, reason: str) -> str:
    """A section for a stage that did not run, saying why."""
    return section(anchor, title, "", f'<p class="note">Not run: {esc(reason)}</p>')


def page(title: str, meta: str, sections: Sequence[tuple[str, str, str]], footer: str = "") -> str:
    """A whole document; ``sections`` are (anchor, nav label, html)."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(label)}</a>' for a, label, _ in sections)
    body = "".join(s for _, _, s in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><div class="meta">{esc(meta)}</div></header>'
        f"<nav>{nav}</nav><main>{body}</main><footer>{esc(footer)}</footer></body></html>"
    )
