"""Stage ``anomaly``: zero-/few-shot anomaly detection (WinCLIP, WinCLIP+, PatchCore on CLIP patch tokens).

Built-in world: ``shapes-defects`` (test: ``min(n, 120)`` images, half of them defective; train: 120 normal
references to draw from), at the model's resolution. Other data: the bench data itself when it is anomaly data
(``mvtec:``, ``visa:``, ``anomaly-folder:``), else the stage is skipped. ``winclip`` at 0 and 4 shots
(WinCLIP, WinCLIP+) and ``patchcore`` at 4 shots, references drawn with the bench seed
(``cliplab.anomaly.anomaly_evaluate``).

It encodes every test image with multi-scale windows (the tower run once per window): 25–40 s on the shared
2-core CPU for the built-in world (measured), so it is opt-in (``Stage(default=False)``): ``cliplab bench --only
... anomaly``. The report shows the mean and per-category metrics and heat maps of the best- and worst-scored
defective images.
"""

from __future__ import annotations

from typing import Any

from cliplab.bench import html as H
from cliplab.bench.figures import fmt, number
from cliplab.bench.stage import BenchContext, Metric, Stage, StageResult, register_stage

METHODS = ("winclip", "patchcore")
SHOTS = (0, 4)
MAX_TEST = 120
N_REFERENCES = 120  # rendered only when drawn: 4 per category are encoded
KEYS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pro")


def _sets(ctx: BenchContext) -> tuple[Any, Any, str]:
    from cliplab.bench.data_kinds import is_builtin_world
    from cliplab.data import load_dataset
    from cliplab.towers import vit_tower

    if is_builtin_world(ctx.data_spec):
        size = vit_tower(ctx.model).image_size[0]
        spec = f"shapes-defects:n={min(ctx.n, MAX_TEST)},seed={ctx.seed},image_size={max(32, size)}"
        train = load_dataset(f"shapes-defects:n={N_REFERENCES},seed={ctx.seed},image_size={max(32, size)}",
                             split="train")  # fmt: skip
        return load_dataset(spec, split="test"), train, spec
    test = load_dataset(ctx.data_spec, split="test")
    if not hasattr(test, "mask") or not hasattr(test, "categories"):
        raise ValueError(f"{ctx.data_spec} is not anomaly-detection data (mvtec:, visa:, anomaly-folder:)")
    return test, load_dataset(ctx.data_spec, split="train"), str(ctx.data_spec)


def run(ctx: BenchContext) -> dict[str, Any] | StageResult:
    """Per-category metrics of each method and shot count (see the module docstring)."""
    from cliplab.anomaly import anomaly_evaluate
    from cliplab.towers import UnsupportedTowerError, vit_tower

    try:
        vit_tower(ctx.model)
        test, train, spec = _sets(ctx)
    except (UnsupportedTowerError, ValueError, FileNotFoundError) as err:
        return {"skipped": str(err)}
    try:
        out = anomaly_evaluate(
            ctx.model, test, train, methods=METHODS, shots=SHOTS, seeds=(ctx.seed,), batch_size=ctx.batch_size, cases=1,
            progress=print if ctx.progress else None,
        )  # fmt: skip
    except ValueError as err:  # e.g. a category with too few normal references
        return {"skipped": str(err)}
    cases = out.pop("cases")
    mean = {f"{r['method']}@{r['shots']}": {k: r[k] for k in KEYS if k in r} for r in out["mean"]}
    result = {"data": spec, "n_test": out["n_test"], "mean": mean, "rows": out["rows"],
              "seconds_per_image": out["seconds_per_image"], "window_features": out["window_features"]}  # fmt: skip
    return StageResult(result, report_data={"cases": cases, "test": test})


def _heatmaps(data: dict[str, Any]) -> str:
    from cliplab.anomaly.overlays import heatmap_overlay

    test, cells = data["test"], []
    for c in data["cases"]:
        if c["map"] is None:
            continue
        mask = test.mask(c["index"]) if getattr(test, "has_masks", True) else None
        img = heatmap_overlay(test.image(c["index"]).resize(c["map"].shape[::-1]), c["map"], mask, scale=2)
        label = f"{c['kind']}: {c['method']} {c['shots']}-shot"
        sub = f"{c['category']} #{c['index']}, score {c['score']:.3f}"
        cells.append(
            f'<div class="sample"><img alt="{H.esc(label)}" src="{H.image_data_uri(img)}"/>'
            f'<div class="p">{H.esc(label)}</div><div class="t">{H.esc(sub)}</div></div>'
        )
    return f'<div class="samples">{"".join(cells)}</div>' if cells else ""


def section(results: dict[str, Any], data: Any) -> str | None:
    r = results["stages"].get("anomaly")
    if r is None:
        return None
    if "skipped" in r:
        return H.skipped("anomaly", "Anomaly detection", r["skipped"])
    spi = r.get("seconds_per_image", {})
    rows = [[name, *(m.get(k) for k in KEYS), 1000 * spi.get(name.split("@")[0], float("nan"))]
            for name, m in r["mean"].items()]  # fmt: skip
    body = H.table(["method@shots", *KEYS, "ms / image"], rows, best={i + 1: "max" for i in range(len(KEYS))})
    per = [[x["category"], f"{x['method']}@{x['shots']}", *(x.get(k) for k in KEYS)] for x in r["rows"]
           if "skipped" not in x]  # fmt: skip
    body += "<h3>Per category</h3>" + H.table(["category", "method@shots", *KEYS], per)
    if data:
        body += "<h3>Best and worst detected defects (map over the image, defect outlined in white)</h3>"
        body += _heatmaps(data)
    lead = (
        f"{r['n_test']} test images of {r['data']}; WinCLIP (0 shots), WinCLIP+ and PatchCore on CLIP patch tokens "
        f"(4 normal references per category); window embeddings: {r['window_features']}"
    )
    return H.section("anomaly", "Anomaly detection", lead, body)


def headline(r: dict[str, Any]) -> list[tuple[str, Any, str]]:
    best = r.get("mean", {}).get("winclip@4")
    if not best:
        return []
    return [("WinCLIP+ 4-shot image AUROC", number(best.get("image_auroc")),
             f"pixel AUROC {fmt(best.get('pixel_auroc'))}")]  # fmt: skip


register_stage(
    Stage(
        "anomaly",
        run,
        order=110,
        title="anomaly detection",
        nav="Anomaly",
        section=section,
        headline=headline,
        default=False,
        metrics=(
            Metric("{}/image_auroc", "mean.*.image_auroc", higher_is_better=True),
            Metric("{}/pixel_auroc", "mean.*.pixel_auroc", higher_is_better=True),
            Metric("{}/pro", "mean.*.pro", higher_is_better=True),
        ),
    )
)
