"""Label-free accuracy estimation under distribution shift.

``mano`` (Xie et al. 2024) and the baselines ``average_confidence``, ``doc``, ``atc``, ``nuclear_norm``;
``evaluate_estimators`` scores them across shifted sets (R², Spearman ρ, MAE).
"""

from __future__ import annotations

from cliplab.estimate.baselines import atc, atc_temperature, atc_threshold, average_confidence, doc, nuclear_norm
from cliplab.estimate.evaluation import (
    ACCURACY_ESTIMATORS,
    ESTIMATORS,
    AccuracyEstimator,
    evaluate_estimators,
    register_estimator,
)
from cliplab.estimate.mano_score import mano, mano_criterion, mano_uses_softmax

__all__ = [
    "ACCURACY_ESTIMATORS",
    "ESTIMATORS",
    "AccuracyEstimator",
    "atc",
    "atc_temperature",
    "atc_threshold",
    "average_confidence",
    "doc",
    "evaluate_estimators",
    "mano",
    "mano_criterion",
    "mano_uses_softmax",
    "nuclear_norm",
    "register_estimator",
]
