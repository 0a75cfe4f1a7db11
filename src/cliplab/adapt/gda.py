"""Gaussian discriminant analysis on CLIP features (Wang et al., ICLR 2024; official code: mrflogs/ICLR24)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from cliplab._validation import ArrayLike
from cliplab.adapt.base import NON_NEGATIVE, Adapter, class_means, concat_views

__all__ = ["GDA"]


class GDA(Adapter):
    """Training-free GDA: a linear classifier from class means and a shared covariance, added to CLIP.

    From "A Hard-to-Beat Baseline for Training-free CLIP-based Adaptation" (Wang et al., ICLR 2024)::

        μ_k = mean of the class-k support features
        Σ̂  = covariance (denominator N − 1) of the class-centred features
        P   = D · ((N − 1)·Σ̂ + tr(Σ̂)·I)⁺                  (the paper's shrinkage "KS" estimator)
        w_k = P μ_k,   b_k = log(1/C) − ½ μ_kᵀ P μ_k
        s   = s0 + alpha · (f·Wᵀ + b),   s0 = logit_scale · f·Wₜₑₓₜᵀ

    ``[V, N, D]`` support features are concatenated into ``V·N`` rows with repeated labels (the official
    code concatenates its augmented passes), so ``N`` above counts rows. ``alpha`` only affects
    ``logits``; ``default_grid`` is the official ``{1e-4, …, 100}``. The matrix in ``⁺`` is positive
    definite whenever ``tr(Σ̂) > 0``, so it is inverted by a float64 Cholesky solve (identical to the
    pseudo-inverse there); when all centred features are zero (one sample per class, or identical
    views of it: a scatter below 1e-9 of the features' total energy counts as rounding residue)
    ``P = 0`` and GDA reduces to zero-shot.
    Every class needs at least one support sample.
    """

    _post_fit_params = frozenset({"alpha"})
    _constraints = {"alpha": NON_NEGATIVE}

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    @classmethod
    def default_grid(cls) -> dict[str, list[Any]]:
        return {"alpha": [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]}

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        X, y = concat_views(X, y)
        C, (n, d) = self.n_classes_, X.shape
        mus, counts = class_means(X, y, C)
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"GDA needs support samples of every class; none for class(es) {missing[:10]}")
        centred = X - mus[y]
        centred -= centred.mean(dim=0)
        scatter = (centred.T @ centred).double()  # (N − 1)·Σ̂
        trace = float(scatter.trace()) / (n - 1) if n > 1 else 0.0
        if trace * (n - 1) <= 1e-9 * float(X.double().pow(2).sum()):
            trace = 0.0  # only rounding residue (e.g. identical views of one image): no covariance
        mus64 = mus.double()
        if trace > 0:
            A = scatter + trace * torch.eye(d, dtype=torch.float64, device=X.device)
            L = torch.linalg.cholesky(A)
            Pmu = d * torch.cholesky_solve(mus64.T, L).T  # rows: P μ_k  (P symmetric)
        else:
            Pmu = torch.zeros_like(mus64)
        self.means_ = mus
        self.weights_ = Pmu.float()
        self.bias_ = (math.log(1.0 / C) - 0.5 * (Pmu * mus64).sum(dim=1)).float()
        self.covariance_ = (scatter / max(n - 1, 1)).float()

    def _logits(self, f: torch.Tensor) -> torch.Tensor:
        alpha = float(self.alpha)
        # One product with the combined weights: s0 + alpha·(f·Wᵀ + b) = f·(s·Wₜₑₓₜ + alpha·W)ᵀ + alpha·b.
        return torch.addmm(alpha * self.bias_, f, (self._s0_weights + alpha * self.weights_).T)

    @torch.no_grad()
    def _score_grid(
        self, features: ArrayLike, settings: Iterable[Mapping[str, Any]], **extra: Any
    ) -> Iterator[tuple[int, torch.Tensor]]:
        f = self._check_query(features)
        s0 = self._zero_shot(f)
        gda = torch.addmm(self.bias_, f, self.weights_.T)
        for i, s in enumerate(settings):
            yield i, s0 + float(s.get("alpha", self.alpha)) * gda
