"""Assessment workflows on cached features: OOD tables, calibration reports, accuracy estimation, embedding geometry."""

from cliplab.assess.conformal_sets import ConformalClassifier, coverage_and_size
from cliplab.assess.geometry import (
    alignment,
    center_modalities,
    effective_rank,
    embedding_geometry,
    modality_gap,
    uniformity,
)
from cliplab.assess.reliability import (
    OOD_METHODS,
    calibration_evaluation,
    estimation_evaluation,
    ood_evaluation,
    ood_methods,
    split_half,
)

__all__ = [
    "ConformalClassifier",
    "OOD_METHODS",
    "alignment",
    "calibration_evaluation",
    "center_modalities",
    "coverage_and_size",
    "effective_rank",
    "embedding_geometry",
    "estimation_evaluation",
    "modality_gap",
    "ood_evaluation",
    "ood_methods",
    "split_half",
    "uniformity",
]
