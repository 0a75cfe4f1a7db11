"""Stage ``robustness``: robust fine-tuning and the WiSE-FT curve (ID vs shifted accuracy, "effective robustness").

The model is fine-tuned (``cliplab.finetune.finetune``, CE with a zero-shot-initialised head) on the training
images of the stage's task, then the zero-shot classifier, the fine-tuned one and their WiSE-FT mixtures are
scored on the in-distribution test set and on shifted sets. Built-in world: the pattern task (zero-shot is at
chance there), shifted by Gaussian noise and Gaussian blur (severity 3); other data: the data's shifted sets
(at most three). The report draws ID accuracy against mean shifted accuracy: the zero-shot point, the
fine-tuned point and the α curve between them.

It costs a fine-tuning run (tens of seconds on CPU), so it is not one of the default stages
(``Stage(default=False)``): run it with ``cliplab bench --only ... robustness``.
"""

from __future__ import annotations

from typing import Any

from cliplab.bench import html as H
from cliplab.bench.figures import fmt, number, task_label
from cliplab.bench.stage import BenchContext, Metric, Stage, StageResult, register_stage
from cliplab.progress import current_display, step

#: fine-tuning settings of the stage (CE, AdamW; chosen for the built-in model, not tuned on test data)
SETTINGS: dict[str, Any] = {"method": "ce", "steps": 150, "batch_size": 32, "lr": 1e-4}
BUILTIN_SHIFTS = ("corruption=gaussian_noise,severity=3", "corruption=gaussian_blur,severity=3")
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
MAX_SHIFTED = 3


def _sets(ctx: BenchContext) -> tuple[Any, Any, dict[str, Any], str]:
    from cliplab.bench.data_kinds import is_builtin_world

    if is_builtin_world(ctx.data_spec):
        task = "pattern"
        train = ctx.dataset("train", task=task, n=max(ctx.n, 400))
        test = ctx.dataset("test", task=task)
        shifted = {}
        for opt in BUILTIN_SHIFTS:
            kv = dict(part.split("=") for part in opt.split(","))
            shifted[opt] = ctx.dataset("test", task=task, corruption=kv["corruption"], severity=int(kv["severity"]))
        return train, test, shifted, task
    sets, _, stream = ctx.data.shifted("robustness", ctx.n)
    support = ctx.data.support_dataset("robustness")
    if support is None:
        raise ValueError("this data has no training images for fine-tuning")
    train = support
    shifted = {}
    for name, ds in stream:
        shifted[name] = ds
        if len(shifted) >= MAX_SHIFTED:
            break
    return train, sets.dataset, shifted, sets.task


def run(ctx: BenchContext) -> dict[str, Any] | StageResult:
    from cliplab.finetune import ImageClassifier, finetune, robustness_sweep

    if not ctx.model.can_train:
        return {"skipped": f"{ctx.model.spec} cannot be trained"}
    try:
        train, test, shifted, task = _sets(ctx)
    except (ValueError, NotImplementedError) as err:
        return {"skipped": str(err)}
    if not shifted:
        return {"skipped": "no shifted test sets"}
    shown = current_display() is not None  # in the run's status line: no bars of its own
    with step(f"fine-tuning ({SETTINGS['steps']} steps)", enabled=ctx.progress and shown):
        clf = finetune(ctx.model, train, seed=ctx.seed, progress=ctx.progress and not shown, templates=ctx.templates,
                       **SETTINGS)  # fmt: skip
    zs = ImageClassifier.zero_shot(ctx.model, clf.classnames, ctx.templates_for(train))
    sweep = robustness_sweep(zs, clf, test, shifted, alphas=ALPHAS)
    by_alpha = {
        f"{a:g}": {"id": sweep["id"][i], "shifted": sweep["ood_mean"][i]} for i, a in enumerate(sweep["alphas"])
    }
    return {
        "task": task,
        "settings": dict(SETTINGS),
        "n_train": len(train),
        "n_test": len(test),
        **sweep,
        "by_alpha": by_alpha,
    }


def figure(r: dict[str, Any]) -> str:
    from cliplab.bench.figures import plt

    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(4.6, 3.6))
    ax.plot(r["id"], r["ood_mean"], "-o", color="#4c72b0", label="WiSE-FT α curve")
    for a, x, y in zip(r["alphas"], r["id"], r["ood_mean"]):
        ax.annotate(f"α={a:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    i0, i1 = r["alphas"].index(0.0), r["alphas"].index(1.0)
    ax.plot([r["id"][i0]], [r["ood_mean"][i0]], "s", color="#dd8452", markersize=9, label="zero-shot")
    ax.plot([r["id"][i1]], [r["ood_mean"][i1]], "D", color="#55a868", markersize=8, label="fine-tuned")
    ax.plot([r["id"][i0], r["id"][i1]], [r["ood_mean"][i0], r["ood_mean"][i1]], ":", color="grey", label="endpoints")
    ax.set_xlabel("ID accuracy")
    ax.set_ylabel("mean shifted accuracy")
    ax.set_title("effective robustness")
    ax.legend(fontsize=8, loc="best")
    return H.figure_png(fig, "ID vs shifted accuracy along WiSE-FT's α (zero-shot at α = 0)")


def section(results: dict[str, Any], _data: Any) -> str | None:
    r = results["stages"].get("robustness")
    if r is None:
        return None
    if "skipped" in r:
        return H.skipped("robustness", "Robust fine-tuning", r["skipped"])
    headers = ["α", "ID", *r["ood"], "mean shifted", "above the line"]
    rows = [
        [
            a,
            r["id"][i],
            *(r["ood"][k][i] for k in r["ood"]),
            r["ood_mean"][i],
            (r.get("ood_above_line") or [None] * 99)[i],
        ]
        for i, a in enumerate(r["alphas"])
    ]
    body = H.table(headers, rows)
    try:
        body += H.figs([figure(r)])
    except ImportError:  # matplotlib is optional
        pass
    s = r["settings"]
    lead = (
        f"task {r['task']}: {s['method']} fine-tuning, {s['steps']} steps at lr {s['lr']:g} on {r['n_train']} "
        f"images; WiSE-FT θ = (1 − α)·θ_zs + α·θ_ft scored on {r['n_test']} ID test images and shifted sets"
    )
    return H.section("robustness", "Robust fine-tuning", lead, body)


def headline(r: dict[str, Any]) -> list[tuple[str, Any, str]]:
    if "id" not in r:
        return []
    i = r["alphas"].index(0.5) if 0.5 in r["alphas"] else len(r["alphas"]) // 2
    return [
        (
            "WiSE-FT α=0.5 shifted accuracy",
            number(r["ood_mean"][i]),
            f"{task_label(r.get('task'))} · zero-shot {fmt(r['ood_mean'][0])}, fine-tuned {fmt(r['ood_mean'][-1])}",
        )
    ]


STAGE = register_stage(
    Stage(
        "robustness",
        run,
        order=100,
        title="robust fine-tuning",
        nav="Robustness",
        default=False,
        section=section,
        headline=headline,
        metrics=(
            Metric("alpha={}/id", "by_alpha.*.id", higher_is_better=True),
            Metric("alpha={}/shifted", "by_alpha.*.shifted", higher_is_better=True),
            Metric("best_alpha", "best_alpha", higher_is_better=None),
        ),
    )
)
