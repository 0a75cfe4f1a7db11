"""Report sections for the adaptation and reliability stages (few-shot curves, ROC, reliability, risk–coverage,
estimated vs true accuracy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cliplab.bench import figures
from cliplab.bench import html as H
from cliplab.bench.data_kinds import data_class_attr
from cliplab.bench.figures import (
    HALF,
    MARKERS,
    PALETTE,
    WIDE_WIDTH,
    finite,
    finite_range,
    floats,
    fmt,
    name,
    numbers,
    rank,
    task_title,
)


def _acc(r: dict[Any, Any], k: int) -> dict[str, Any]:
    return r.get(str(k)) or r[k]


def _few_shot_figure(plt: Any, res: dict[str, Any]) -> str:
    """One panel with every method, then one panel per method (its own y range) with the ± std band."""
    shots, zs = res["shots"], res["zeroshot"]
    methods = [m for m in res["results"] if m != "zeroshot"]
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}
    cols = 4
    n_rows = -(-(len(methods) + 1) // cols)
    size = (WIDE_WIDTH, 2.9 * n_rows + 0.3)
    fig, axes = plt.subplots(n_rows, cols, figsize=size, squeeze=False, layout="constrained")
    panels = axes.ravel()
    for ax in panels[len(methods) + 1 :]:
        ax.axis("off")

    def curve(m: str) -> tuple[np.ndarray, np.ndarray]:
        r = res["results"][m]
        return floats(_acc(r, k)["mean"] for k in shots), floats(_acc(r, k)["std"] for k in shots)

    def axis(ax: Any) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.minorticks_off()
        if finite(zs):
            ax.axhline(zs, color="k", ls="--", lw=1.1)

    ax = panels[0]
    for i, m in enumerate(methods):
        mean, _ = curve(m)
        ax.plot(shots, mean, marker=MARKERS[i % len(MARKERS)], ms=5, color=colours[m], label=name(m))
    axis(ax)
    ax.set_title("all methods")
    ax.set_ylabel("test accuracy")
    for i, (ax, m) in enumerate(zip(panels[1:], methods)):
        mean, std = curve(m)
        ax.fill_between(shots, mean - std, mean + std, color=colours[m], alpha=0.18, lw=0)
        ax.plot(shots, mean, marker=MARKERS[i % len(MARKERS)], ms=5, color=colours[m])
        axis(ax)
        span = finite_range(mean - std, mean + std, mean, zs)
        if span:
            lo, hi = span
            pad = max(0.02 - (hi - lo) / 2, 0.0) + 0.1 * (hi - lo)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(f"{name(m)}  ({fmt(mean[-1])} at {shots[-1]})", color=colours[m])
        if (i + 1) % cols == 0:
            ax.set_ylabel("test accuracy")
    for ax in axes[-1]:
        if ax.axison:
            ax.set_xlabel("shots per class")
    handles, labels = panels[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="k", ls="--", lw=1.1))
    labels.append(f"zero-shot ({fmt(zs)})")
    spare = panels[len(methods) + 1] if len(panels) > len(methods) + 1 else None
    if spare is not None:
        spare.legend(handles, labels, loc="center", frameon=False, fontsize=10.5)
    else:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(5, len(labels)))
    return H.figure_png(
        fig,
        "Few-shot test accuracy against shots per class: every method (first panel), then each method with "
        "its ± std band over seeds on its own y range; dashed: zero-shot",
        layout="wide",
    )


def _base_to_new_figure(plt: Any, b2n: dict[str, Any]) -> str:
    methods = list(b2n["results"])
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=HALF)
    keys = (("base", "base classes"), ("new", "new classes"), ("hm", "harmonic mean"))
    for j, (key, label) in enumerate(keys):
        heights = np.nan_to_num(floats(b2n["results"][m][key] for m in methods))  # a missing bar: none drawn
        ax.bar(x + (j - 1) * 0.27, heights, width=0.27, label=label)
    ax.set_xticks(x, [name(m) for m in methods], rotation=35, ha="right")
    ax.grid(axis="x", visible=False)
    span = finite_range(floats(r[key] for r in b2n["results"].values() for key, _ in keys)) or (0.0, 1.0)
    lo = max(0.0, span[0] - 0.05)
    ax.set_ylim(lo, min(1.0, span[1] + 0.02) if lo > 0 else 1.0)
    ax.set_ylabel("test accuracy")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    caption = f"Base-to-new generalisation, {b2n['k']} shots per base class"
    return H.figure_png(fig, caption + (f" (y axis from {lo:.2f})" if lo > 0 else ""))


def adapt_section(results: dict[str, Any], data: Any = None) -> str | None:
    res = results["stages"].get("adapt")
    if not res:
        return None
    if "skipped" in res:
        return H.skipped("adapt", "Few-shot adaptation", res["skipped"])
    plt = figures.plt()
    shots = res["shots"]
    secs = res.get("seconds", {})
    rows = []
    for m, r in res["results"].items():
        rows.append(numbers([name(m), *(_acc(r, k)["mean"] for k in shots), secs.get(m)]))
    headers = ["method", *(f"{k}-shot" for k in shots), "fit + predict (s)"]
    body = "<h3>Mean test accuracy over seeds</h3>"
    body += H.table(headers, rows, best={i + 1: "max" for i in range(len(shots))}, digits={len(shots) + 1: 2})
    body += H.figs([_few_shot_figure(plt, res)])
    b2n = res.get("base_to_new")
    if b2n:
        split = f"{b2n['n_base_classes']} base / {b2n['n_new_classes']} new classes"
        table = H.table(
            ["method", "base", "new", "HM"],
            [numbers([name(m), r["base"], r["new"], r["hm"]]) for m, r in b2n["results"].items()],
            best={1: "max", 2: "max", 3: "max"},
        )
        body += f"<h3>Base-to-new generalisation ({b2n['k']} shots; {split})</h3>"
        body += (
            '<p class="lead">Each method is fitted on the base classes only. On the new classes GDA synthesises a '
            "classifier from the support features nearest each new class's text (as its reference's "
            "main_base2new.py), CLIP-Adapter applies its feature adapter, and the other methods fall back to "
            "zero-shot; the harmonic mean (HM) shows what adapting the base classes costs or gains overall.</p>"
        )
        body += f'<div class="cols">{_base_to_new_figure(plt, b2n)}<div>{table}</div></div>'
    where = data_class_attr(results["data"]["spec"], "support_note")
    protocol = (res.get("protocol") or {}).get("text") or "hyper-parameters searched on a split of each support set"
    lead = (
        f"Support sets{_on_task(res)} of {shots[0]}–{shots[-1]} images per class {where}, seeds "
        f"{', '.join(str(s) for s in res['seeds'])}. Protocol: {protocol} "
        "Every method is a logit bias over the zero-shot logits."
    )
    return H.section("adapt", "Few-shot adaptation", lead, body)


def _roc_figure(plt: Any, title: str, set_name: str, r: dict[str, Any], table: dict[str, Any]) -> str:
    """ROC curves of one ID/OOD pair; a method keeps its colour in every plot, the legend is sorted by AUROC."""
    roc = r["roc"][set_name]
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(r["methods"])}
    fig, ax = plt.subplots(figsize=HALF)
    order = sorted(roc, key=lambda m: -rank(table.get(m, {}).get("auroc")))
    for i, m in enumerate(order):
        c = roc[m]
        label = f"{name(m)}  {fmt(table.get(m, {}).get('auroc'))}"
        ax.plot(
            floats(c["x"]),
            floats(c["y"]),
            label=label,
            color=colours.get(m),
            lw=2.4 if i == 0 else 1.5,
            zorder=3 if i == 0 else 2,
        )
    ax.plot([0, 1], [0, 1], color="#999", ls=":", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("OOD images accepted (false positive rate)")
    ax.set_ylabel("ID images accepted (true positive rate)")
    ax.set_title(f"{title} · OOD = {set_name}")
    ax.legend(title="AUROC", loc="lower right", fontsize=9, title_fontsize=9)
    return H.figure_png(fig, f"ROC curves, {title} vs {set_name}; legend sorted by AUROC, best drawn thicker")


def ood_section(results: dict[str, Any], data: Any = None) -> str | None:
    res = results["stages"].get("ood")
    if not res:
        return None
    if "skipped" in res:
        return H.skipped("ood", "OOD detection", res["skipped"])
    plt = figures.plt()
    cols = ["auroc", "aupr_in", "aupr_out", "fpr95_mcm", "fpr95_openood"]  # each named after its reference
    body, figs = "", []
    for task, r in res.items():
        for set_name, table in r["sets"].items():
            body += f"<h3>{H.esc(task_title(task, results))} · OOD = {H.esc(set_name)}</h3>"
            body += H.table(
                ["method", "AUROC ↑", "AUPR-In ↑", "AUPR-Out ↑", "FPR95 (MCM) ↓", "FPR95 (OpenOOD) ↓"],
                [numbers([name(m), *(table[m].get(c) for c in cols)]) for m in r["methods"] if m in table],
                best={1: "max", 2: "max", 3: "max", 4: "min", 5: "min"},
            )
            if r.get("roc", {}).get(set_name):
                figs.append(_roc_figure(plt, task_title(task, results), set_name, r, table))
        if r.get("skipped"):
            notes = "; ".join(f"{name(m)}: {w}" for m, w in r["skipped"].items())
            body += f'<p class="note">Not run: {H.esc(notes)}</p>'
        protocol = [f"ViM principal dimension {r['vim_dim']}"] if r.get("vim_dim") is not None else []
        if r.get("neglabel"):
            n = r["neglabel"]
            protocol.append(f"NegLabel: {n['n_negatives']} negatives of {n['n_candidates']} from the {n['source']}")
        if protocol:
            body += f'<p class="note">Protocol: {H.esc("; ".join(protocol))}</p>'
    body += H.figs(figs)
    lead = (
        "Scores where higher = more in-distribution. FPR95 (MCM): share of OOD images accepted at the threshold "
        "that keeps 95% of ID images; FPR95 (OpenOOD): share of ID images rejected when 95% of OOD images are."
    )
    return H.section("ood", "OOD detection", lead, body)


def _reliability_figure(plt: Any, r: dict[str, Any]) -> str:
    fig, (ax, hist) = plt.subplots(
        2,
        1,
        figsize=(HALF[0], HALF[1] + 0.9),
        sharex=True,
        gridspec_kw={"height_ratios": [3.2, 1]},
        layout="constrained",
    )
    bars = False
    for side, (key, label) in enumerate((("reliability", "raw"), ("reliability_scaled", "temperature-scaled"))):
        rel = r[key]
        conf, acc = floats(rel["confidence"]), floats(rel["accuracy"])
        count = np.nan_to_num(floats(rel["count"]))
        ok = np.isfinite(conf) & np.isfinite(acc)
        # marker area ∝ bin size: the few-sample bins that make the curve jagged look small
        line = ax.plot(conf[ok], acc[ok], lw=1.5, label=f"{label} (ECE {fmt(rel['ece'])})")[0]
        ax.scatter(conf[ok], acc[ok], s=10 + 160 * count[ok] / max(count.sum(), 1), color=line.get_color(), zorder=3)
        lower, upper = floats(rel["bin_lower"]), floats(rel["bin_upper"])
        share = count / max(count.sum(), 1)
        width = (upper - lower) * 0.42  # the two histograms side by side in each bin
        left = lower + (upper - lower) * (0.29 + 0.42 * side)
        drawn = np.isfinite(left) & np.isfinite(width) & (share > 0)
        hist.bar(left[drawn], share[drawn], width=width[drawn], color=line.get_color(), alpha=0.8)
        bars |= bool(drawn.any())
    ax.plot([0, 1], [0, 1], color="#999", ls=":", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy in the bin")
    ax.set_title("reliability diagram")
    ax.legend(loc="lower right")
    if bars:  # a log axis needs a positive bar
        hist.set_yscale("log")
    hist.set_ylabel("share of\nimages")
    hist.set_xlabel("confidence (max softmax probability)")
    return H.figure_png(
        fig, f"Reliability: {r['n_test']} test images in 15 equal-width bins; dot size and lower panel: share of images"
    )


def _risk_coverage_figure(plt: Any, r: dict[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=HALF)
    aurc = {"msp": r["aurc_msp"], "logit_norm": r["aurc_logit_norm"]}
    for key, c in r["risk_coverage"].items():
        label = name(key) if key != "msp" else "max softmax"
        ax.plot(
            floats(c["x"]), floats(c["y"]), label=f"{label}  (AURC {fmt(aurc[key], '.4f')})" if key in aurc else label
        )
    ax.set_xlim(0, 1)
    ax.set_xlabel("coverage (share of images kept)")
    ax.set_ylabel("risk (error rate among kept)")
    ax.set_title("risk–coverage")
    ax.legend(loc="upper left", title="confidence score", title_fontsize=9)
    return H.figure_png(fig, "Risk–coverage: the most confident images kept first; lower is better")


def calibration_section(results: dict[str, Any], data: Any = None) -> str | None:
    r = results["stages"].get("calibration")
    if not r:
        return None
    if "skipped" in r:
        return H.skipped("calibration", "Calibration and selective classification", r["skipped"])
    plt = figures.plt()
    calibration = H.table(
        ["", "raw", "temperature-scaled"],
        [numbers(["ECE (15 bins)", r["ece"], r["ece_scaled"]]), numbers(["NLL", r["nll"], r["nll_scaled"]])],
        digits=4,
    )
    selective = H.table(
        ["confidence score", "AURC ↓"],
        [
            numbers(["max softmax", r["aurc_msp"]]),
            numbers([f"logit norm (p = {fmt(r['logit_norm_p'], 'g')})", r["aurc_logit_norm"]]),
        ],
        digits=4,
    )
    body = (
        f'<div class="cols"><div><h3>Calibration (accuracy {fmt(r["accuracy"])}; T = {fmt(r["temperature"])})</h3>'
        f"{calibration}</div><div><h3>Selective classification</h3>{selective}</div></div>"
    )
    body += H.figs([_reliability_figure(plt, r), _risk_coverage_figure(plt, r)])
    body += _shifted_calibration(r)
    lead = (
        f"Zero-shot predictions{_on_task(r)} (in distribution), {r['n_test']} test images; the temperature T and "
        f"the logit-norm exponent p are chosen on {r['n_val']} validation images of the same distribution."
    )
    return H.section("calibration", "Calibration and selective classification", lead, body)


def _shifted_calibration(r: dict[str, Any]) -> str:
    """The table of the shifted sets (``shifted``, absent in files from before it existed)."""
    shifted = r.get("shifted") or {}
    if not shifted:
        return ""
    rows = [
        numbers([n, s.get("n_test"), s.get("accuracy"), s.get("ece"), s.get("ece_scaled"), s.get("nll"),
                 s.get("nll_scaled")])
        for n, s in shifted.items()
    ]  # fmt: skip
    rows.insert(0, numbers(["in distribution", r["n_test"], r["accuracy"], r["ece"], r["ece_scaled"], r["nll"],
                            r["nll_scaled"]]))  # fmt: skip
    table = H.table(["test set", "images", "accuracy", "ECE", "ECE, scaled", "NLL", "NLL, scaled"], rows, digits=3)
    return (
        "<h3>Under distribution shift</h3>"
        f'<p class="lead">The same zero-shot classifier on shifted test sets, with the temperature T = '
        f"{fmt(r['temperature'], '.2f')} fitted in distribution (Ovadia et al. 2019): a model is usually "
        "overconfident where its accuracy drops, and a temperature fitted in distribution corrects less.</p>" + table
    )


def _on_task(r: dict[str, Any]) -> str:
    """ " on the pattern task", " on the shape task (outline style)" or "" when the stage did not record one."""
    task, style = r.get("task"), r.get("style")
    if not task or task == "classes":
        return ""
    return f" on the {name(task)} task" + (f" ({style} style)" if style and style != "solid" else "")


def estimate_section(results: dict[str, Any], data: Any = None) -> str | None:
    r = results["stages"].get("estimate")
    if not r:
        return None
    if "skipped" in r:
        return H.skipped("estimate", "Label-free accuracy estimation", r["skipped"])
    plt = figures.plt()
    rows = [numbers([name(m), e["r2"], e["spearman"], e["mae"]]) for m, e in r["estimators"].items()]
    body = H.table(["estimator", "R² ↑", "Spearman ρ ↑", "MAE ↓"], rows, best={1: "max", 2: "max", 3: "min"})
    sets = list(r["accuracy"])
    truth = floats(r["accuracy"][n] for n in sets)
    est = r["estimators"]
    cols = min(3, len(est))
    n_rows = -(-len(est) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(WIDE_WIDTH, 3.5 * n_rows), squeeze=False, layout="constrained")
    severity = np.array([int(n.rsplit("@", 1)[1]) if "@" in n else 0 for n in sets])
    levels = sorted(set(severity.tolist()))
    colours = plt.get_cmap("OrRd")(np.linspace(0.4, 0.95, max(len(levels), 1)))
    for ax in axes.ravel()[len(est) :]:
        ax.axis("off")
    for ax, (m, e) in zip(axes.ravel(), est.items()):
        vals = floats(e["estimates"][n] for n in sets)
        for level, colour in zip(levels, colours):
            sel = severity == level
            ax.scatter(
                vals[sel],
                truth[sel],
                s=28,
                color=colour,
                alpha=0.9,
                label=f"severity {level}" if level else "style shift",
                lw=0,
            )
        accuracy_valued = e["mae"] is not None  # None: a score, not an accuracy (or no finite MAE)
        span = finite_range(vals, truth) if accuracy_valued else None
        if span:  # same scale on both axes: the diagonal is estimate = truth
            lo, hi = span
            pad = 0.04 * (hi - lo) or 0.02
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#999", ls=":", lw=1)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        detail = f"ρ = {fmt(e['spearman'], '.2f')}" + (f", MAE = {fmt(e['mae'])}" if accuracy_valued else "")
        ax.set_title(f"{name(m)}  ({detail})", fontsize=11)
        ax.set_xlabel("estimated accuracy" if accuracy_valued else "score (not an accuracy)")
    for row in axes:
        row[0].set_ylabel("true accuracy")
    if len(levels) > 1:
        axes[0, 0].legend(loc="upper left")
    caption = "Estimate (or score) vs true accuracy, one point per shifted test set; dotted: estimate = truth"
    body += H.figs([H.figure_png(fig, caption, layout="wide")])
    protocol = r.get("protocol") or {}
    notes = []
    if "mano" in protocol:
        mano = protocol["mano"]
        phi = fmt(mano["phi_val"], ".2f")
        notes.append(f"MaNo uses the {mano['branch']} normalisation for every set, decided on validation (Φ = {phi})")
    if "atc" in protocol:
        temperature = fmt(protocol["atc"]["temperature"], ".3f")
        notes.append(f"ATC on logits divided by the validation temperature {temperature}")
    if notes:
        body += f'<p class="note">Protocol: {H.esc("; ".join(notes))}.</p>'
    return H.section(
        "estimate",
        "Label-free accuracy estimation",
        f"Predicting accuracy without labels{_on_task(r)} on {len(sets)} shifted test sets (corruption × severity"
        + (", unseen styles" if any(n.startswith("style:") for n in sets) else "")
        + "). R² and "
        "Spearman ρ: how well each estimate tracks the true accuracy across sets; MAE only for estimators that "
        "output an accuracy.",
        body,
    )
