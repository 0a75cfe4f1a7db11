"""CLIP's loss with extra hard-negative captions in the batch (NegCLIP, Yuksekgonul et al. 2023; TripletCLIP,
Patel et al. 2024, uses generated negatives the same way)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cliplab._validation import ArrayLike
from cliplab.losses._common import Scalar, as_feature_matrix, as_pair, as_scalar, check_geometry, pairwise_logits


def hard_negative_clip_loss(
    image_features: ArrayLike,
    text_features: ArrayLike,
    negative_features: ArrayLike,
    logit_scale: Scalar,
    logit_bias: Scalar | None = None,
    *,
    geometry: str = "cosine",
) -> torch.Tensor:
    """Symmetric InfoNCE where every image is also scored against ``B_neg`` hard-negative captions.

    Image → text: ``z = s·I·[T; N]ᵀ (+ b)``, ``[B, B + B_neg]``, cross-entropy with target ``i`` (its own caption);
    text → image: CLIP's ``CE(s·T·Iᵀ, arange)`` (a negative caption has no image of its own, so it is only a
    column). Loss ``½·[CE_i→t + CE_t→i]``, mean over the batch; with no negatives it equals ``clip_loss``.
    ``geometry="euclidean"`` uses ``−s·‖x − y‖²`` as the logit.

    Args:
        image_features, text_features: ``[B, D]``, row ``i`` of each a positive pair.
        negative_features: ``[B_neg, D]`` hard-negative captions (any number, e.g. one rewrite per caption).
        logit_scale: ``s`` (exponentiated), number or 0-d tensor; logit_bias: ``b`` (cancels in softmax).
    """
    geometry = check_geometry(geometry)
    img, txt = as_pair(image_features, text_features, "image_features", "text_features")
    neg = as_feature_matrix(negative_features, "negative_features") if len(negative_features) else None
    if neg is not None and neg.shape[1] != img.shape[1]:
        raise ValueError(f"negative_features have dimension {neg.shape[1]} but the image features {img.shape[1]}")
    scale = as_scalar(logit_scale, "logit_scale", img)
    columns = txt if neg is None else torch.cat([txt, neg.to(txt.dtype)])
    z_i2t = pairwise_logits(img, columns, scale, geometry)
    z_t2i = pairwise_logits(txt, img, scale, geometry)
    if logit_bias is not None:
        bias = as_scalar(logit_bias, "logit_bias", img)
        z_i2t, z_t2i = z_i2t + bias, z_t2i + bias
    target = torch.arange(img.shape[0], device=img.device)
    return 0.5 * (F.cross_entropy(z_i2t, target) + F.cross_entropy(z_t2i, target))


__all__ = ["hard_negative_clip_loss"]
