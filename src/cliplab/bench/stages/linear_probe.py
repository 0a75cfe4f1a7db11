"""Stage ``linear_probe``: CLIP_benchmark's linear-probe task beside our adapters.

The probe (:func:`cliplab.assess.linear_probe_benchmark.linear_probe_benchmark`, CLIP_benchmark's defaults) is
trained on the data's support role — the train split on the built-in world (shape task), one half of each
class otherwise — with ``VAL_PROPORTION`` of it split off to search the weight decay (CLIP_benchmark's
``--val_proportion``), then retrained on all of it and tested on the test set. It runs by default: about 20
trainings of a probe on cached features, about a second on the built-in world (whose train features the
``ood`` stage embeds anyway); ``--only`` leaves it out, a suite's ``task: linear_probe`` selects it alone.
"""

from __future__ import annotations

from typing import Any

from cliplab.bench.figures import fmt, number
from cliplab.bench.stage import BenchContext, Metric, Stage, register_stage

#: share of the training features held out to choose the weight decay
VAL_PROPORTION = 0.2


def run(ctx: BenchContext) -> dict[str, Any]:
    """Linear probe on the support features (weight decay searched on a held-out fifth), test metrics."""
    from cliplab.assess.linear_probe_benchmark import linear_probe_benchmark

    sets, train = ctx.data.support("linear_probe")
    if len(train) < 2:
        return {"skipped": f"{len(train)} training image(s): nothing to split for the weight-decay search"}
    out = linear_probe_benchmark(
        train.images,
        train.labels,
        sets.test.images,
        sets.test.labels,
        val_proportion=VAL_PROPORTION,
        seed=ctx.seed,
        num_classes=len(sets.test.classnames or []) or None,
    )
    return {**out, "task": sets.task, "style": sets.style}


def headline(lp: dict[str, Any]) -> list[tuple[str, Any, str]]:
    if "lp_acc1" not in lp:
        return []
    return [("linear probe acc@1", number(lp["lp_acc1"]), f"weight decay {fmt(lp['weight_decay'], '.3g')}")]


register_stage(
    Stage(
        "linear_probe",
        run,
        order=30,
        title="linear probe",
        nav="Linear probe",
        headline=headline,
        metrics=(
            Metric("lp_acc1", "lp_acc1"),
            Metric("lp_acc5", "lp_acc5"),
            Metric("lp_mean_per_class_recall", "lp_mean_per_class_recall"),
            Metric("weight_decay", "weight_decay", higher_is_better=None),
        ),
    )
)
