"""Stage ``estimate``: label-free accuracy estimation over the data's shifted sets."""

from __future__ import annotations

from typing import Any

import torch

from cliplab.bench.figures import name, number, rank, task_label
from cliplab.bench.report_sections import estimate_section
from cliplab.bench.stage import BenchContext, Metric, Stage, register_stage
from cliplab.progress import track


def run(ctx: BenchContext) -> dict[str, Any]:
    """Label-free accuracy estimation over the corruption family (14 corruptions × severities 1, 3, 5).

    Built-in world: rendered corrupted test sets plus the unseen rendering styles (``STYLE_SHIFTS``, keys
    ``style:<name>``), clean validation split. Other data: half of each class of the test set is the clean
    validation set, and up to ``n / 4`` images of the other half are corrupted.
    """
    from cliplab.assess import estimation_evaluation
    from cliplab.zeroshot import zeroshot_logits

    sets, val, shifted = ctx.data.shifted("estimate", max(100, ctx.n // 4))
    m = ctx.model

    def logits_of(f: Any) -> torch.Tensor:
        return zeroshot_logits(f.images, sets.weights, m.logit_scale, m.logit_bias, m.geometry)

    evaluated = []
    sets_ = track(list(shifted), "shifted sets", enabled=ctx.progress, bar=False, note=lambda item: item[0])
    for set_name, ds in sets_:
        f = ctx.embed(ds)
        evaluated.append((set_name, logits_of(f), f.labels))
    return {**estimation_evaluation(logits_of(val), val.labels, evaluated), "task": sets.task}


def headline(res: dict[str, Any]) -> list[tuple[str, Any, str]]:
    est = res.get("estimators")
    if not est:
        return []
    method = max(est, key=lambda m: rank(est[m]["spearman"]))
    rho = number(est[method]["spearman"])
    detail = f"{task_label(res.get('task'))} · {name(method)} · {len(res['accuracy'])} shifted sets"
    return [("accuracy estimation ρ", rho, detail)]


register_stage(
    Stage(
        "estimate",
        run,
        order=90,
        title="accuracy estimation",
        nav="Estimation",
        section=estimate_section,
        headline=headline,
        metrics=(
            Metric("{}/spearman", "estimators.*.spearman", higher_is_better=True),
            Metric("{}/mae", "estimators.*.mae", higher_is_better=False),
        ),
    )
)
