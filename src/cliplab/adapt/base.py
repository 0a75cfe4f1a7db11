"""The estimator contract every adapter follows, its input validation and small shared helpers.

Every adapter: ``fit(features, labels, *, text_weights, logit_scale=100.0, **extra) -> self``,
``logits(features) -> [M, C]``, ``predict(features) -> [M]`` (``argmax`` of the logits).

``features`` are L2-normalised image features ``[N, D]``, or ``[V, N, D]`` for ``V`` augmented views of
the same ``N`` support images (see ``cliplab.features.embed_views``); each adapter says how it combines
views (Tip-Adapter averages them, GDA concatenates them, the trained adapters cycle through them, epoch
``e`` seeing view ``e mod V`` of every image: a fresh augmentation per epoch while ``V`` >= epochs).
``Adapter.augmentation`` tells the few-shot protocol which augmented passes a method gets (see
``cliplab.adapt.protocol``). ``text_weights`` ``[C, D]`` are the zero-shot class weights, ``logit_scale`` the CLIP
multiplier, so the zero-shot logits are ``s0 = logit_scale · f·Wᵀ``. Inputs may be NumPy arrays or
tensors; outputs are float32 tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, Self

import torch

from cliplab._validation import ArrayLike, Estimator, Interval, Options, as_features, as_labels, as_tensor, l2_normalize

__all__ = ["Adapter", "Interval", "Options"]

#: shared constraints of common hyper-parameters
POSITIVE = Interval(0, None, closed="neither")
NON_NEGATIVE = Interval(0, None, closed="left")
UNIT = Interval(0, 1, closed="both")
COUNT = Interval(0, None, closed="left", integer=True)  # epochs: 0 allowed
SIZE = Interval(1, None, closed="left", integer=True)
SEED = Interval(None, None, integer=True)
FINITE = Interval(None, None)


class Adapter(Estimator):
    """Base class: validates ``fit``'s inputs, stores the text side and implements ``predict``.

    After ``fit``: ``text_weights_`` ``[C, D]``, ``logit_scale_`` (float), ``n_classes_`` (C),
    ``classes_`` (``arange(C)``), ``n_features_in_`` (D). Subclasses implement ``_fit(X, y)``
    with ``X`` ``[V, N, D]`` (``V = 1`` for plain ``[N, D]`` input) and ``_logits(f)``, each with the extra
    inputs it takes as keyword-only parameters (``fit``/``logits`` pass ``**extra`` on).

    ``_constraints`` (``{name: Interval | Options | callable}``) are checked by ``fit`` before ``_fit`` runs.
    ``requires`` names the extra inputs ``fit`` and ``logits`` need (AMU: ``{"aux_features"}``); the few-shot
    protocol passes them and ``fit`` refuses to run without them.

    ``_post_fit_params`` names the hyper-parameters that only change ``logits`` (never what ``fit``
    learns); ``cliplab.adapt.grid_search`` fits once per setting of the others and scores the rest
    with ``_score_grid``, which subclasses may speed up (Tip-Adapter reuses one affinity matrix).
    """

    _post_fit_params: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[frozenset[str]] = frozenset()
    #: which augmented passes of the support images the few-shot protocol passes to ``fit``: ``"none"``
    #: (the clean features), ``"cache"`` (the cache passes: Tip-Adapter, GDA), ``"single"`` (one augmented
    #: pass: LP++), ``"epochs"`` (the whole pool, one pass per epoch: Tip-Adapter-F, CLIP-Adapter, AMU)
    augmentation: ClassVar[str] = "none"
    #: True for an adapter that searches its own hyper-parameters inside ``fit`` given
    #: ``val_features=``/``val_labels=`` (``LinearProbe``'s lpclip search); the protocol then passes its
    #: validation set to ``fit`` instead of running ``grid_search``
    validation_search: ClassVar[bool] = False

    # ----------------------------------------------------------------- hyper-parameters
    @classmethod
    def default_grid(cls) -> dict[str, list[Any]]:
        """Hyper-parameter grid searched by ``cliplab.adapt.search_and_fit`` (empty: nothing to search)."""
        return {}

    # ----------------------------------------------------------------- contract
    def fit(
        self,
        features: ArrayLike,
        labels: ArrayLike,
        *,
        text_weights: ArrayLike,
        logit_scale: float = 100.0,
        **extra: Any,
    ) -> Self:
        """Fit on support ``features`` ``[N, D]`` or ``[V, N, D]`` with ``labels`` ``[N]`` in ``[0, C)``."""
        W = as_features(text_weights, "text_weights")
        raw = as_views(features, "features", dim=W.shape[1], dim_name="text_weights")
        y = as_labels(labels, "labels", num_classes=W.shape[0])
        if y.shape[0] != raw.shape[-2]:
            per_view = f" per view (features has shape [V, N, D] = {tuple(raw.shape)})" if raw.ndim == 3 else ""
            raise ValueError(f"labels has {y.shape[0]} entries but features has {raw.shape[-2]} samples{per_view}")
        X = raw if raw.ndim == 3 else raw.unsqueeze(0)
        missing = sorted(set(self.requires) - extra.keys())
        if missing:
            raise TypeError(f"{type(self).__name__}.fit needs {', '.join(f'{m}=...' for m in missing)} (see requires)")
        self._fitted = False
        self._validate_params()
        self.logit_scale_ = check_positive(logit_scale, "logit_scale")
        self.text_weights_ = W
        self.n_classes_ = W.shape[0]
        self.n_features_in_ = W.shape[1]
        self.classes_ = torch.arange(W.shape[0], device=W.device)
        self._s0_weights = self.logit_scale_ * W
        self._fit(X, y, **extra)
        self._fitted = True
        return self

    def logits(self, features: ArrayLike, **extra: Any) -> torch.Tensor:
        """Class scores ``[M, C]`` (float32) for query ``features`` ``[M, D]``."""
        f = self._check_query(features)
        return self._logits(f, **extra).float()

    def predict(self, features: ArrayLike, **extra: Any) -> torch.Tensor:
        """Predicted class indices ``[M]`` (int64): ``argmax`` of ``logits``."""
        return self.logits(features, **extra).argmax(dim=1)

    # ----------------------------------------------------------------- for subclasses
    # ``fit``/``logits`` pass their ``**extra`` on: an override adds the extras it takes as keyword-only
    # parameters (AMU: ``aux_features``), so any other keyword is refused with a TypeError
    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    def _logits(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _zero_shot(self, f: torch.Tensor) -> torch.Tensor:
        """``s0 = logit_scale · f·Wᵀ``."""
        return f @ self._s0_weights.T

    def _require_fitted(self) -> None:
        if not getattr(self, "_fitted", False):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(...) first")

    def _check_query(self, features: ArrayLike, name: str = "features") -> torch.Tensor:
        self._require_fitted()
        return as_features(features, name, dim=self.n_features_in_)

    def _score_grid(
        self, features: ArrayLike, settings: Iterable[Mapping[str, Any]], **extra: Any
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """``(i, logits)`` of ``features`` under each setting ``i`` of the post-fit parameters, in any order.

        The default sets each setting in turn and calls ``logits``.
        """
        f = self._check_query(features)
        saved = self.get_params()
        try:
            for i, setting in enumerate(settings):
                self.set_params(**setting)
                yield i, self._logits(f, **extra).float()
        finally:
            self.set_params(**saved)


# --------------------------------------------------------------------- validation helpers
def as_views(x: ArrayLike, name: str, *, dim: int, dim_name: str) -> torch.Tensor:
    """A float32 ``[N, D]`` or ``[V, N, D]`` tensor whose last dimension is ``dim``."""
    t = as_tensor(x, name)
    if t.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape [N, D] or [V, N, D], got {tuple(t.shape)}")
    if t.shape[-1] != dim:
        raise ValueError(f"{name} has dimension {t.shape[-1]} but {dim_name} has dimension {dim}")
    return t


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """A finite float ``> 0`` (``>= 0`` with ``allow_zero``), else ``ValueError`` naming it."""
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


def check_int(value: int, name: str, *, minimum: int = 1) -> int:
    if int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------- shared numerics
def mean_views(X: torch.Tensor) -> torch.Tensor:
    """Average the ``V`` views ``[V, N, D]`` and renormalise → ``[N, D]`` (Tip-Adapter's cache keys)."""
    return l2_normalize(X.mean(dim=0)) if X.shape[0] > 1 else X[0]


def concat_views(X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the views as extra rows with repeated labels → ``[V·N, D]``, ``[V·N]`` (GDA's choice)."""
    return X.reshape(-1, X.shape[2]), y.repeat(X.shape[0])


def class_means(X: torch.Tensor, y: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means ``[C, D]`` (zero rows for absent classes) and counts ``[C]``."""
    counts = torch.bincount(y, minlength=n_classes)
    sums = torch.zeros(n_classes, X.shape[1], dtype=X.dtype, device=X.device).index_add_(0, y, X)
    return sums / counts.clamp_min(1).unsqueeze(1).to(X.dtype), counts


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def epoch_view_batches(
    X: torch.Tensor, epochs: int, batch_size: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches ``(rows [B], views [B])`` for ``epochs`` shuffled passes over the ``N`` samples.

    Epoch ``e`` reads view ``e mod V`` of every sample: with ``V`` augmented passes of the support images,
    each epoch sees a fresh augmentation of every image (as the references re-augment each epoch) until the
    pool is exhausted, then the passes repeat in order.
    """
    V, N = X.shape[0], X.shape[1]
    for epoch in range(epochs):
        order = torch.randperm(N, generator=gen)
        views = torch.full((N,), epoch % V, dtype=torch.int64)
        for start in range(0, N, batch_size):
            rows = order[start : start + batch_size]
            yield rows, views[rows]


def cosine_adamw(
    params: list[torch.Tensor], lr: float, steps: int, *, weight_decay: float = 0.01, eps: float = 1e-4
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with a cosine schedule over ``steps`` steps (the Tip-Adapter-F / AMU recipe, eps 1e-4)."""
    lr = check_positive(lr, "lr")
    weight_decay = check_positive(weight_decay, "weight_decay", allow_zero=True)
    try:  # the fused kernel is several times faster on CPU (torch >= 2.4)
        opt = torch.optim.AdamW(params, lr=lr, eps=eps, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(params, lr=lr, eps=eps, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))


def n_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
