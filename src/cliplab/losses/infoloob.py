"""CLOOB's InfoLOOB (leave-one-out) contrastive bound, optionally with Hopfield retrieval."""

from __future__ import annotations

import torch

from cliplab._validation import ArrayLike
from cliplab.losses._common import Scalar, as_pair, as_scalar, check_chunk_size
from cliplab.losses.chunked import tiled_logsumexp


def _loo_lse(x: torch.Tensor, y: torch.Tensor, inv_tau: torch.Tensor, rows: bool, cols: bool, chunk: int | None):
    """Row/column log-sum-exp of ``inv_tau·x·yᵀ`` with the diagonal left out."""
    if chunk is not None:
        return tiled_logsumexp(x, y, inv_tau, chunk_size=chunk, rows=rows, cols=cols, mask_offset=0)
    logits = inv_tau * (x @ y.T)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    logits = logits.masked_fill(eye, float("-inf"))
    return (
        torch.logsumexp(logits, dim=1) if rows else None,
        torch.logsumexp(logits, dim=0) if cols else None,
    )


def _hopfield(state: torch.Tensor, stored: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """One modern-Hopfield update ``softmax(β·ξ·Xᵀ)·X`` per state row, L2-normalised."""
    retrieved = torch.softmax(beta * (state @ stored.T), dim=1) @ stored
    return retrieved / retrieved.norm(dim=1, keepdim=True)


def infoloob_loss(
    image_features: ArrayLike,
    text_features: ArrayLike,
    inv_tau: Scalar = 14.3,
    *,
    hopfield: bool = False,
    scale_hopfield: Scalar = 14.3,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """InfoLOOB loss of CLOOB (Fürst et al., "CLOOB: Modern Hopfield Networks with InfoLOOB Outperform
    CLIP", NeurIPS 2022; reference code ml-jku/cloob ``src/training/methods.py``).

    One direction, for ``a_i`` against ``b_j`` with ``τ = 1/inv_tau``:
    ``L(a, b) = τ·[−mean_i a_i·b_i/τ + mean_i log Σ_{j≠i} exp(a_i·b_j/τ)]`` — the positive is left out
    of the denominator (leave-one-out bound), so the loss can go below zero. As in the CLOOB code the
    two directions are **summed** (not averaged):

    * ``hopfield=False``: ``L(I, T) + L(T, I)`` (image rows against texts, text rows against images);
    * ``hopfield=True``: features are first replaced by modern-Hopfield retrievals
      ``U_xy = norm(softmax(β·x·yᵀ)·y)`` with ``β = scale_hopfield``, and the loss is
      ``L(U_ii, U_ti) + L(U_tt, U_it)`` (CLOOB: ``p_xx, p_xy`` and ``p_yy, p_yx``), where ``U_ti``
      are the images retrieved by the texts and ``U_it`` the texts retrieved by the images.

    Args:
        image_features, text_features: ``[B, D]`` with ``B ≥ 2`` (normally L2-normalised).
        inv_tau: ``1/τ`` (number or 0-d tensor that may require grad); CLOOB default 14.3 (30 on CC3M).
        hopfield: apply the Hopfield retrieval first (CLOOB); False gives plain InfoLOOB.
        scale_hopfield: ``β`` of the retrieval (CLOOB default 14.3, 8 on CC3M).
        chunk_size: tile size of the memory-efficient variant (same value and gradients); only
            without Hopfield retrieval, which itself needs the ``B × B`` association matrices.

    Raises:
        ValueError: bad features, ``B < 2``, ``inv_tau ≤ 0``, ``chunk_size < 1`` or with ``hopfield``.
    """
    image, text = as_pair(image_features, text_features, "image_features", "text_features")
    chunk = check_chunk_size(chunk_size)
    if image.shape[0] < 2:
        raise ValueError(f"infoloob_loss needs at least 2 pairs (leave-one-out), got {image.shape[0]}")
    s = as_scalar(inv_tau, "inv_tau", image)
    if float(s.detach()) <= 0:
        raise ValueError(f"inv_tau must be positive, got {float(s.detach())}")
    if not hopfield:
        row_lse, col_lse = _loo_lse(image, text, s, True, True, chunk)
        positives = s * (image * text).sum(1)
        return ((row_lse - positives).mean() + (col_lse - positives).mean()) / s
    if chunk is not None:
        raise ValueError("chunk_size is not supported with hopfield=True (the retrieval needs the B × B matrices)")
    beta = as_scalar(scale_hopfield, "scale_hopfield", image)
    u_ii, u_tt = _hopfield(image, image, beta), _hopfield(text, text, beta)
    u_ti, u_it = _hopfield(text, image, beta), _hopfield(image, text, beta)
    total = image.new_zeros(())
    for x, y in ((u_ii, u_ti), (u_tt, u_it)):
        row_lse, _ = _loo_lse(x, y, s, True, False, None)
        total = total + (row_lse - s * (x * y).sum(1)).mean() / s
    return total


__all__ = ["infoloob_loss"]
