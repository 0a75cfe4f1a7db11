"""Gaussian discriminant analysis on CLIP features (Wang et al., ICLR 2024; official code: mrflogs/ICLR24)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from cliplab._validation import ArrayLike, as_features, l2_normalize
from cliplab.adapt.base import NON_NEGATIVE, Adapter, Options, class_means, concat_views

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
    ``P = 0`` and GDA reduces to zero-shot: ``degenerate_`` is then True and ``fit`` warns, since every
    ``alpha`` scores the same and a search would silently pick its first value (the few-shot protocol
    avoids this by passing the augmented passes, as the reference does).
    Every class needs at least one support sample.

    ``covariance="class_mean"`` replaces the KS estimator by ``P = (mean_k Σ̂_k)⁺``, the mean of the per-class
    covariances (each with denominator ``N_k − 1``), which is what the official ``main_base2new.py`` fits on the
    base classes (the few-shot protocol's ``base_to_new`` uses it there).

    Base-to-new: ``new_class_logits(features, new_text_weights)`` synthesises a classifier for classes
    without support images as the official ``main_base2new.py`` does (see there).

    Deviation: the official few-shot script searches ``alpha`` on ImageNet's *test* set (it passes the
    test features as validation); the few-shot protocol searches it on a validation split only.
    """

    augmentation = "cache"
    _post_fit_params = frozenset({"alpha"})
    _constraints = {"alpha": NON_NEGATIVE, "covariance": Options("shrunk", "class_mean")}

    def __init__(self, alpha: float = 1.0, covariance: str = "shrunk") -> None:
        self.alpha = alpha
        self.covariance = covariance

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
        if self.covariance == "class_mean" and trace > 0:
            # centred in float64 (as torch.cov): float32 residue would be inverted by pinv when the pooled
            # covariance is rank-deficient (few shots, no views), giving logits of ~1e12
            X64 = X.double()
            per_class = torch.zeros(d, d, dtype=torch.float64, device=X.device)
            for k in range(C):
                rows = X64[y == k]
                mus64[k] = rows.mean(dim=0)
                rows = rows - mus64[k]
                if rows.shape[0] > 1:
                    per_class += rows.T @ rows / (rows.shape[0] - 1)
            Pmu = mus64 @ torch.linalg.pinv(per_class / C, hermitian=True)  # rows: P μ_k
        elif trace > 0:
            A = scatter + trace * torch.eye(d, dtype=torch.float64, device=X.device)
            L = torch.linalg.cholesky(A)
            Pmu = d * torch.cholesky_solve(mus64.T, L).T  # rows: P μ_k  (P symmetric)
        else:
            Pmu = torch.zeros_like(mus64)
            warnings.warn(
                "GDA: the class-centred covariance is zero (one support feature per class and no augmented "
                "views), so GDA reduces to zero-shot and alpha has no effect; pass augmented views",
                stacklevel=3,
            )
        self.degenerate_ = trace <= 0
        self._support = X
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

    @torch.no_grad()
    def new_class_logits(
        self, features: ArrayLike, text_weights: ArrayLike, *, k: int = 64, text_copies: int = 16
    ) -> torch.Tensor:
        """Logits over classes with no support images (base-to-new), as the official ``main_base2new.py``.

        For each new class with text weight ``t`` (L2-normalised): ``S_t`` = the ``k`` support rows (all
        views) most similar to ``t``; ``μ_t`` = mean of ``S_t`` together with ``text_copies`` copies of ``t``;
        ``Σ_t = (S_t − t)ᵀ(S_t − t) / (k − 1)`` (centred on ``t``); ``P = mean_t D·((k−1)·Σ_t + tr(Σ_t)·I)⁺``
        (the KS estimator, averaged over the new classes); ``w_t = P μ_t``, ``b_t = log(1/C') − ½ μ_tᵀ P μ_t``;
        ``s = logit_scale · f·Tᵀ + alpha · (f·wᵀ + b)`` with the ``alpha`` of the base classes.
        ``k`` is capped at the number of support rows.
        """
        self._require_fitted()
        f = self._check_query(features)
        T = as_features(text_weights, "text_weights", dim=self.n_features_in_)
        T = l2_normalize(T)
        S = self._support.double()
        d = S.shape[1]
        k = max(2, min(int(k), S.shape[0]))
        mus, precision = [], torch.zeros(d, d, dtype=torch.float64)
        eye = torch.eye(d, dtype=torch.float64)
        for t in T.double():
            top = S[torch.topk(S @ t, k).indices]
            mus.append(torch.cat([top, t.expand(int(text_copies), d)]).mean(dim=0))
            centred = top - t
            cov = centred.T @ centred / (k - 1)
            A = (k - 1) * cov + cov.trace() * eye  # positive definite when tr > 0: Cholesky, else pinv
            L, info = torch.linalg.cholesky_ex(A)
            precision += d * (torch.cholesky_inverse(L) if int(info) == 0 else torch.linalg.pinv(A, hermitian=True))
        precision /= T.shape[0]
        mu = torch.stack(mus)
        Pmu = mu @ precision
        bias = math.log(1.0 / T.shape[0]) - 0.5 * (Pmu * mu).sum(dim=1)
        gda = (f.double() @ Pmu.T + bias).float()
        return self.logit_scale_ * f @ T.T + float(self.alpha) * gda
