"""MaNo: matrix-norm unsupervised accuracy estimation (Xie et al., NeurIPS 2024; Renchunzi-Xie/MaNo)."""

from __future__ import annotations

import torch

from cliplab._validation import ArrayLike
from cliplab.ood.scores import as_logits


def mano_criterion(logits: ArrayLike) -> float:
    """``Φ = −(1/(N·K)) Σ_i Σ_k log softmax(q_i)_k``: cross-entropy to the uniform distribution.

    ``Φ ≥ log K`` (Jensen), so for ``K ≥ 149`` classes ``Φ > 5`` always and MaNo always uses softmax.
    """
    q = as_logits(logits, dtype=torch.float64)
    return float(-torch.log_softmax(q, 1).mean())


def mano(logits: ArrayLike, p: float = 4, eta: float = 5.0) -> float:
    """MaNo score of a set of unlabelled predictions (higher ↔ higher accuracy; a score, not an accuracy).

    With ``q`` the **raw logits** ``[N, K]`` (no temperature; for CLIP these are the zero-shot logits,
    i.e. cosines times the logit scale, exactly what the classifier outputs):

    1. criterion ``Φ = mean_{i,k} −log softmax(q_i)_k`` (``mano_criterion``);
    2. normalisation: if ``Φ > eta``, ``σ_i = softmax(q_i)``; otherwise the second-order Taylor
       "softrun" ``v = 1 + q + q²/2``, ``σ_i = (v_i − min_k v_ik) / ‖v_i − min_k v_ik‖₁`` (a zero row stays
       zero, like ``F.normalize``);
    3. aggregation ``score = (1/(N·K) Σ_{i,k} |σ_ik|^p)^{1/p}`` (``p ≥ 1``; the paper uses 4).

    This matches the official ``src/mano/mano.py`` with ``batch_size=None``: the whole set is one
    batch. (The authors' older script computed Φ from the first 5 batches only, scored per batch and
    averaged, with the model in ``train()`` mode; those are deliberately not reproduced.)
    """
    p = float(p)
    if not p >= 1:
        raise ValueError(f"p must be >= 1, got {p}")
    q = as_logits(logits, dtype=torch.float64)
    if mano_criterion(q) > float(eta):
        sigma = torch.softmax(q, 1)
    else:
        v = 1.0 + q + q * q / 2.0
        v = v - v.min(1, keepdim=True).values
        sigma = v / v.sum(1, keepdim=True).clamp_min(1e-12)  # v ≥ 0 here, so Σ v = ‖v‖₁
    return float(sigma.abs().pow(p).mean().pow(1.0 / p))
