"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022; official code: gaopengcuhk/Tip-Adapter)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from cliplab._validation import ArrayLike
from cliplab.adapt.base import (
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    SIZE,
    Adapter,
    Interval,
    check_positive,
    cosine_adamw,
    epoch_view_batches,
    generator,
    mean_views,
    n_batches,
)

__all__ = ["TipAdapter", "TipAdapterF"]

# Elements of one affinity block (queries × keys) held at a time: 2^24 floats = 64 MiB.
_BLOCK = 1 << 24


def search_grid(top: float, steps: int) -> list[float]:
    """The official search grid ``[0.1 + i·(top − 0.1)/steps for i < steps]`` (``top`` excluded)."""
    return [round(0.1 + i * (top - 0.1) / steps, 6) for i in range(steps)]


class TipAdapter(Adapter):
    """Training-free Tip-Adapter: a key-value cache of the support set added to zero-shot CLIP.

    ``s = s0 + alpha · exp(−beta·(1 − f·Fᵀ)) · L`` with ``s0 = logit_scale · f·Wᵀ``, keys ``F`` the
    L2-normalised support features ``[N, D]`` and values ``L`` their one-hot labels ``[N, C]``
    (Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification", ECCV 2022).

    With ``[V, N, D]`` support features the views are averaged and renormalised into one key per image
    (the official code averages 10 augmented passes; it averages the unnormalised features, we average
    the normalised ones we are given). ``alpha`` (residual ratio) and ``beta`` (sharpness) only affect
    ``logits``; ``default_grid`` is the official ImageNet search range (beta in [0.1, 7), alpha in
    [0.1, 3), 200 × 20 steps); the per-dataset ranges of the official configs are in
    ``cliplab.adapt.tip_settings``, which the few-shot protocol selects by the dataset's name.

    Queries are scored in blocks so the ``M × N`` affinity is never held whole; the one-hot product is
    a per-class sum of the (class-sorted) keys' columns.
    """

    augmentation = "cache"
    _post_fit_params = frozenset({"alpha", "beta"})
    _constraints = {"alpha": NON_NEGATIVE, "beta": NON_NEGATIVE}

    def __init__(self, alpha: float = 1.0, beta: float = 1.0) -> None:
        self.alpha = alpha
        self.beta = beta

    @classmethod
    def default_grid(cls) -> dict[str, list[Any]]:
        return {"beta": search_grid(7.0, 200), "alpha": search_grid(3.0, 20)}

    # ----------------------------------------------------------------- fit
    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self._set_cache(mean_views(X), y)

    def _set_cache(self, keys: torch.Tensor, y: torch.Tensor) -> None:
        order = torch.argsort(y, stable=True)
        self.keys_ = keys[order].contiguous()
        self.key_labels_ = y[order]
        counts = torch.bincount(y, minlength=self.n_classes_)
        # All classes with the same number of keys: the one-hot product is a reshape and a sum.
        self._shots = int(counts[0]) if bool((counts == counts[0]).all()) else None

    # ----------------------------------------------------------------- scoring
    def _class_sum(self, E: torch.Tensor) -> torch.Tensor:
        """``E · L``: sum the columns of ``E`` ``[M, N]`` per class → ``[M, C]``."""
        if self._shots is not None:
            return E.view(E.shape[0], self.n_classes_, self._shots).sum(dim=2)
        out = torch.zeros(E.shape[0], self.n_classes_, dtype=E.dtype, device=E.device)
        return out.index_add(1, self.key_labels_, E)

    def _affinity_blocks(self, f: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
        rows = max(1, _BLOCK // max(1, self.keys_.shape[0]))
        keys_t = self.keys_.T
        for start in range(0, f.shape[0], rows):
            block = slice(start, start + rows)
            yield block, f[block] @ keys_t

    def _cache_from_affinity(self, A: torch.Tensor, beta: float, *, inplace: bool = False) -> torch.Tensor:
        """``exp(−beta·(1 − A)) · L``."""
        E = A.sub_(1.0).mul_(beta).exp_() if inplace else A.sub(1.0).mul_(beta).exp_()
        return self._class_sum(E)

    @torch.no_grad()
    def _logits(self, f: torch.Tensor) -> torch.Tensor:
        alpha, beta = float(self.alpha), check_positive(self.beta, "beta", allow_zero=True)
        out = self._zero_shot(f)
        for block, A in self._affinity_blocks(f):
            out[block].add_(self._cache_from_affinity(A, beta, inplace=True), alpha=alpha)
        return out

    @torch.no_grad()
    def _score_grid(
        self, features: ArrayLike, settings: Iterable[Mapping[str, Any]], **extra: Any
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """One affinity matrix for all settings, one cache per distinct beta."""
        f = self._check_query(features)
        settings = list(settings)
        s0 = self._zero_shot(f)
        blocks = list(self._affinity_blocks(f))
        by_beta: dict[float, list[int]] = {}
        for i, s in enumerate(settings):
            by_beta.setdefault(float(s.get("beta", self.beta)), []).append(i)
        for beta, indices in by_beta.items():
            beta = check_positive(beta, "beta", allow_zero=True)
            cache = torch.cat([self._cache_from_affinity(A, beta) for _, A in blocks])
            for i in indices:
                yield i, s0 + float(settings[i].get("alpha", self.alpha)) * cache


class TipAdapterF(TipAdapter):
    """Tip-Adapter-F: Tip-Adapter whose cache keys are fine-tuned (init: the support features ``F``).

    Same logits as ``TipAdapter`` with learnable keys; trained on the cross-entropy of the fused logits
    with AdamW (eps 1e-4, weight decay 0.01) and a cosine schedule over ``epochs`` passes of mini-batches
    of ``batch_size`` support images, as in the official repository (lr 1e-3, 20 epochs, batch 256).
    The ``alpha``/``beta`` set at ``fit`` time are used for training (the official ``init_alpha``/
    ``init_beta``, per dataset in ``cliplab.adapt.tip_settings``, as are the epochs: EuroSAT 100);
    changing them afterwards (or searching them with ``grid_search``) only changes the logits, as the
    official code searches them after training.

    With ``[V, N, D]`` support features the initial keys are the average of the first ``cache_views``
    views (None: all; the protocol passes its 10 cache passes) and epoch ``e`` trains on view ``e mod V``
    of every image: the official code re-augments the images every epoch, so a pool of ``V >= epochs``
    cached augmented passes gives a fresh crop every epoch.

    Deviation from the official code: the official script keeps the epoch with the best *test*
    accuracy; we train for ``epochs`` and keep the last keys.
    """

    augmentation = "epochs"
    _constraints = {
        **TipAdapter._constraints,
        "epochs": COUNT,
        "lr": POSITIVE,
        "batch_size": SIZE,
        "seed": SEED,
        "cache_views": Interval(1, None, closed="left", integer=True, allow_none=True),
    }

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        epochs: int = 20,
        lr: float = 1e-3,
        batch_size: int = 256,
        seed: int = 0,
        cache_views: int | None = None,
    ) -> None:
        super().__init__(alpha=alpha, beta=beta)
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed
        self.cache_views = cache_views

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        alpha, beta = float(self.alpha), float(self.beta)
        epochs, batch_size = int(self.epochs), int(self.batch_size)
        self._set_cache(mean_views(X if self.cache_views is None else X[: int(self.cache_views)]), y)
        keys = torch.nn.Parameter(self.keys_.clone())
        steps = epochs * n_batches(X.shape[1], batch_size)
        opt, sched = cosine_adamw([keys], self.lr, steps)
        gen = generator(self.seed)
        for rows, views in epoch_view_batches(X, epochs, batch_size, gen):
            f = X[views, rows]
            logits = self._zero_shot(f) + alpha * self._class_sum(torch.exp(beta * (f @ keys.T - 1.0)))
            loss = F.cross_entropy(logits, y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        self.keys_ = keys.detach()
