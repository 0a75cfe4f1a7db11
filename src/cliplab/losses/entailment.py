"""The Euclidean entailment-cone loss of EuCLIP (Ganea et al., ICML 2018; EIFY/open_clip ``euclip`` branch)."""

from __future__ import annotations

import torch

from cliplab._validation import ArrayLike
from cliplab.losses._common import as_pair

_EPS = 1e-7


def euclidean_entailment_loss(
    general: ArrayLike, specific: ArrayLike, K: float = 0.1, *, eps: float = _EPS
) -> torch.Tensor:
    """Mean violation of the entailment cone of ``general`` (texts) by ``specific`` (their images).

    For each pair ``(x, y)``: the exterior angle ``ext = arccos(((y − x)·x) / (‖y − x‖·‖x‖))`` and the
    cone's half-aperture ``aper = arcsin(min(K/‖x‖, 1))``; the loss is ``mean_i max(ext_i − aper_i, 0)``,
    or ``mean_i ext_i`` when ``K = 0`` (EuCLIP's ``euclidean_entailment(text, image, K)``; ``K = 0.1``
    there). The cosine is clamped to ``[−1 + eps, 1 − eps]`` so ``arccos`` keeps a finite gradient.

    Args:
        general, specific: ``[B, D]`` rows paired by index (EuCLIP: text features, image features),
            already scaled as the contrastive loss sees them.
        K: the aperture constant ``K ≥ 0``.
    """
    x, y = as_pair(general, specific, "general", "specific")
    if not K >= 0:
        raise ValueError(f"K must be non-negative, got {K}")
    d = y - x
    x_norm = x.norm(dim=1).clamp_min(eps)
    cos = (d * x).sum(1) / (d.norm(dim=1).clamp_min(eps) * x_norm)
    ext = torch.acos(cos.clamp(-1.0 + eps, 1.0 - eps))
    if K == 0:
        return ext.mean()
    aper = torch.asin((K / x_norm).clamp(max=1.0))
    return (ext - aper).clamp_min(0.0).mean()


__all__ = ["euclidean_entailment_loss"]
