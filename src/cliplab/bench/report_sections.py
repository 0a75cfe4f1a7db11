"""Report sections for the adaptation and reliability stages (few-shot curves, ROC, reliability, risk–coverage,
estimated vs true accuracy)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cliplab.bench import html as H


def _plt():
    from cliplab.bench.report import _plt as plt

    return plt()


def adapt_section(results: dict[str, Any], extras: dict[str, Any]) -> str | None:
    res = results["stages"].get("adapt")
    if not res:
        return None
    if "skipped" in res:
        return H.skipped("adapt", "Few-shot adaptation", res["skipped"])
    plt = _plt()
    shots = res["shots"]
    rows = []
    for m, r in res["results"].items():
        rows.append([m, *(r[str(k)]["mean"] if str(k) in r else r[k]["mean"] for k in shots)])
    body = H.table(["method", *(f"{k}-shot" for k in shots)], rows, best={i + 1: "max" for i in range(len(shots))})
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for m, r in res["results"].items():
        if m == "zeroshot":
            continue  # the dashed line
        means = np.array([(r.get(str(k)) or r.get(k))["mean"] for k in shots])
        stds = np.array([(r.get(str(k)) or r.get(k))["std"] for k in shots])
        ax.plot(shots, means, marker="o", label=m)
        ax.fill_between(shots, means - stds, means + stds, alpha=0.12)
    ax.axhline(res["zeroshot"], color="k", ls="--", lw=1.2, label="zero-shot")
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("test accuracy")
    ax.set_title("few-shot accuracy (mean ± std over seeds)", fontsize=11)
    ax.legend(fontsize=8, ncol=2, loc="lower right", framealpha=0.9)
    figs = [H.figure_png(fig, "Few-shot accuracy per method; dashed: zero-shot")]
    b2n = res.get("base_to_new")
    if b2n:
        methods = list(b2n["results"])
        x = np.arange(len(methods))
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for j, (key, label) in enumerate((("base", "base classes"), ("new", "new classes"), ("hm", "harmonic mean"))):
            ax.bar(x + (j - 1) * 0.27, [b2n["results"][m][key] for m in methods], width=0.27, label=label)
        ax.set_xticks(x, methods, rotation=30, ha="right")
        lo = min(min(r["base"], r["new"]) for r in b2n["results"].values())
        ax.set_ylim(max(0.0, lo - 0.1), 1.0)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"base-to-new generalisation ({b2n['k']} shots)", fontsize=11)
        ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
        fig.tight_layout()
        figs.append(H.figure_png(fig, "Trained on base classes; tested on base and on unseen new classes"))
    body += '<div class="figs">' + "".join(figs) + "</div>"
    tables = ""
    if b2n:
        split = f"{b2n['n_base_classes']} base / {b2n['n_new_classes']} new classes"
        tables += f"<div><h3>Base-to-new ({b2n['k']} shots; {split})</h3>"
        tables += H.table(
            ["method", "base", "new", "HM"],
            [[m, r["base"], r["new"], r["hm"]] for m, r in b2n["results"].items()],
            best={3: "max"},
        )
        tables += "</div>"
    secs = res.get("seconds", {})
    if secs:
        tables += "<div><h3>Fit + predict time, all runs (s)</h3>"
        tables += H.table(["method", "seconds"], [[m, s] for m, s in secs.items()], digits=2) + "</div>"
    if tables:
        body += f'<div class="cols">{tables}</div>'
    lead = (
        f"Seeds {res['seeds']}; hyper-parameters searched on a split of each support set (never the test set). "
        "Every method is a logit bias over the zero-shot logits."
    )
    return H.section("adapt", "Few-shot adaptation", lead, body)


def ood_section(results: dict[str, Any], extras: dict[str, Any]) -> str | None:
    res = results["stages"].get("ood")
    if not res:
        return None
    if "skipped" in res:
        return H.skipped("ood", "OOD detection", res["skipped"])
    plt = _plt()
    cols = ["auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_openood"]
    body, figs = "", []
    for task, r in res.items():
        for name, table in r["sets"].items():
            body += f"<h3>{H.esc(task)} task · OOD = {H.esc(name)}</h3>"
            body += H.table(
                ["method", "AUROC", "AUPR-In", "AUPR-Out", "FPR95 (MCM)", "FPR95 (OpenOOD)"],
                [[m, *(table[m][c] for c in cols)] for m in r["methods"]],
                best={1: "max", 4: "min"},
            )
            roc = r.get("roc", {}).get(name)
            if roc:
                fig, ax = plt.subplots(figsize=(4.4, 4.0))
                for m, c in roc.items():
                    ax.plot(c["x"], c["y"], label=f"{m} ({table[m]['auroc']:.3f})", lw=1.4)
                ax.plot([0, 1], [0, 1], color="#999", ls=":", lw=1)
                ax.set_xlabel("OOD accepted (FPR)")
                ax.set_ylabel("ID accepted (TPR)")
                ax.set_title(f"ROC · {task} · {name}", fontsize=10)
                ax.legend(fontsize=7)
                figs.append(H.figure_png(fig, f"ROC curves, {task} task vs {name}"))
        if r.get("skipped"):
            body += "<p class='lead'>" + "; ".join(f"{m}: {w}" for m, w in r["skipped"].items()) + "</p>"
    body += '<div class="figs">' + "".join(figs) + "</div>"
    return H.section("ood", "OOD detection", "Higher score = more in-distribution; FPR95 in both conventions.", body)


def calibration_section(results: dict[str, Any], extras: dict[str, Any]) -> str | None:
    r = results["stages"].get("calibration")
    if not r:
        return None
    plt = _plt()
    rows = [
        ["accuracy", r["accuracy"]],
        ["temperature (fit on validation)", r["temperature"]],
        ["ECE (15 bins)", r["ece"]],
        ["ECE after temperature scaling", r["ece_scaled"]],
        ["NLL", r["nll"]],
        ["NLL after temperature scaling", r["nll_scaled"]],
        ["AURC · max softmax", r["aurc_msp"]],
        [f"AURC · logit norm (p = {r['logit_norm_p']:g})", r["aurc_logit_norm"]],
    ]
    body = H.table(["metric", "value"], rows, digits=4)
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(4.4, 4.6), sharex=True, gridspec_kw={"height_ratios": [3.2, 1]}, layout="constrained"
    )
    for key, label in (("reliability", "raw"), ("reliability_scaled", "temperature-scaled")):
        rel = r[key]
        conf = np.array([np.nan if v is None else v for v in rel["confidence"]], dtype=float)
        acc = np.array([np.nan if v is None else v for v in rel["accuracy"]], dtype=float)
        count = np.asarray(rel["count"], dtype=float)
        ok = ~np.isnan(conf)
        # marker area ∝ bin size: the few-sample bins that make the curve jagged look small
        line = ax.plot(conf[ok], acc[ok], lw=1.2, label=f"{label} (ECE {rel['ece']:.3f})")[0]
        ax.scatter(conf[ok], acc[ok], s=8 + 140 * count[ok] / max(count.sum(), 1), color=line.get_color(), zorder=3)
        lower, upper = np.asarray(rel["bin_lower"]), np.asarray(rel["bin_upper"])
        hist.bar(
            (lower + upper) / 2,
            count / max(count.sum(), 1),
            width=(upper - lower) * 0.9,
            alpha=0.45,
            color=line.get_color(),
        )
    ax.plot([0, 1], [0, 1], color="#999", ls=":", lw=1)
    ax.set_ylabel("accuracy")
    ax.set_title("reliability diagram", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    hist.set_yscale("log")
    hist.set_ylabel("share", fontsize=8)
    hist.set_xlabel("confidence")
    figs = [H.figure_png(fig, "Reliability diagram (15 equal-width bins; dot size and lower panel: share of images)")]
    fig, ax = plt.subplots(figsize=(4.4, 4.0))
    for name, c in r["risk_coverage"].items():
        ax.plot(c["x"], c["y"], label=name)
    ax.set_xlabel("coverage")
    ax.set_ylabel("risk (error rate)")
    ax.set_title("risk–coverage", fontsize=10)
    ax.legend(fontsize=8)
    figs.append(H.figure_png(fig, "Risk–coverage curves (selective classification)"))
    body += '<div class="figs">' + "".join(figs) + "</div>"
    lead = f"{r['n_test']} test images; temperature and logit-norm p chosen on {r['n_val']} validation images."
    return H.section("calibration", "Calibration and selective classification", lead, body)


def estimate_section(results: dict[str, Any], extras: dict[str, Any]) -> str | None:
    r = results["stages"].get("estimate")
    if not r:
        return None
    if "skipped" in r:
        return H.skipped("estimate", "Label-free accuracy estimation", r["skipped"])
    plt = _plt()
    rows = [[name, e["r2"], e["spearman"], e["mae"]] for name, e in r["estimators"].items()]
    body = H.table(["estimator", "R²", "Spearman ρ", "MAE"], rows, best={1: "max", 2: "max", 3: "min"})
    names = list(r["accuracy"])
    truth = np.array([r["accuracy"][n] for n in names])
    est = r["estimators"]
    cols = min(3, len(est))
    n_rows = -(-len(est) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.9 * cols, 3.4 * n_rows), squeeze=False, layout="constrained")
    severity = np.array([int(n.rsplit("@", 1)[1]) if "@" in n else 0 for n in names])
    levels = sorted(set(severity.tolist()))
    colours = plt.get_cmap("viridis")(np.linspace(0.1, 0.85, max(len(levels), 1)))
    for ax in axes.ravel()[len(est) :]:
        ax.axis("off")
    for ax, (name, e) in zip(axes.ravel(), est.items()):
        vals = np.array([e["estimates"][n] for n in names])
        for level, colour in zip(levels, colours):
            sel = severity == level
            ax.scatter(vals[sel], truth[sel], s=24, color=colour, alpha=0.85, label=f"severity {level}")
        if e["mae"] is not None:
            lo, hi = min(vals.min(), truth.min()), max(vals.max(), truth.max())
            ax.plot([lo, hi], [lo, hi], color="#999", ls=":", lw=1)
        ax.set_title(f"{name}  (ρ = {e['spearman']:.2f})", fontsize=10)
        ax.set_xlabel("estimate" if e["mae"] is not None else "score")
        ax.set_ylabel("true accuracy")
    if len(levels) > 1:
        axes[0, 0].legend(fontsize=8, loc="upper left", framealpha=0.9)
    body += (
        '<div class="figs">'
        + H.figure_png(
            fig, "Estimate (or score) vs true accuracy, one point per shifted set; dotted: y = x", layout="wide"
        )
        + "</div>"
    )
    return H.section(
        "estimate",
        "Label-free accuracy estimation",
        f"{len(names)} shifted test sets (corruption × severity); MAE only for accuracy-valued estimators.",
        body,
    )
