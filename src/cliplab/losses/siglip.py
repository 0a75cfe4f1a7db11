"""The pairwise sigmoid loss of SigLIP, materialised or tiled."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cliplab._validation import ArrayLike
from cliplab.losses._common import Scalar, as_pair, as_scalar, check_chunk_size, paired_logits, pairwise_logits
from cliplab.losses.chunked import tiled_softplus_sum


def siglip_loss(
    image_features: ArrayLike,
    text_features: ArrayLike,
    logit_scale: Scalar,
    logit_bias: Scalar | None,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Sigmoid loss of SigLIP (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", 2023).

    ``L = −(1/B)·Σ_i Σ_j log σ(ℓ_ij·(s·x_i·y_j + b))`` with ``ℓ_ij = +1`` for ``i = j`` and ``−1``
    otherwise: a sum over all ``B²`` pairs normalised by the batch size (as in the paper and open_clip).
    The features are used as given (not normalised here).

    Args:
        image_features, text_features: ``[B, D]``; row ``i`` of each is a positive pair.
        logit_scale: ``s = exp(t')`` (number or 0-d tensor; SigLIP initialises ``t' = ln 10``).
        logit_bias: ``b`` (number or 0-d tensor; SigLIP initialises ``b = −10``); None means 0.
        chunk_size: None materialises the ``B × B`` logits. An integer computes the same value and
            gradients from ``chunk_size × B`` row tiles using
            ``L = (1/B)·[Σ_ij softplus(z_ij) − Σ_i z_ii]`` (since ``−log σ(z) = softplus(z) − z``); tiles
            are recomputed in the backward pass, so memory is O(B·chunk_size).

    Raises:
        ValueError: bad features (shape, NaN, mismatch), ``chunk_size < 1``, non-finite scale/bias.
    """
    image, text = as_pair(image_features, text_features, "image_features", "text_features")
    chunk = check_chunk_size(chunk_size)
    scale = as_scalar(logit_scale, "logit_scale", image)
    bias = as_scalar(logit_bias, "logit_bias", image, default=0.0)
    return siglip_row_loss_sum(image, text, scale, bias, offset=0, chunk_size=chunk) / image.shape[0]


def siglip_row_loss_sum(
    queries: torch.Tensor,
    keys: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    *,
    offset: int,
    chunk_size: int | None,
) -> torch.Tensor:
    """``−Σ_i Σ_j log σ(ℓ_ij·z_ij)`` over a ``[n, m]`` block whose positives are ``(i, offset + i)``
    (the local images against the gathered texts). Inputs are validated by the caller."""
    n = queries.shape[0]
    if chunk_size is None:
        logits = pairwise_logits(queries, keys, scale, "cosine") + bias
        signs = -torch.ones_like(logits)
        signs.diagonal(offset=offset).fill_(1.0)
        return -F.logsigmoid(signs * logits).sum()
    positives = paired_logits(queries, keys[offset : offset + n], scale, "cosine") + bias
    return tiled_softplus_sum(queries, keys, scale, bias, chunk_size=chunk_size) - positives.sum()


__all__ = ["siglip_loss"]
