"""AMU-Tuning (Tang et al., CVPR 2024; official code: TJU-sjyj/AMU-Tuning)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cliplab._validation import ArrayLike, as_features, as_tensor, l2_normalize
from cliplab.adapt.base import (
    COUNT,
    FINITE,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    SIZE,
    UNIT,
    Adapter,
    Options,
    class_means,
    cosine_adamw,
    epoch_view_batches,
    generator,
    mean_views,
    n_batches,
)

__all__ = ["AMU", "kurtosis_factor"]


def kurtosis_factor(zero_shot_logits: torch.Tensor, rho: float) -> torch.Tensor:
    """``φ = (250 / κ)^ρ`` per sample ``[M, 1]``; ``κ`` = kurtosis of ``softmax(s0)`` over the classes.

    ``κ = mean_k ((p_k − mean p) / std p)⁴`` with the unbiased standard deviation, as in the official
    ``uncertainty(type="moment")``. A confident zero-shot prediction (peaked softmax, large κ) gives a
    small φ, i.e. less weight to the auxiliary branch.
    """
    p = torch.softmax(zero_shot_logits, dim=1)
    z = (p - p.mean(dim=1, keepdim=True)) / p.std(dim=1, keepdim=True)
    kappa = z.pow(4).mean(dim=1, keepdim=True)
    return (250.0 / kappa).pow(rho)


def _zscore(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample standardisation over classes (unbiased std), the official ``logit_normalize``."""
    return (logits - logits.mean(dim=1, keepdim=True)) / logits.std(dim=1, keepdim=True)


class AMU(Adapter):
    """AMU-Tuning: a linear head on auxiliary features, fused with zero-shot CLIP.

    From "AMU-Tuning: Effective Logit Bias for CLIP-based Few-shot Learning" (Tang et al., CVPR 2024)::

        s_bias = zscore(norm(a) · Hᵀ)                           (a: auxiliary features, H: [C, D₂])
        s      = s0 + alpha · φ · s_bias,   s0 = logit_scale · f·Wᵀ
        loss   = lambda_ · CE(s) + (1 − lambda_) · CE(s_bias)    (multi-branch training)

    ``fit(features, labels, *, text_weights, logit_scale, aux_features)`` and
    ``logits(features, aux_features=...)``: ``aux_features`` ``[N, D₂]`` (or ``[V, N, D₂]``) come from a
    second encoder (the paper: MoCo v3 RN50, 2048-d). ``H`` starts at the class means of the
    L2-normalised auxiliary support features; the z-score is per sample over the classes.
    ``fusion="kurtosis"`` uses the uncertainty-based factor ``φ = (250/κ)^rho`` (``kurtosis_factor``);
    ``fusion="none"`` (the default) uses ``φ = 1``, which is what the released scripts run (their
    ``uncent_type`` defaults to ``"none"``). ``alpha=0.5``, ``lambda_=0.35``: the released ``run.sh``.

    Training: AdamW (weight decay 0.01, eps 1e-4, lr 1e-3) with a cosine schedule, as released. With
    ``[V, N, ·]`` inputs, ``features`` and ``aux_features`` must be the *same* ``V`` augmented images (view
    ``v`` of both encoders from the same crop, as the reference feeds one augmented batch to both
    branches); epoch ``e`` trains on view ``e mod V``. A clean ``[N, D₂]`` ``aux_features`` with augmented
    ``features`` (or different view counts) is refused.
    Deviations: the official code trains 50 epochs with batch size 8 on freshly augmented images and
    reports the epoch with the best *test* accuracy; we train ``epochs`` passes of ``batch_size`` and keep
    the last head. Its head is initialised with class sums divided by the average class size (= class
    means for balanced shots); ours with the class means of the view average.
    """

    augmentation = "epochs"
    requires = frozenset({"aux_features"})
    _constraints = {
        "lambda_": UNIT,
        "alpha": FINITE,
        "fusion": Options("none", "kurtosis"),
        "rho": FINITE,
        "epochs": COUNT,
        "lr": POSITIVE,
        "batch_size": SIZE,
        "weight_decay": NON_NEGATIVE,
        "seed": SEED,
    }

    def __init__(
        self,
        lambda_: float = 0.35,
        alpha: float = 0.5,
        fusion: str = "none",
        rho: float = 0.4,
        epochs: int = 20,
        lr: float = 1e-3,
        batch_size: int = 32,
        weight_decay: float = 0.01,
        seed: int = 0,
    ) -> None:
        self.lambda_ = lambda_
        self.alpha = alpha
        self.fusion = fusion
        self.rho = rho
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.seed = seed

    @classmethod
    def default_grid(cls) -> dict[str, list[Any]]:
        return {"alpha": [0.25, 0.5, 1.0, 2.0]}

    def _factor(self, s0: torch.Tensor) -> torch.Tensor | float:
        if self.fusion == "none":
            return 1.0
        if self.fusion == "kurtosis":
            return kurtosis_factor(s0, float(self.rho))
        raise ValueError(f"fusion must be 'none' or 'kurtosis', got {self.fusion!r}")

    def _fit(self, X: torch.Tensor, y: torch.Tensor, *, aux_features: ArrayLike | None = None) -> None:
        if aux_features is None:
            raise TypeError("AMU.fit needs aux_features=[N, D2] (features of a second image encoder)")
        A = as_tensor(aux_features, "aux_features")
        if A.ndim not in (2, 3):
            raise ValueError(f"aux_features must have shape [N, D2] or [V, N, D2], got {tuple(A.shape)}")
        A = A if A.ndim == 3 else A.unsqueeze(0)
        if A.shape[1] != X.shape[1]:
            raise ValueError(f"aux_features has {A.shape[1]} samples but features has {X.shape[1]}")
        if A.shape[0] != X.shape[0]:
            raise ValueError(
                f"aux_features has {A.shape[0]} view(s) but features has {X.shape[0]}: both branches must see the "
                "same augmented images (embed the auxiliary encoder on the same augmented passes)"
            )
        A = l2_normalize(A)
        lam, alpha = float(self.lambda_), float(self.alpha)
        epochs, batch_size = int(self.epochs), int(self.batch_size)
        head = class_means(mean_views(A), y, self.n_classes_)[0].requires_grad_(True)
        steps = epochs * n_batches(X.shape[1], batch_size)
        opt, sched = cosine_adamw([head], self.lr, steps, weight_decay=self.weight_decay)
        for rows, views in epoch_view_batches(X, epochs, batch_size, generator(self.seed)):
            f, a = X[views, rows], A[views, rows]  # one augmented image through both encoders
            s0 = self._zero_shot(f)
            s_bias = _zscore(a @ head.T)
            fused = s0 + alpha * self._factor(s0) * s_bias
            loss = lam * F.cross_entropy(fused, y[rows]) + (1 - lam) * F.cross_entropy(s_bias, y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        self.head_ = head.detach()
        self.n_aux_features_in_ = A.shape[2]

    def bias_logits(self, aux_features: ArrayLike) -> torch.Tensor:
        """The auxiliary branch alone, ``zscore(norm(a)·Hᵀ)`` ``[M, C]``."""
        self._require_fitted()
        a = as_features(aux_features, "aux_features", dim=self.n_aux_features_in_)
        return _zscore(l2_normalize(a) @ self.head_.T)

    @torch.no_grad()
    def _logits(self, f: torch.Tensor, *, aux_features: ArrayLike | None = None) -> torch.Tensor:
        if aux_features is None:
            raise TypeError("AMU.logits needs aux_features=[M, D2] for the queries")
        s_bias = self.bias_logits(aux_features)
        if s_bias.shape[0] != f.shape[0]:
            raise ValueError(f"aux_features has {s_bias.shape[0]} rows but features has {f.shape[0]}")
        s0 = self._zero_shot(f)
        return s0 + float(self.alpha) * self._factor(s0) * s_bias
