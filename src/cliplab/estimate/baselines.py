"""Label-free accuracy estimators for a shifted test set (baselines for MaNo).

* ``average_confidence``: mean max softmax probability (Hendrycks & Gimpel 2017).
* ``doc``: Difference of Confidences (Guillory et al., ICCV 2021).
* ``atc``: Average Thresholded Confidence (Garg et al., ICLR 2022).
* ``nuclear_norm``: normalised nuclear norm of the softmax matrix (Deng et al., ICML 2023).

``average_confidence``, ``doc`` and ``atc`` return accuracy estimates in [0, 1]; ``nuclear_norm`` (like
``mano``) returns a score that correlates with accuracy.
"""

from __future__ import annotations

import math

import torch

from cliplab._validation import ArrayLike, as_labels
from cliplab.ood.scores import as_logits


def _val(val_logits: ArrayLike, val_labels: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    z = as_logits(val_logits, "val_logits", dtype=torch.float64)
    y = as_labels(val_labels, "val_labels", n=z.shape[0], num_classes=z.shape[1])
    return z, y


def _max_prob(z: torch.Tensor) -> torch.Tensor:
    z = z.double()
    return torch.exp(z.max(1).values - torch.logsumexp(z, 1))


def average_confidence(logits: ArrayLike) -> float:
    """Mean over samples of ``max_k softmax(z)_k`` (an accuracy estimate)."""
    return float(_max_prob(as_logits(logits, dtype=torch.float64)).mean())


def doc(val_logits: ArrayLike, val_labels: ArrayLike, logits: ArrayLike) -> float:
    """Difference of Confidences: ``acc_val − (conf_val − conf_target)``, conf = average max softmax."""
    zv, yv = _val(val_logits, val_labels)
    z = as_logits(logits, dtype=torch.float64)
    if z.shape[1] != zv.shape[1]:
        raise ValueError(f"logits have {z.shape[1]} classes but val_logits have {zv.shape[1]}")
    acc = float((zv.argmax(1) == yv).double().mean())
    return acc - (float(_max_prob(zv).mean()) - float(_max_prob(z).mean()))


def _atc_score(z: torch.Tensor, score: str) -> torch.Tensor:
    if score == "maxconf":
        return _max_prob(z)
    if score == "entropy":  # negative entropy Σ p log p (higher = more confident)
        logp = torch.log_softmax(z.double(), 1)
        return (logp.exp() * logp).sum(1)
    raise ValueError(f"score must be 'maxconf' or 'entropy', got {score!r}")


def atc_threshold(val_logits: ArrayLike, val_labels: ArrayLike, score: str = "maxconf") -> float:
    """The ATC threshold ``t``: the k-th largest validation score, ``k = acc_val·n_val`` (the number correct).

    Then exactly ``k`` validation samples (barring ties) have ``score ≥ t``, i.e. the share above the
    threshold equals the validation accuracy (Garg et al.'s ``find_ATC_threshold`` minimises
    |#errors above − #correct below|, which is the same condition). ``k = 0`` gives ``+inf``.
    """
    zv, yv = _val(val_logits, val_labels)
    s = _atc_score(zv, score)
    k = int((zv.argmax(1) == yv).sum())  # = acc_val · n_val
    if k == 0:
        return math.inf
    return float(torch.sort(s, descending=True).values[k - 1])


def atc(val_logits: ArrayLike, val_labels: ArrayLike, logits: ArrayLike, score: str = "maxconf") -> float:
    """Average Thresholded Confidence: share of target samples with ``score ≥ t`` (``atc_threshold``).

    ``score="maxconf"`` (max softmax) or ``"entropy"`` (negative entropy, the paper's ATC-NE).
    """
    t = atc_threshold(val_logits, val_labels, score)
    z = as_logits(logits, dtype=torch.float64)
    if z.shape[1] != as_logits(val_logits, "val_logits", dtype=torch.float64).shape[1]:
        raise ValueError("logits and val_logits have a different number of classes")
    return float((_atc_score(z, score) >= t).double().mean())


def nuclear_norm(logits: ArrayLike) -> float:
    """``‖P‖_* / sqrt(min(N, K)·N)`` with ``P = softmax(z)`` ``[N, K]`` (Deng et al. 2023), in [0, 1].

    The singular values come from the eigenvalues of the smaller Gram matrix (``PᵀP`` or ``PPᵀ``),
    computed in float64.
    """
    z = as_logits(logits, dtype=torch.float64)
    P = torch.softmax(z, 1)
    n, k = P.shape
    gram = P.T @ P if n >= k else P @ P.T
    singular = torch.linalg.eigvalsh(gram).clamp_min(0.0).sqrt()
    return float(singular.sum() / math.sqrt(min(n, k) * n))
