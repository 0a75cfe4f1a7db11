"""Post-hoc OOD scores from logits or features. Higher score = more in-distribution.

* ``msp``: maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).
* ``max_logit``: maximum logit (Hendrycks et al., ICML 2022, "Scaling OOD detection").
* ``energy``: ``T·logsumexp(z/T)``, the negative free energy (Liu et al., NeurIPS 2020).
* ``mcm``: maximum concept matching, ``max softmax(cos/T)`` with raw cosines (Ming et al., NeurIPS 2022).
* ``knn_score`` / ``KNN``: minus the distance to the k-th nearest normalised training feature
  (Sun et al., ICML 2022).
"""

from __future__ import annotations

from typing import Any

import torch

from cliplab._validation import ArrayLike, Interval, as_features, as_tensor, l2_normalize
from cliplab.ood.base import OODScorer

_CHUNK = 8192


def as_logits(logits: ArrayLike, name: str = "logits", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A finite ``[N, K]`` matrix (float32 by default) with ``N ≥ 1`` and ``K ≥ 2`` classes."""
    z = as_tensor(logits, name, dtype=dtype, ndim=2)
    if z.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 classes (columns), got shape {tuple(z.shape)}")
    return z


def _check_temperature(T: float) -> float:
    T = float(T)
    if not (T > 0 and T < float("inf")):
        raise ValueError(f"temperature T must be a positive finite number, got {T}")
    return T


def msp(logits: ArrayLike) -> torch.Tensor:
    """Maximum softmax probability ``max_k softmax(z)_k`` → ``[N]`` (Hendrycks & Gimpel 2017)."""
    z = as_logits(logits)
    # max_k softmax = exp(max z − logsumexp z): no [N, K] probability matrix needed.
    return torch.exp(z.max(1).values - torch.logsumexp(z, 1))


def max_logit(logits: ArrayLike) -> torch.Tensor:
    """Maximum logit ``max_k z_k`` → ``[N]`` (Hendrycks et al. 2022)."""
    return as_logits(logits).max(1).values


def energy(logits: ArrayLike, T: float = 1.0) -> torch.Tensor:
    """Negative free energy ``T·logsumexp(z/T)`` → ``[N]`` (Liu et al. 2020)."""
    T = _check_temperature(T)
    z = as_logits(logits)
    return T * torch.logsumexp(z / T, 1)


def mcm(image_features: ArrayLike, text_weights: ArrayLike, T: float = 1.0) -> torch.Tensor:
    """Maximum Concept Matching (Ming et al. 2022): ``max_k softmax(cos(f, w_k)/T)`` → ``[N]``.

    Both inputs are L2-normalised here; the cosines are *not* multiplied by the model's logit scale
    (the paper uses raw cosines and ``T = 1``).
    """
    T = _check_temperature(T)
    f = as_features(image_features, "image_features")
    w = as_features(text_weights, "text_weights", dim=f.shape[1])
    if w.shape[0] < 2:
        raise ValueError(f"text_weights must hold at least 2 classes, got {w.shape[0]}")
    w = l2_normalize(w)
    out = torch.empty(f.shape[0])
    for s in range(0, f.shape[0], _CHUNK):
        c = l2_normalize(f[s : s + _CHUNK]) @ w.T / T
        out[s : s + _CHUNK] = torch.exp(c.max(1).values - torch.logsumexp(c, 1))
    return out


def knn_score(features: ArrayLike, train_features: ArrayLike, k: int = 50, *, chunk_size: int = 2048) -> torch.Tensor:
    """Deep nearest neighbours (Sun et al. 2022): ``−‖f̂ − t̂_(k)‖₂`` → ``[N]``.

    ``f̂`` and the training features ``t̂`` are L2-normalised; ``t̂_(k)`` is the k-th nearest training
    feature. Distances come from ``‖a − b‖² = 2 − 2·a·b``, computed ``chunk_size`` queries at a time
    (memory O(chunk_size × M)). Cost O(N·M·D): keep the training bank to a subsample for large N.
    """
    return KNN(k=k, chunk_size=chunk_size).fit(train_features).score(features)


class KNN(OODScorer):
    """k-NN OOD detector: ``fit(train_features) -> self``, ``score(features) -> [N]`` (see ``knn_score``).

    ``labels`` and ``text_weights`` (the common scorer interface) are accepted and not used.
    """

    _constraints = {
        "k": Interval(1, None, closed="left", integer=True),
        "chunk_size": Interval(1, None, closed="left", integer=True),
    }

    def __init__(self, k: int = 50, *, chunk_size: int = 2048) -> None:
        self.k = k
        self.chunk_size = chunk_size
        self._validate_params()

    def fit(
        self, train_features: ArrayLike | None = None, labels: ArrayLike | None = None, text_weights: Any = None
    ) -> KNN:
        self._validate_params()
        self._check_inputs(train_features=train_features)
        bank = as_features(self._required(train_features, "train_features"), "train_features")
        if bank.shape[0] < int(self.k):
            raise ValueError(f"k={self.k} but only {bank.shape[0]} training features")
        self.bank_ = l2_normalize(bank).contiguous()
        return self

    def score(self, features: ArrayLike) -> torch.Tensor:
        if not hasattr(self, "bank_"):
            raise RuntimeError("KNN is not fitted: call fit(train_features) first")
        f = l2_normalize(as_features(features, dim=self.bank_.shape[1]))
        out = torch.empty(f.shape[0])
        k, chunk = int(self.k), int(self.chunk_size)
        for s in range(0, f.shape[0], chunk):
            sim = f[s : s + chunk] @ self.bank_.T
            kth = sim.topk(k, dim=1, sorted=False).values.min(1).values  # k-th largest cosine
            out[s : s + chunk] = -torch.sqrt((2.0 - 2.0 * kth).clamp_min(0.0))
        return out
