"""Stage ``calibration``: calibration and selective classification of zero-shot predictions.

The headline numbers are those of the in-distribution task (the built-in world's shape task in its training
style; on other data half of each class of the test set, the other half fitting the temperature). The same
temperature is then applied to shifted test sets (``shifted``: the built-in world's unseen rendering styles,
corrupted copies on other data): calibration under distribution shift (Ovadia et al., "Can you trust your
model's uncertainty?", NeurIPS 2019), where a model is usually overconfident and a temperature fitted in
distribution helps less.
"""

from __future__ import annotations

from typing import Any

import torch

from cliplab.bench.figures import fmt, number, task_label
from cliplab.bench.report_sections import calibration_section
from cliplab.bench.stage import BenchContext, Metric, Stage, register_stage
from cliplab.progress import track

#: the shifted sets calibration is also measured on (names of ``BenchData.shifted``; those the data has)
SHIFTS = ("style:outline", "style:sketch", "gaussian_noise@3", "gaussian_blur@3")
#: the scalars kept for each shifted set (its curves are not stored)
SHIFT_KEYS = ("accuracy", "n_test", "ece", "ece_scaled", "nll", "nll_scaled", "aurc_msp")


def run(ctx: BenchContext) -> dict[str, Any]:
    """Calibration and selective classification of zero-shot predictions (temperature fit on the validation set)
    on the in-distribution task, then the raw and temperature-scaled ECE on each shifted set (``SHIFTS``)."""
    from cliplab.assess import calibration_evaluation
    from cliplab.zeroshot import zeroshot_logits

    sets, val = ctx.data.validation("calibration")  # the data's own validation split where it has one
    stream = ctx.data.shifted("calibration", max(100, ctx.n // 4))[2]
    m = ctx.model

    def logits_of(f: Any) -> torch.Tensor:
        return zeroshot_logits(f.images, sets.weights, m.logit_scale, m.logit_bias, m.geometry)

    val_logits = logits_of(val)
    out = calibration_evaluation(val_logits, val.labels, logits_of(sets.test), sets.test.labels)
    shifted: dict[str, Any] = {}
    chosen = [(name, ds) for name, ds in stream if name in SHIFTS]
    for name, ds in track(chosen, "shifted sets", enabled=ctx.progress, bar=False, note=lambda item: item[0]):
        f = ctx.embed(ds)
        r = calibration_evaluation(val_logits, val.labels, logits_of(f), f.labels)
        shifted[name] = {k: r[k] for k in SHIFT_KEYS}
    return {**out, "task": sets.task, "style": sets.style, "shifted": shifted}


def headline(cal: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """The in-distribution task's ECE (the shifted sets' are in the section)."""
    if "ece" not in cal:
        return []
    task = task_label(cal.get("task"), cal.get("style"))
    detail = (
        f"{task} · accuracy {fmt(cal.get('accuracy'))} · {fmt(cal.get('ece_scaled'))} after temperature scaling "
        f"(T = {fmt(cal.get('temperature'), '.2f')})"
    )
    return [("calibration error (ECE)", number(cal["ece"]), detail)]


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
            Metric("shifted/{}/ece", "shifted.*.ece", higher_is_better=False),
        ),
    )
)
