"""Functional metrics: classification, OOD detection, calibration, retrieval and caption scoring."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    # classification
    "accuracy": "classification",
    "topk_accuracy": "classification",
    "mean_per_class_recall": "classification",
    "confusion_matrix": "classification",
    "classification_report": "classification",
    # OOD detection
    "ood_metrics": "ood",
    # calibration and selective classification
    "ece": "calibration",
    "TemperatureScaling": "calibration",
    "aurc": "calibration",
    "risk_coverage_curve": "calibration",
    "reliability_diagram": "calibration",
    "logit_norm_confidence": "calibration",
    "LogitNormConfidence": "calibration",
    # retrieval and caption scoring
    "retrieval": "retrieval_metrics",
    "clipscore": "retrieval_metrics",
    "refclipscore": "retrieval_metrics",
    # anomaly detection, segmentation, group robustness
    "anomaly_metrics": "anomaly_detection",
    "segmentation_metrics": "segmentation",
    "worst_group_accuracy": "groups",
    "group_accuracies": "groups",
    "group_robustness": "groups",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"cliplab.metrics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cliplab.metrics' has no attribute {name!r}")
