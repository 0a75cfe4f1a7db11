"""Stage ``calibration``: calibration and selective classification of zero-shot predictions."""

from __future__ import annotations

from typing import Any

import torch

from cliplab.bench.figures import fmt, number
from cliplab.bench.report_sections import calibration_section
from cliplab.bench.stage import BenchContext, Metric, Stage, register_stage


def run(ctx: BenchContext) -> dict[str, Any]:
    """Calibration and selective classification of zero-shot predictions (temperature fit on the validation set)."""
    from cliplab.assess import calibration_evaluation
    from cliplab.zeroshot import zeroshot_logits

    sets, val = ctx.data.validation("calibration")
    m = ctx.model

    def logits_of(f: Any) -> torch.Tensor:
        return zeroshot_logits(f.images, sets.weights, m.logit_scale, m.logit_bias, m.geometry)

    out = calibration_evaluation(logits_of(val), val.labels, logits_of(sets.test), sets.test.labels)
    return {**out, "task": sets.task, "style": sets.style}


def headline(cal: dict[str, Any]) -> list[tuple[str, Any, str]]:
    if "ece" not in cal:
        return []
    return [("calibration error (ECE)", number(cal["ece"]), f"{fmt(cal.get('ece_scaled'))} after temperature scaling")]


register_stage(
    Stage(
        "calibration",
        run,
        order=80,
        title="calibration",
        nav="Calibration",
        section=calibration_section,
        headline=headline,
        metrics=(
            Metric("accuracy", "accuracy", higher_is_better=True),
            *(Metric(k, k, higher_is_better=False) for k in ("ece", "ece_scaled", "aurc_msp", "aurc_logit_norm")),
        ),
    )
)
