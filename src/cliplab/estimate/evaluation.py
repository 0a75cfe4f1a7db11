"""Compare accuracy estimators across shifted test sets: R² (squared Pearson), Spearman ρ, MAE.

``ESTIMATORS`` is the registry of label-free accuracy estimators (a :class:`cliplab.extension.Registry`;
entry-point group ``cliplab.estimators``): ``register_estimator(name, fn, accuracy=...)`` adds one, which
``evaluate_estimators`` (and ``cliplab estimate``, the bench's ``estimate`` stage) then runs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cliplab._validation import ArrayLike, as_labels
from cliplab.estimate.baselines import atc, atc_temperature, average_confidence, doc, nuclear_norm
from cliplab.estimate.mano_score import mano, mano_criterion, mano_uses_softmax
from cliplab.extension import Registry
from cliplab.ood.scores import as_logits

#: ``fn(logits, val_logits, val_labels) -> float``: an estimate for one shifted set (not the ``Estimator`` base
#: class of ``cliplab._validation``, which fitted methods subclass)
AccuracyEstimator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float]


def _check(name: str, fn: AccuracyEstimator) -> None:
    if not callable(fn):
        raise TypeError(f"an accuracy estimator is a function fn(logits, val_logits, val_labels), got {fn!r}")


#: name → ``fn(logits, val_logits, val_labels) -> float``
ESTIMATORS: Registry[AccuracyEstimator] = Registry("accuracy estimator", group="cliplab.estimators", check=_check)
#: Built-in estimators whose output is itself an accuracy (MAE is reported only for these).
ACCURACY_ESTIMATORS = frozenset({"average_confidence", "doc", "atc", "atc_entropy"})
#: every registered estimator whose output is an accuracy (``register_estimator(..., accuracy=True)``)
_ACCURACY_OUTPUT: set[str] = set()


def register_estimator(
    name: str, fn: AccuracyEstimator, *, accuracy: bool = False, replace: bool = False
) -> AccuracyEstimator:
    """Add ``fn(logits, val_logits, val_labels) -> float`` to ``ESTIMATORS``; ``accuracy``: its output is an
    accuracy (so ``evaluate_estimators`` reports its MAE). A taken name raises ValueError unless ``replace``."""
    ESTIMATORS.register(name, fn, replace=replace)
    (_ACCURACY_OUTPUT.add if accuracy else _ACCURACY_OUTPUT.discard)(name)
    return fn


for _name, _fn in {
    "average_confidence": lambda z, zv, yv: average_confidence(z),
    "doc": lambda z, zv, yv: doc(zv, yv, z),
    "atc": lambda z, zv, yv: atc(zv, yv, z, score="maxconf"),
    "atc_entropy": lambda z, zv, yv: atc(zv, yv, z, score="entropy"),
    # the branch is decided on the ID validation set, hence the same for every shifted set
    "mano": lambda z, zv, yv: mano(z, softmax=mano_uses_softmax(zv)),
    "nuclear_norm": lambda z, zv, yv: nuclear_norm(z),
}.items():
    register_estimator(_name, _fn, accuracy=_name in ACCURACY_ESTIMATORS)


def _pearson_r2(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y).statistic)


def evaluate_estimators(
    sets: Sequence[tuple[str, ArrayLike, ArrayLike]],
    val_logits: ArrayLike,
    val_labels: ArrayLike,
    estimators: Sequence[str] | Mapping[str, AccuracyEstimator] | None = None,
    *,
    accuracy_estimators: Collection[str] | None = None,
) -> dict[str, Any]:
    """Run each estimator on every shifted set ``(name, logits, labels)`` and score it against the truth.

    The true accuracy of a set is top-1 accuracy of its logits; labels are used only for that. The
    validation set (in-distribution, labelled) feeds the estimators that need it (DoC, ATC).

    ``estimators``: names from ``ESTIMATORS`` (None: every registered one) or a mapping ``name -> fn(logits,
    val_logits, val_labels)``.
    Per estimator: ``r2`` = squared Pearson correlation between estimates and accuracies, ``spearman``
    = Spearman ρ (both NaN when either side is constant), and ``mae`` = mean |estimate − accuracy| only
    for estimators whose output *is* an accuracy (names in ``accuracy_estimators``, default those registered
    with ``accuracy=True``: average confidence, DoC, ATC); score-type estimators (MaNo, nuclear norm) get
    ``mae = None``, since turning a score into an accuracy needs a fitted map that the shifted sets themselves
    must not provide.

    MaNo's normalisation (softmax or Taylor) is decided once, on the validation logits, and reused for
    every set (``mano_uses_softmax``); ``protocol["mano"]`` records ``Φ_val`` and the branch. ATC divides
    every set's logits by the temperature fitted on the validation set (``protocol["atc"]``).

    Returns ``{"accuracy": {set: acc}, "estimators": {name: {"r2", "spearman", "mae", "estimates":
    {set: value}}}, "protocol": {...}}``. Needs at least 3 sets (two points always correlate perfectly).
    """
    if len(sets) < 3:
        raise ValueError(f"evaluate_estimators needs at least 3 sets to correlate over, got {len(sets)}")
    names = [s[0] for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"set names must be unique, got {names}")
    if accuracy_estimators is None:
        accuracy_estimators = frozenset(_ACCURACY_OUTPUT)
    if estimators is None:
        estimators = ESTIMATORS.names()
    if isinstance(estimators, Mapping):
        fns = dict(estimators)
    else:
        unknown = [e for e in estimators if e not in ESTIMATORS]
        if unknown:
            raise ValueError(f"unknown estimator(s) {unknown}; choose from {sorted(ESTIMATORS)}")
        fns = {e: ESTIMATORS[e] for e in estimators}
    if not fns:
        raise ValueError("no estimators given")
    zv = as_logits(val_logits, "val_logits", dtype=torch.float64)
    yv = as_labels(val_labels, "val_labels", n=zv.shape[0], num_classes=zv.shape[1])

    accuracy: dict[str, float] = {}
    data = []
    for item in sets:
        if len(item) != 3:
            raise ValueError("each set must be a (name, logits, labels) triple")
        name, logits, labels = item
        z = as_logits(logits, f"logits of set {name!r}", dtype=torch.float64)
        if z.shape[1] != zv.shape[1]:
            raise ValueError(f"set {name!r} has {z.shape[1]} classes but val_logits have {zv.shape[1]}")
        y = as_labels(labels, f"labels of set {name!r}", n=z.shape[0], num_classes=z.shape[1])
        accuracy[name] = float((z.argmax(1) == y).double().mean())
        data.append((name, z))

    truth = np.array([accuracy[n] for n in names])
    results: dict[str, Any] = {}
    for est, fn in fns.items():
        estimates = {name: float(fn(z, zv, yv)) for name, z in data}
        values = np.array([estimates[n] for n in names])
        results[est] = {
            "r2": _pearson_r2(values, truth),
            "spearman": _spearman(values, truth),
            "mae": float(np.abs(values - truth).mean()) if est in accuracy_estimators else None,
            "estimates": estimates,
        }
    protocol: dict[str, Any] = {}
    if "mano" in fns and fns["mano"] is ESTIMATORS.get("mano", None):
        phi = mano_criterion(zv)
        protocol["mano"] = {
            "phi_val": phi,
            "branch": "softmax" if mano_uses_softmax(zv) else "taylor",
            "decided_on": "validation",
        }
    if any(fns.get(e) is ESTIMATORS.get(e, None) for e in ("atc", "atc_entropy")):
        protocol["atc"] = {"temperature": atc_temperature(zv, yv), "fit_on": "validation", "threshold": "balance"}
    return {"accuracy": accuracy, "estimators": results, "protocol": protocol}
