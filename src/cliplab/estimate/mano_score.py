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


def mano_uses_softmax(reference_logits: ArrayLike, eta: float = 5.0) -> bool:
    """MaNo's normalisation branch decided once on ``reference_logits``: ``Φ(reference) > eta`` → softmax.

    cliplab decides it on the labelled in-distribution validation set and reuses it for every shifted
    set (``mano(z, softmax=...)``; ``evaluate_estimators`` does this), so neighbouring severities never
    fall on different branches. (The authors' code decides it on the first shifted set it sees.)
    """
    return mano_criterion(reference_logits) > float(eta)


def mano(logits: ArrayLike, p: float = 4, eta: float = 5.0, *, softmax: bool | None = None) -> float:
    """MaNo score of a set of unlabelled predictions (higher ↔ higher accuracy; a score, not an accuracy).

    With ``q`` the **raw logits** ``[N, K]`` (no temperature; for CLIP these are the zero-shot logits,
    i.e. cosines times the logit scale, exactly what the classifier outputs):

    1. criterion ``Φ = mean_{i,k} −log softmax(q_i)_k`` (``mano_criterion``);
    2. normalisation: if ``Φ > eta`` (or ``softmax=True``), ``σ_i = softmax(q_i)``; otherwise (or with
       ``softmax=False``) the second-order Taylor
       "softrun" ``v = 1 + q + q²/2``, ``σ_i = (v_i − min_k v_ik) / ‖v_i − min_k v_ik‖₁`` (a zero row stays
       zero, like ``F.normalize``);
    3. aggregation ``score = (1/(N·K) Σ_{i,k} |σ_ik|^p)^{1/p}`` (``p ≥ 1``; the paper uses 4).

    ``softmax=None`` decides the branch from this set's own Φ, which is right for one set alone. Across
    several shifted sets pass the branch decided once (``mano_uses_softmax(val_logits)``), or a score
    jumps when Φ crosses ``eta`` between neighbouring sets and breaks the correlation with accuracy.

    This matches the official ``src/mano/mano.py`` with ``batch_size=None``: the whole set is one
    batch. (The authors' older script computed Φ from the first 5 batches only, scored per batch and
    averaged, with the model in ``train()`` mode; those are deliberately not reproduced.)
    """
    p = float(p)
    if not p >= 1:
        raise ValueError(f"p must be >= 1, got {p}")
    q = as_logits(logits, dtype=torch.float64)
    use_softmax = mano_criterion(q) > float(eta) if softmax is None else bool(softmax)
    if use_softmax:
        sigma = torch.softmax(q, 1)
    else:
        v = 1.0 + q + q * q / 2.0
        v = v - v.min(1, keepdim=True).values
        sigma = v / v.sum(1, keepdim=True).clamp_min(1e-12)  # v ≥ 0 here, so Σ v = ‖v‖₁
    return float(sigma.abs().pow(p).mean().pow(1.0 / p))
