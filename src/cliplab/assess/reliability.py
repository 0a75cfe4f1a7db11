"""Reliability workflows: OOD detection tables, calibration / selective classification, label-free estimation.

All functions run on cached features and zero-shot class weights, so every method costs seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cliplab.features import Features
from cliplab.zeroshot import zeroshot_logits

#: neighbours of the KNN score (Sun et al., 2022, use k = 50 on ImageNet-1k)
KNN_K = 50

#: OOD methods and what they need besides the test features: "logits", "text" (weights), "train" (ID features)
OOD_METHODS: dict[str, str] = {
    "msp": "logits",
    "max_logit": "logits",
    "energy": "logits",
    "mcm": "text",
    "neglabel": "text",
    "knn": "train",
    "vim": "train",
    "mahalanobis": "train",
}


def ood_methods() -> dict[str, str]:
    """``OOD_METHODS`` and every other scorer registered in ``cliplab.ood.OOD_SCORERS`` (what it needs:
    ``"scorer"``, read from its ``requires``)."""
    from cliplab.ood import OOD_SCORERS

    return {**OOD_METHODS, **{name: "scorer" for name in OOD_SCORERS if name not in OOD_METHODS}}


def _scores_of(scorer: Any) -> Callable[[str, Features], torch.Tensor]:
    """``(set name, features) -> scores`` of a fitted ``OODScorer``."""
    return lambda name, f: scorer.score(f.images)


def _curve(x: np.ndarray, y: np.ndarray, points: int = 200) -> dict[str, list[float]]:
    """Down-sample a curve to at most ``points`` points (for plots in results.json)."""
    idx = np.unique(np.linspace(0, len(x) - 1, min(points, len(x))).round().astype(int))
    return {"x": [float(v) for v in x[idx]], "y": [float(v) for v in y[idx]]}


def roc_curve(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> dict[str, list[float]]:
    """FPR (OOD accepted) vs TPR (ID accepted) as the threshold sweeps down the scores."""
    s = torch.cat([id_scores, ood_scores]).double().numpy()
    is_id = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    order = np.argsort(-s, kind="stable")
    tpr = np.r_[0, np.cumsum(is_id[order]) / max(1, len(id_scores))]
    fpr = np.r_[0, np.cumsum(1 - is_id[order]) / max(1, len(ood_scores))]
    return _curve(fpr, tpr)


def ood_evaluation(
    id_features: Features,
    ood_features: Mapping[str, Features],
    text_weights: torch.Tensor,
    logit_scale: float,
    *,
    train_features: Features | None = None,
    encode_texts: Callable[[list[str]], torch.Tensor] | None = None,
    methods: Sequence[str] | None = None,
    curves: bool = False,
    neglabel_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """OOD metrics (AUROC, AUPR-In/Out, the FPR95 conventions) per OOD set and method, plus the mean.

    Methods needing ID training features (KNN, ViM, Mahalanobis) run only when ``train_features`` (labelled
    for Mahalanobis) are given; NegLabel needs ``encode_texts`` to embed its word list. NegLabel follows the
    official recipe (``cliplab.ood.NegLabel``: WordNet nouns and adjectives when WordNet is installed, else
    the built-in list), its ID labels embedded with its own template (``"The nice {}."``) when the ID
    features carry class names; ``neglabel_options`` are keyword arguments of ``NegLabel`` (e.g.
    ``source="builtin"``). ``results["neglabel"]`` names the candidate source and sizes. Any other scorer
    registered in ``cliplab.ood.OOD_SCORERS`` runs too (``ood_methods()``): built with its defaults, fit on what
    its ``requires`` names (``train_features``, ``labels``, ``text_weights``) and skipped when that is missing.
    """
    from cliplab import ood
    from cliplab.metrics import ood_metrics

    if not ood_features:
        raise ValueError("no OOD sets given: pass at least one OOD dataset")
    for name, f in ood_features.items():
        if len(f) == 0:
            raise ValueError(f"OOD set {name!r} is empty")
    known = ood_methods()
    methods = list(methods or known)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown OOD method(s) {unknown}; choose from {list(known)}")
    skipped: dict[str, str] = {}
    if train_features is None:
        for m in [m for m in methods if known[m] == "train"]:
            skipped[m] = "needs in-distribution training features"
    for m in [m for m in methods if known[m] == "scorer"]:
        needs = ood.OOD_SCORERS[m].requires
        if ("train_features" in needs and train_features is None) or (
            "labels" in needs and (train_features is None or train_features.labels is None)
        ):
            skipped[m] = f"needs {' and '.join(sorted(needs - {'text_weights'}))}"
    if encode_texts is None and "neglabel" in methods:
        skipped["neglabel"] = "needs a text encoder for the negative word list"
    methods = [m for m in methods if m not in skipped]

    W = text_weights
    logits_of = {
        name: zeroshot_logits(f.images, W, logit_scale) for name, f in {"id": id_features, **ood_features}.items()
    }
    scorers: dict[str, Callable[[str, Features], torch.Tensor]] = {
        "msp": lambda n, f: ood.msp(logits_of[n]),
        "max_logit": lambda n, f: ood.max_logit(logits_of[n]),
        "energy": lambda n, f: ood.energy(logits_of[n]),
        "mcm": lambda n, f: ood.mcm(f.images, W),
    }
    neglabel_info: dict[str, Any] | None = None
    if "neglabel" in methods:
        assert encode_texts is not None  # skipped above otherwise
        neg = ood.NegLabel(**{"exclude": [], **(neglabel_options or {})})
        classnames = list(id_features.classnames or [])
        pos, id_prompts = W, "the given text weights"
        if len(classnames) == W.shape[0]:  # the reference embeds the ID classes with its noun template
            pos = torch.as_tensor(encode_texts([neg.template.format(c) for c in classnames])).float()
            id_prompts = neg.template
        neg.fit(text_weights=pos, encode_texts=encode_texts)
        scorers["neglabel"] = lambda n, f: neg.score(f.images)
        neglabel_info = {
            "source": neg.source_,
            "n_candidates": int(neg.n_candidates_),
            "n_negatives": int(neg.negative_embeddings_.shape[0]),
            "ngroup": int(neg.ngroup_),
            "id_prompts": id_prompts,
        }
    if train_features is not None:
        if "knn" in methods:
            knn_k = min(KNN_K, len(train_features))  # the paper's k = 50, fewer for a small training set
            knn = ood.KNN(k=knn_k).fit(train_features.images, train_features.labels, W)
            scorers["knn"] = lambda n, f: knn.score(f.images)
        if "vim" in methods:
            bias = torch.zeros(W.shape[0])  # the official rule: 1000 / 512 / D // 2 (``default_vim_dim``)
            vim = ood.ViM(dim=ood.default_vim_dim(W.shape[1])).fit(
                train_features.images, text_weights=logit_scale * W, bias=bias
            )
            scorers["vim"] = lambda n, f: vim.score(f.images)
        if "mahalanobis" in methods:
            if train_features.labels is None:
                skipped["mahalanobis"] = "needs labelled training features"
                methods.remove("mahalanobis")
            else:
                maha = ood.Mahalanobis().fit(train_features.images, train_features.labels, W)
                scorers["mahalanobis"] = lambda n, f: maha.score(f.images)

    for m in [m for m in methods if known[m] == "scorer"]:
        plugged = ood.OOD_SCORERS[m]().fit(
            None if train_features is None else train_features.images,
            None if train_features is None else train_features.labels,
            W,
        )
        scorers[m] = _scores_of(plugged)

    results: dict[str, Any] = {"methods": methods, "skipped": skipped, "sets": {}, "mean": {}}
    if "knn" in scorers:
        results["knn_k"] = knn_k
    if "vim" in scorers:
        results["vim_dim"] = vim.dim_
    if neglabel_info is not None:
        results["neglabel"] = neglabel_info
    curve_data: dict[str, Any] = {}
    for m in methods:
        id_scores = scorers[m]("id", id_features)
        for name, f in ood_features.items():
            scores = scorers[m](name, f)
            results["sets"].setdefault(name, {})[m] = ood_metrics(id_scores, scores)
            if curves:
                curve_data.setdefault(name, {})[m] = roc_curve(id_scores, scores)
        keys = results["sets"][next(iter(ood_features))][m].keys()
        results["mean"][m] = {k: float(np.mean([results["sets"][n][m][k] for n in ood_features])) for k in keys}
    if curves:
        results["roc"] = curve_data
    return results


def split_half(labels: torch.Tensor, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stratified 50/50 split of indices (validation, test) — for calibrating on held-out data."""
    y = labels.numpy()
    rng = np.random.default_rng(seed)
    val, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.nonzero(y == c)[0])
        val.append(idx[: len(idx) // 2])
        test.append(idx[len(idx) // 2 :])
    return np.sort(np.concatenate(val)), np.sort(np.concatenate(test))


def calibration_evaluation(
    val_logits: torch.Tensor, val_labels: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15
) -> dict[str, Any]:
    """ECE and NLL before/after temperature scaling (fit on validation), AURC for MSP and the logit-norm
    confidence (MaxLogit-pNorm as lfpc/FixSelectiveClassification: centred logits, p ∈ {0..9} chosen on
    validation, MSP when MSP has the lower validation AURC), reliability bins and risk–coverage curves.

    AURCs use the reference's trapezoid integration (``aurc(..., integration="trapezoid")``), named in
    ``aurc_integration``; ``logit_norm_method`` is ``"maxlogit_pnorm"`` or ``"msp"`` (then ``logit_norm_p``
    is None)."""
    import torch.nn.functional as F

    from cliplab.metrics.calibration import (
        LogitNormConfidence,
        TemperatureScaling,
        aurc,
        ece,
        reliability_diagram,
        risk_coverage_curve,
    )

    ts = TemperatureScaling().fit(val_logits, val_labels)
    scaled = ts.transform(logits)
    correct = (logits.argmax(1) == labels).float()
    msp_conf = logits.softmax(1).max(1).values
    lnc = LogitNormConfidence().fit(val_logits, val_labels)
    ln_conf = lnc.score(logits)
    cov_msp, risk_msp = risk_coverage_curve(msp_conf, correct)
    cov_ln, risk_ln = risk_coverage_curve(ln_conf, correct)
    return {
        "accuracy": float(correct.mean()),
        "n_val": int(val_labels.numel()),
        "n_test": int(labels.numel()),
        "temperature": float(ts.temperature_),
        "ece": ece(logits, labels, n_bins),
        "ece_scaled": ece(scaled, labels, n_bins),
        "nll": float(F.cross_entropy(logits, labels)),
        "nll_scaled": float(F.cross_entropy(scaled, labels)),
        "aurc_msp": aurc(msp_conf, correct, integration="trapezoid"),
        "aurc_logit_norm": aurc(ln_conf, correct, integration="trapezoid"),
        "aurc_integration": "trapezoid",
        "logit_norm_p": None if lnc.p_ is None else float(lnc.p_),
        "logit_norm_method": lnc.method_,
        "reliability": {k: np.asarray(v).tolist() for k, v in reliability_diagram(logits, labels, n_bins).items()},
        "reliability_scaled": {
            k: np.asarray(v).tolist() for k, v in reliability_diagram(scaled, labels, n_bins).items()
        },
        "risk_coverage": {
            "msp": _curve(np.asarray(cov_msp), np.asarray(risk_msp)),
            "logit_norm": _curve(np.asarray(cov_ln), np.asarray(risk_ln)),
        },
    }


def estimation_evaluation(
    val_logits: torch.Tensor, val_labels: torch.Tensor, sets: Sequence[tuple[str, torch.Tensor, torch.Tensor]]
) -> dict[str, Any]:
    """Every label-free estimator over a family of shifted sets: R², Spearman ρ, MAE (see ``evaluate_estimators``)."""
    from cliplab.estimate import evaluate_estimators

    return evaluate_estimators(list(sets), val_logits, val_labels)
