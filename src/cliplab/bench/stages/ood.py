"""Stage ``ood``: OOD detection of the data's OOD sets against its ID test set (section in ``report_sections``)."""

from __future__ import annotations

from typing import Any

from cliplab.bench.figures import name, number, rank, task_label
from cliplab.bench.report_sections import ood_section
from cliplab.bench.stage import BenchContext, Metric, Stage, register_stage
from cliplab.progress import track


def run(ctx: BenchContext) -> dict[str, Any]:
    """OOD detection: held-out shapes and colours (built-in world), or the ``--ood-data`` sets vs the test set.

    Built-in world: near OOD = the held-out attribute in the training style; far OOD = the same drawn in the
    sketch style (on light paper), which no training image resembles.

    On other data, half of each class of the test set serves as ID training features (KNN, ViM, Mahalanobis)
    and the other half as the ID test set.
    """
    from cliplab.assess import ood_evaluation

    tasks = ctx.data.ood()
    if isinstance(tasks, str):
        return {"skipped": tasks}
    # NegLabel with the small built-in word list, named as such in the results ("neglabel.source"): the
    # paper's WordNet pool is ~75k prompts to embed per task, minutes on a CPU (and the built-in world's
    # models read only the world's vocabulary); `cliplab ood` runs the full recipe.
    kw: dict[str, Any] = {
        "encode_texts": ctx.model.encode_texts,
        "curves": True,
        "neglabel_options": {"source": "builtin"},
    }
    return {
        t.task: ood_evaluation(t.test, t.sets, t.weights, ctx.model.logit_scale, train_features=t.train, **kw)
        for t in track(tasks, "scoring", enabled=ctx.progress, bar=False, note=lambda t: f"{t.task} task")
    }


def headline(res: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """Per task: the best AUROC on the first (near) OOD set."""
    items = []
    for task, r in res.items():
        if isinstance(r, dict) and r.get("sets"):
            (set_name, table), *_ = r["sets"].items()
            method = max(table, key=lambda m: rank(table[m]["auroc"]))
            detail = f"{task_label(task)} · OOD = {set_name} · {name(method)}"
            items.append(("best OOD AUROC", number(table[method]["auroc"]), detail))
    return items


register_stage(
    Stage(
        "ood",
        run,
        order=70,
        title="OOD detection",
        nav="OOD",
        section=ood_section,
        headline=headline,
        metrics=(
            Metric("{}/{}/auroc", "*.mean.*.auroc", higher_is_better=True),
            Metric("{}/{}/fpr95", "*.mean.*.fpr95", higher_is_better=False),
        ),
    )
)
