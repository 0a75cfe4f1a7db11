"""Bar charts of probe accuracy per negative type: one group per type, one bar per model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def probe_bar_chart(by_model: Mapping[str, Mapping[str, float]], title: str = "", *, chance: float | None = 0.5) -> Any:
    """A matplotlib figure: horizontal bars of ``by_model[model][type]`` (accuracy), types in first-seen order.

    ``chance``: a dashed reference line (0.5 for one negative per item; None for none).
    """
    from cliplab.bench.figures import HALF, PALETTE, plt

    pyplot = plt()
    kinds = list(dict.fromkeys(k for accs in by_model.values() for k in accs))
    models = list(by_model)
    height = 0.8 / max(1, len(models))
    fig, ax = pyplot.subplots(figsize=(HALF[0], max(HALF[1], 0.45 * len(kinds) * max(1, len(models) / 2))))
    y = np.arange(len(kinds))
    for j, m in enumerate(models):
        values = [np.nan if by_model[m].get(k) is None else float(by_model[m][k]) for k in kinds]  # missing: no bar
        offset = (j - (len(models) - 1) / 2) * height
        ax.barh(y + offset, values, height=height, color=PALETTE[j % len(PALETTE)], label=m)
    if chance is not None:
        ax.axvline(chance, color="#7F7F7F", linestyle="--", linewidth=1.2, label=f"chance ({chance:g})")
    ax.set_yticks(y, [k.replace("_", " ") for k in kinds])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (true caption over the negative)")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
