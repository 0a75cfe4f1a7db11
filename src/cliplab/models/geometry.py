"""The logits of image and text features in a model's geometry: one function for training and evaluation.

``cosine``: ``z_ij = s·a_i·b_j (+ b)`` on L2-normalised features. ``euclidean`` (EuCLIP, EIFY/open_clip ``euclip``
branch): the features are first scaled by ``1/√D`` (``model.py``'s ``dim_scale``), then
``z_ij = −s·‖a_i − b_j‖² (+ b)``, i.e. ``−s·‖a_i − b_j‖²/D`` on the raw features. The training objective
(``cliplab.train.objective``, through ``cliplab.losses``) scales the features with :func:`euclidean_feature_scale`
and computes the logits with :func:`pairwise_logits`; ``Model.logits``, ``Model.similarity`` and the zero-shot
classifier use :func:`feature_logits`, which does both, so a model is evaluated with the logits it was trained on.
"""

from __future__ import annotations

import math

import torch

__all__ = ["euclidean_feature_scale", "feature_logits", "pairwise_logits"]


def euclidean_feature_scale(dim: int) -> float:
    """EuCLIP's feature scale ``1/√D`` (the reference's ``dim_scale``; the objective's ``feature_scale="sqrt_dim"``)."""
    return 1.0 / math.sqrt(int(dim))


def pairwise_logits(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float, geometry: str) -> torch.Tensor:
    """``[N, M]`` logits without bias of features used as given: ``s·a·bᵀ`` or ``−s·‖a_i − b_j‖²`` (expanded as
    ‖a‖² + ‖b‖² − 2a·b).

    The scale multiplies the ``[N, D]`` factor, not the ``[N, M]`` product (one pass less over the logits).
    """
    if geometry == "cosine":
        return (scale * a) @ b.T
    if geometry != "euclidean":
        raise ValueError(f"unknown geometry {geometry!r}; expected 'cosine' or 'euclidean'")
    a_sq, b_sq = scale * a.pow(2).sum(1), scale * b.pow(2).sum(1)
    return torch.addmm(-a_sq[:, None], a * (2.0 * scale), b.T) - b_sq[None, :]


def feature_logits(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float = 1.0,
    logit_bias: torch.Tensor | float | None = None,
    geometry: str = "cosine",
) -> torch.Tensor:
    """``[N, M]`` logits of a model's features, as in training: ``s·x·yᵀ (+ b)`` (cosine) or, with the features
    scaled by ``c = 1/√D`` first, ``−s·‖c·x − c·y‖² (+ b)`` (euclidean)."""
    if geometry == "euclidean":
        c = euclidean_feature_scale(image_features.shape[-1])
        image_features, text_features = image_features * c, text_features * c
    z = pairwise_logits(image_features, text_features, logit_scale, geometry)
    return z if logit_bias is None else z + logit_bias
