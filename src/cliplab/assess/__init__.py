"""Assessment workflows on cached features: OOD tables, calibration reports, accuracy estimation."""

from cliplab.assess.reliability import (
    OOD_METHODS,
    calibration_evaluation,
    estimation_evaluation,
    ood_evaluation,
    split_half,
)

__all__ = ["OOD_METHODS", "calibration_evaluation", "estimation_evaluation", "ood_evaluation", "split_half"]
