"""CLIP-Adapter (Gao et al., IJCV 2024 / arXiv 2021; official code: gaopengcuhk/CLIP-Adapter)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cliplab._validation import ArrayLike, as_features, l2_normalize
from cliplab.adapt.base import (
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    SIZE,
    UNIT,
    Adapter,
    cosine_adamw,
    epoch_view_batches,
    generator,
    n_batches,
)

__all__ = ["CLIPAdapter"]


class CLIPAdapter(Adapter):
    """A residual bottleneck MLP on the image features, trained with the frozen text classifier.

    ``f' = ratio · A(f) + (1 − ratio) · f`` with ``A(f) = ReLU(W₂ · ReLU(W₁ f))`` (no biases;
    ``W₁`` ``[D/reduction, D]``, ``W₂`` ``[D, D/reduction]``), logits ``logit_scale · norm(f')·Wᵀ``
    ("CLIP-Adapter: Better Vision-Language Models with Feature Adapters", Gao et al.; the visual
    adapter with ratio 0.2 and reduction 4 as in the official code).

    Training: cross-entropy, AdamW (weight decay ``weight_decay``, eps 1e-4) with a cosine schedule,
    ``epochs`` passes of mini-batches of ``batch_size`` (epoch ``e`` on view ``e mod V`` for ``[V, N, D]``
    input: a fresh augmented pass per epoch while the pool lasts), weights initialised like ``nn.Linear``
    from ``seed``. Deviation: the official code trains 200 epochs of SGD (batch 32) on freshly augmented
    images; on cached features AdamW reaches the same regime in far fewer steps.

    The adapter transforms image features, so it applies to classes it never saw:
    ``new_class_logits(features, new_text_weights)`` = ``logit_scale · norm(f')·Tᵀ`` (base-to-new).
    """

    augmentation = "epochs"

    _constraints = {
        "ratio": UNIT,
        "reduction": SIZE,
        "epochs": COUNT,
        "lr": POSITIVE,
        "batch_size": SIZE,
        "weight_decay": NON_NEGATIVE,
        "seed": SEED,
    }

    def __init__(
        self,
        ratio: float = 0.2,
        reduction: int = 4,
        epochs: int = 20,
        lr: float = 1e-3,
        batch_size: int = 32,
        weight_decay: float = 0.01,
        seed: int = 0,
    ) -> None:
        self.ratio = ratio
        self.reduction = reduction
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.seed = seed

    @classmethod
    def default_grid(cls) -> dict[str, list[Any]]:
        return {"ratio": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        ratio, reduction = float(self.ratio), int(self.reduction)
        epochs, batch_size = int(self.epochs), int(self.batch_size)
        d = X.shape[2]
        h = max(1, d // reduction)
        gen = generator(self.seed)
        # nn.Linear's default initialisation, U(±1/√fan_in), drawn from our generator.
        W1 = ((torch.rand(h, d, generator=gen) * 2 - 1) / d**0.5).requires_grad_(True)
        W2 = ((torch.rand(d, h, generator=gen) * 2 - 1) / h**0.5).requires_grad_(True)
        steps = epochs * n_batches(X.shape[1], batch_size)
        opt, sched = cosine_adamw([W1, W2], self.lr, steps, weight_decay=self.weight_decay)
        self.W1_, self.W2_ = W1, W2
        for rows, views in epoch_view_batches(X, epochs, batch_size, gen):
            loss = F.cross_entropy(self._forward(X[views, rows], ratio), y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        self.W1_, self.W2_ = W1.detach(), W2.detach()

    def _forward(self, f: torch.Tensor, ratio: float) -> torch.Tensor:
        a = F.relu(F.relu(f @ self.W1_.T) @ self.W2_.T)
        return self._zero_shot(l2_normalize(ratio * a + (1.0 - ratio) * f))

    @torch.no_grad()
    def _logits(self, f: torch.Tensor) -> torch.Tensor:
        return self._forward(f, float(self.ratio))

    @torch.no_grad()
    def new_class_logits(self, features: ArrayLike, text_weights: ArrayLike) -> torch.Tensor:
        """``logit_scale · norm(ratio·A(f) + (1 − ratio)·f)·Tᵀ`` over other classes' text weights ``T``."""
        f = self._check_query(features)
        T = as_features(text_weights, "text_weights", dim=self.n_features_in_)
        ratio = float(self.ratio)
        a = F.relu(F.relu(f @ self.W1_.T) @ self.W2_.T)
        return self.logit_scale_ * l2_normalize(ratio * a + (1.0 - ratio) * f) @ T.T
