"""Mahalanobis OOD score with class means and a shared covariance (Lee et al., NeurIPS 2018)."""

from __future__ import annotations

from typing import Any

import torch

from cliplab._validation import ArrayLike, Interval, as_features, as_labels
from cliplab.ood.base import OODScorer

_CHUNK = 8192


class Mahalanobis(OODScorer):
    """``score(x) = −min_c (x − μ_c)ᵀ Σ⁺ (x − μ_c)`` → ``[N]`` (higher = more in-distribution).

    ``μ_c`` are the class means of the training features and ``Σ = (1/N) Σ_c Σ_{i∈c} (x_i − μ_c)(x_i − μ_c)ᵀ``
    the shared covariance of the class-centred features (``EmpiricalCovariance`` as in the paper's and
    ViM's code); ``Σ⁺`` is its pseudo-inverse (eigenvalues ≤ ``rcond·λ_max`` are dropped, like
    ``scipy.linalg.pinvh``). As in Lee et al. the score is the squared distance (no square root), to the
    closest class; only the classes present in ``labels`` are used.

    Internally the features are whitened once (``x ↦ x·V·Λ^{-1/2}``), so scoring is one matrix product
    with the whitened means per chunk.
    """

    requires = frozenset({"train_features", "labels"})
    _constraints = {
        "rcond": Interval(0, None, closed="left", allow_none=True),
        "chunk_size": Interval(1, None, closed="left", integer=True),
    }

    def __init__(self, *, rcond: float | None = None, chunk_size: int = _CHUNK) -> None:
        self.rcond = rcond
        self.chunk_size = chunk_size
        self._validate_params()

    def fit(
        self, train_features: ArrayLike | None = None, labels: ArrayLike | None = None, text_weights: Any = None
    ) -> Mahalanobis:
        """Fit on labelled ``train_features`` ``[N, D]`` (``text_weights`` is accepted and not used)."""
        self._validate_params()
        self._check_inputs(train_features=train_features, labels=labels)
        chunk_size = int(self.chunk_size)
        X = as_features(self._required(train_features, "train_features"), "features")
        y = as_labels(self._required(labels, "labels"), "labels", n=X.shape[0])
        classes = torch.unique(y)
        if classes.numel() < 2:
            raise ValueError(f"Mahalanobis needs features from at least 2 classes, got {classes.numel()}")
        n, d = X.shape
        inverse = torch.searchsorted(classes, y)
        counts = torch.bincount(inverse, minlength=classes.numel()).double()
        sums = torch.zeros(classes.numel(), d, dtype=torch.float64)
        for s in range(0, n, chunk_size):
            sums.index_add_(0, inverse[s : s + chunk_size], X[s : s + chunk_size].double())
        means = sums / counts[:, None]
        cov = torch.zeros(d, d, dtype=torch.float64)
        for s in range(0, n, chunk_size):
            c = X[s : s + chunk_size].double() - means[inverse[s : s + chunk_size]]
            cov.addmm_(c.T, c)
        cov /= n
        evals, evecs = torch.linalg.eigh(cov)
        rcond = self.rcond if self.rcond is not None else d * torch.finfo(torch.float64).eps
        keep = evals > rcond * evals.abs().max()
        if not bool(keep.any()):
            raise ValueError("the class-centred features have zero covariance")
        whiten = evecs[:, keep] / evals[keep].sqrt()  # Σ⁺ = whiten·whitenᵀ
        self.classes_, self.means_, self.covariance_ = classes, means.float(), cov
        self.precision_ = whiten @ whiten.T
        # Whitened means, shifted by their centroid so float32 products stay well conditioned.
        mu = means @ whiten
        self._shift = mu.mean(0)
        self._whiten = whiten.float()
        self._mu = (mu - self._shift).float()
        self._mu_sq = (self._mu.double() ** 2).sum(1).float()
        return self

    def distances(self, features: ArrayLike) -> torch.Tensor:
        """Squared Mahalanobis distances ``[N, C]`` to every class mean (columns follow ``classes_``)."""
        if not hasattr(self, "_mu"):
            raise RuntimeError("Mahalanobis is not fitted: call fit(features, labels) first")
        X = as_features(features, dim=self._whiten.shape[0])
        out = torch.empty(X.shape[0], self._mu.shape[0])
        chunk = int(self.chunk_size)
        for s in range(0, X.shape[0], chunk):
            z = X[s : s + chunk] @ self._whiten - self._shift.float()
            d2 = (z * z).sum(1, keepdim=True) + self._mu_sq - 2.0 * (z @ self._mu.T)
            out[s : s + chunk] = d2.clamp_min(0.0)
        return out

    def score(self, features: ArrayLike) -> torch.Tensor:
        if not hasattr(self, "_mu"):
            raise RuntimeError("Mahalanobis is not fitted: call fit(features, labels) first")
        X = as_features(features, dim=self._whiten.shape[0])
        out = torch.empty(X.shape[0])
        chunk = int(self.chunk_size)
        for s in range(0, X.shape[0], chunk):
            out[s : s + chunk] = -self.distances(X[s : s + chunk]).min(1).values
        return out
