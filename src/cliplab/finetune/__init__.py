"""Robust fine-tuning (``cliplab.finetune``): full fine-tuning with a zero-shot-initialised head, FLYP,
CLIPood (margin metric softmax, Beta moving average) and WiSE-FT weight-space ensembling.

* ``finetune(model, dataset, method="ce" | "flyp" | "clipood", ...) -> ImageClassifier`` (a trained copy;
  mixed precision, gradient checkpointing, checkpoints and resume); ``method`` names a
  ``FINETUNE_OBJECTIVES`` entry (``register_finetune_objective`` adds one).
* ``wise_ft(zero_shot_model, finetuned_model, alpha) -> Model``: ``θ = (1 − α)·θ_zs + α·θ_ft`` parameter by
  parameter; ``wise_ft_classifier`` mixes heads too.
* ``robustness_sweep``: ID vs shifted accuracy along the α curve.
"""

from cliplab.finetune.classifier import ImageClassifier, wise_ft_classifier, zeroshot_head
from cliplab.finetune.loop import finetune
from cliplab.finetune.objectives import (
    FINETUNE_OBJECTIVES,
    BetaMovingAverage,
    FinetuneObjective,
    ObjectiveBatch,
    beta_weight,
    margin_metric_softmax,
    register_finetune_objective,
)
from cliplab.finetune.robustness import DEFAULT_ALPHAS, robustness_sweep
from cliplab.finetune.weight_space import clone_model, interpolate_heads, interpolate_state, wise_ft

__all__ = [
    "DEFAULT_ALPHAS",
    "FINETUNE_OBJECTIVES",
    "BetaMovingAverage",
    "FinetuneObjective",
    "ImageClassifier",
    "ObjectiveBatch",
    "beta_weight",
    "clone_model",
    "finetune",
    "interpolate_heads",
    "interpolate_state",
    "margin_metric_softmax",
    "register_finetune_objective",
    "robustness_sweep",
    "wise_ft",
    "wise_ft_classifier",
    "zeroshot_head",
]
