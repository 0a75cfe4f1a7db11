"""Optimizers, parameter groups, learning-rate schedules and the gradient scaler shared by every training loop
(the trainer, fine-tuning, the built-in recipes, prompt learning): a leaf, torch only (``optimizers.py``)."""

from cliplab.optimization.optimizers import (
    ParamGroups,
    build_optimizer,
    cosine_annealing,
    grad_scaler,
    param_groups,
    schedule,
    sgd,
    warmup_cosine,
)

__all__ = [
    "ParamGroups",
    "build_optimizer",
    "cosine_annealing",
    "grad_scaler",
    "param_groups",
    "schedule",
    "sgd",
    "warmup_cosine",
]
