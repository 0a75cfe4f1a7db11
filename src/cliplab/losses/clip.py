"""The symmetric InfoNCE loss of CLIP, materialised or tiled."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cliplab._validation import ArrayLike
from cliplab.losses._common import (
    Scalar,
    as_pair,
    as_scalar,
    check_chunk_size,
    check_geometry,
    paired_logits,
    pairwise_logits,
)
from cliplab.losses.chunked import tiled_logsumexp


def clip_loss(
    image_features: ArrayLike,
    text_features: ArrayLike,
    logit_scale: Scalar,
    logit_bias: Scalar | None = None,
    *,
    geometry: str = "cosine",
    chunk_size: int | None = None,
    squared: bool = True,
) -> torch.Tensor:
    """Symmetric contrastive (InfoNCE) loss of CLIP (Radford et al., 2021), mean over the batch.

    Logits ``z_ij = s·I_i·T_j (+ b)`` (``geometry="cosine"``; the features are used as given, not
    normalised here) or ``z_ij = −s·‖I_i − T_j‖² (+ b)`` (``"euclidean"``, EuCLIP); the loss is
    ``½·[CE(z, arange) + CE(zᵀ, arange)]``, i.e.
    ``(1/B)·Σ_i [½·LSE_j z_ij + ½·LSE_j z_ji − z_ii]``. A bias shifts every logit equally, so it
    changes neither the value nor the other gradients (its own gradient is zero).

    Args:
        image_features, text_features: ``[B, D]``; row ``i`` of each is a positive pair.
        logit_scale: the multiplier ``s`` (already exponentiated): a number or a 0-d tensor, which
            receives a gradient when it requires one.
        logit_bias: optional additive ``b`` (number or 0-d tensor).
        geometry: ``"cosine"`` or ``"euclidean"``.
        squared: with ``"euclidean"``, False uses the plain distance, ``z_ij = −s·‖I_i − T_j‖`` (the
            ``euclidean`` metric of EIFY's EuCLIP branch, ``loss.py``; materialised only). EuCLIP also
            scales the features by ``1/√D`` before the loss (``cliplab.train.objective`` does).
        chunk_size: None materialises the ``B × B`` logits. An integer computes the same value and
            gradients (w.r.t. both feature matrices, the scale and the bias) from row tiles of
            ``chunk_size × B``: row and column log-sum-exp merged tile by tile, tiles recomputed in
            the backward pass (Inf-CL, Chen et al. 2024), so memory is O(B·chunk_size).

    Raises:
        ValueError: non-2-D, empty or non-finite features, mismatched shapes, an unknown geometry,
            ``chunk_size < 1`` or a non-finite scale/bias.
    """
    image, text = as_pair(image_features, text_features, "image_features", "text_features")
    geometry = check_geometry(geometry)
    chunk = check_chunk_size(chunk_size)
    scale = as_scalar(logit_scale, "logit_scale", image)
    bias = as_scalar(logit_bias, "logit_bias", image) if logit_bias is not None else None
    n = image.shape[0]
    if not squared:
        if geometry != "euclidean":
            raise ValueError("squared=False (the plain distance) needs geometry='euclidean'")
        if chunk is not None:
            raise ValueError("chunk_size is not supported with squared=False (the plain Euclidean distance)")
        logits = -scale * euclidean_distances(image, text)
        if bias is not None:
            logits = logits + bias
        labels = torch.arange(n, device=image.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    if chunk is None:
        logits = pairwise_logits(image, text, scale, geometry)
        if bias is not None:
            logits = logits + bias
        labels = torch.arange(n, device=image.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    row_lse, col_lse = tiled_logsumexp(image, text, scale, chunk_size=chunk, geometry=geometry)
    positives = paired_logits(image, text, scale, geometry)
    if bias is not None:
        row_lse, col_lse, positives = row_lse + bias, col_lse + bias, positives + bias
    return (0.5 * (row_lse + col_lse) - positives).mean()


def euclidean_distances(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``[N, M]`` distances ``‖a_i − b_j‖`` from ``‖a‖² + ‖b‖² − 2a·b``, clamped at ``eps`` before the
    square root (a finite gradient where two features coincide)."""
    sq = a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2.0 * (a @ b.T)
    return sq.clamp_min(eps).sqrt()


def clip_row_loss_sum(
    queries: torch.Tensor,
    keys: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    offset: int,
    geometry: str,
    chunk_size: int | None,
) -> torch.Tensor:
    """``Σ_i CE(z_i·, offset + i)`` for ``z = logits(queries [n, D], keys [m, D])``: one direction of
    the CLIP loss on a non-square block (the local rows against the gathered batch). Inputs are
    validated by the caller."""
    n = queries.shape[0]
    if chunk_size is None:
        logits = pairwise_logits(queries, keys, scale, geometry)
        if bias is not None:
            logits = logits + bias
        labels = torch.arange(offset, offset + n, device=queries.device)
        return F.cross_entropy(logits, labels, reduction="sum")
    row_lse, _ = tiled_logsumexp(queries, keys, scale, chunk_size=chunk_size, geometry=geometry, cols=False)
    positives = paired_logits(queries, keys[offset : offset + n], scale, geometry)
    if bias is not None:
        row_lse, positives = row_lse + bias, positives + bias
    return (row_lse - positives).sum()


__all__ = ["clip_loss"]
