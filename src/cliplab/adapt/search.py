"""Hyper-parameter search on a validation set — never on test data.

Two entry points. ``fit_with_validation`` takes the support set and a *separate* validation set (images of
the dataset's own ``val`` split: as many as the method's recipe says — the whole split for Tip-Adapter and GDA,
``min(k, 4)`` per class for lpclip's linear probe; ``cliplab.recipes``), scores the grid there and keeps the
best setting, fitted on the whole support set. References differ (AMU and CLIP-Adapter search nothing; several
search on the test set, which this module never does). The
fallback for data without a validation split is ``search_and_fit``: it receives only the support set,
splits it by image with ``split_validation``, scores every setting with ``grid_search`` (fitting on the
training part, all its views) and refits the best one on the whole support set; validation queries are
the held-out images' clean features when ``clean_features`` is given (single clean crops, like test
queries), else their view average. ``grid_search`` itself takes an explicit validation set; it must never
be given the test split. Several official repositories select hyper-parameters or epochs on the ImageNet
test set; this module exists so that we never do.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from cliplab._validation import ArrayLike, as_features, as_labels, as_tensor, l2_normalize
from cliplab.adapt.base import Adapter, check_int, generator

__all__ = ["fit_with_validation", "grid_search", "search_and_fit", "split_validation"]

EstimatorFactory = Callable[..., Adapter]


def split_validation(
    labels: ArrayLike, val_fraction: float | None = 0.25, *, per_class: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified split of sample indices into ``(train_idx, val_idx)`` (sorted int64 tensors).

    Each class gives ``per_class`` validation samples if set, else ``max(1, round(val_fraction·n_k))``,
    but always keeps at least one training sample (a class with a single sample gives none). Drawn
    with ``seed`` (reproducible). Raises ``ValueError`` when no validation sample can be drawn.
    """
    y = as_labels(labels, "labels")
    fraction = 0.0  # with per_class: unused
    if per_class is not None:
        per_class = check_int(per_class, "per_class")
    elif val_fraction is None or not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1) (or give per_class), got {val_fraction!r}")
    else:
        fraction = float(val_fraction)
    gen = generator(seed)
    train, val = [], []
    for k in torch.unique(y).tolist():
        idx = torch.nonzero(y == k).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        want = per_class if per_class is not None else max(1, round(fraction * idx.numel()))
        n_val = min(want, idx.numel() - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    val_idx = torch.cat(val).sort().values
    if val_idx.numel() == 0:
        raise ValueError(
            "cannot draw a validation split from the support set: every class has a single sample "
            "(pass the hyper-parameters explicitly)"
        )
    return torch.cat(train).sort().values, val_idx


def _combos(param_grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    for key, values in param_grid.items():
        if not isinstance(values, list | tuple) or len(values) == 0:
            raise ValueError(f"param_grid[{key!r}] must be a non-empty list of values, got {values!r}")
    keys = list(param_grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(param_grid[k] for k in keys))]


def grid_search(
    estimator_factory: EstimatorFactory,
    param_grid: Mapping[str, list[Any]],
    train_features: ArrayLike,
    train_labels: ArrayLike,
    val_features: ArrayLike,
    val_labels: ArrayLike,
    *,
    text_weights: ArrayLike,
    logit_scale: float = 100.0,
    val_extra: Mapping[str, Any] | None = None,
    **extra: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every setting of ``param_grid`` by validation accuracy → ``(best_params, table)``.

    ``estimator_factory(**params)`` builds an adapter (a class such as ``TipAdapter`` or a
    ``functools.partial``); it is fitted on the training part with ``text_weights``, ``logit_scale``
    and ``extra`` (e.g. ``aux_features`` for ``AMU``) and scored on ``val_features`` (with
    ``val_extra``). Parameters in the estimator's ``_post_fit_params`` (Tip's alpha/beta, GDA's alpha)
    do not change what is fitted: one fit serves all their values. ``table`` lists every setting in
    grid order with its ``val_accuracy``; ``best_params`` is the first setting with the highest one (the
    references' strict ``>`` on ties). A fit that reports ``degenerate_`` (GDA with a zero covariance,
    whose ``alpha`` values all tie) is not scored (``val_accuracy`` None, ``degenerate`` True): when every
    fit is degenerate, ``best_params`` are the estimator's defaults rather than the first value of the
    grid. The validation set must never be the test split.
    """
    combos = _combos(param_grid) or [{}]
    yv = as_labels(val_labels, "val_labels")
    fv = as_features(val_features, "val_features")
    if yv.shape[0] != fv.shape[0]:
        raise ValueError(f"val_labels has {yv.shape[0]} entries but val_features has {fv.shape[0]} rows")
    post = set(getattr(estimator_factory(**combos[0]), "_post_fit_params", ())) & set(param_grid)
    groups: dict[tuple[tuple[str, Any], ...], list[int]] = {}
    for i, combo in enumerate(combos):
        groups.setdefault(tuple((k, v) for k, v in combo.items() if k not in post), []).append(i)
    accuracy: dict[int, float] = {}
    degenerate: set[int] = set()
    for fit_key, members in groups.items():
        est = estimator_factory(**dict(fit_key))
        est.fit(train_features, train_labels, text_weights=text_weights, logit_scale=logit_scale, **extra)
        if getattr(est, "degenerate_", False):  # e.g. GDA without covariance: its settings cannot differ
            degenerate.update(members)
            continue
        settings = [{k: combos[i][k] for k in post} for i in members]
        for j, logits in est._score_grid(fv, settings, **dict(val_extra or {})):
            accuracy[members[j]] = float((logits.argmax(dim=1) == yv).float().mean())
    table = [
        {**combo, "val_accuracy": accuracy.get(i)} | ({"degenerate": True} if i in degenerate else {})
        for i, combo in enumerate(combos)
    ]
    if not accuracy:  # every fit degenerate: the scores say nothing, keep the estimator's defaults
        defaults = estimator_factory().get_params()
        return {k: defaults[k] for k in param_grid}, table
    best = max(accuracy, key=lambda i: (accuracy[i], -i))
    return dict(combos[best]), table


def _split_rows(x: ArrayLike, name: str, n: int, train: torch.Tensor, val: torch.Tensor, renorm: bool):
    """Split ``[N, ·]`` or ``[V, N, ·]`` by sample; the validation part is the view average."""
    t = as_tensor(x, name)
    if t.ndim not in (2, 3) or t.shape[-2] != n:
        raise ValueError(f"{name} must have shape [N, ·] or [V, N, ·] with N = {n}, got {tuple(t.shape)}")
    if t.ndim == 2:
        return t[train], t[val]
    v = t[:, val].mean(dim=0)
    return t[:, train], (l2_normalize(v) if renorm else v)


def search_and_fit(
    estimator_factory: EstimatorFactory,
    features: ArrayLike,
    labels: ArrayLike,
    *,
    text_weights: ArrayLike,
    logit_scale: float = 100.0,
    param_grid: Mapping[str, list[Any]] | None = None,
    val_fraction: float | None = 0.25,
    per_class: int | None = None,
    seed: int = 0,
    **extra: Any,
) -> tuple[Adapter, dict[str, Any], list[dict[str, Any]]]:
    """Search hyper-parameters on a split of the support set, then refit on all of it.

    ``features`` ``[N, D]`` or ``[V, N, D]`` and ``labels`` ``[N]`` are the support set only. It is
    split by image with ``split_validation(labels, val_fraction, per_class=..., seed=...)``;
    ``grid_search`` scores ``param_grid`` (default: the estimator's ``default_grid()``) fitting on the
    training part (all its views) and validating on the held-out images (their view average,
    renormalised; the few-shot protocol's fallback validates on their clean features instead, through
    ``split_validation`` and ``fit_with_validation``). Per-sample arrays in ``extra`` (such as AMU's
    ``aux_features``) are split the same way. Returns ``(estimator fitted on the whole support set
    with the best parameters, best_params, table)``; post-fit parameters are set after the refit,
    exactly as they were scored.
    """
    y = as_labels(labels, "labels")
    n = y.shape[0]
    train, val = split_validation(y, val_fraction, per_class=per_class, seed=seed)
    f_train, f_val = _split_rows(features, "features", n, train, val, renorm=True)
    fit_extra, val_extra = {}, {}
    for key, value in extra.items():
        if isinstance(value, torch.Tensor) or hasattr(value, "__array__"):
            fit_extra[key], val_extra[key] = _split_rows(value, key, n, train, val, renorm=False)
        else:
            fit_extra[key] = value
    if param_grid is None:
        probe = estimator_factory()
        param_grid = type(probe).default_grid()
    best, table = grid_search(
        estimator_factory,
        param_grid,
        f_train,
        y[train],
        f_val,
        y[val],
        text_weights=text_weights,
        logit_scale=logit_scale,
        val_extra=val_extra,
        **fit_extra,
    )
    post = set(getattr(estimator_factory(**best), "_post_fit_params", ()))
    est = estimator_factory(**{k: v for k, v in best.items() if k not in post})
    est.fit(features, y, text_weights=text_weights, logit_scale=logit_scale, **extra)
    est.set_params(**{k: v for k, v in best.items() if k in post})
    return est, best, table


def fit_with_validation(
    estimator_factory: EstimatorFactory,
    features: ArrayLike,
    labels: ArrayLike,
    val_features: ArrayLike,
    val_labels: ArrayLike,
    *,
    text_weights: ArrayLike,
    logit_scale: float = 100.0,
    param_grid: Mapping[str, list[Any]] | None = None,
    val_extra: Mapping[str, Any] | None = None,
    **extra: Any,
) -> tuple[Adapter, dict[str, Any], list[dict[str, Any]]]:
    """Fit on the whole support set, score ``param_grid`` on a separate validation set, keep the best.

    The references' protocol: the support set (all its views) trains every setting; the validation set
    (clean features of images that are not in the support set, e.g. the dataset's ``val`` split) scores
    them. ``grid_search`` fits once per setting of the fit-time parameters, so a training-free adapter is
    fitted once. Returns ``(estimator with the best parameters, best_params, table)``.
    """
    if param_grid is None:
        param_grid = type(estimator_factory()).default_grid()
    best, table = grid_search(
        estimator_factory,
        param_grid,
        features,
        labels,
        val_features,
        val_labels,
        text_weights=text_weights,
        logit_scale=logit_scale,
        val_extra=val_extra,
        **extra,
    )
    post = set(getattr(estimator_factory(**best), "_post_fit_params", ()))
    est = estimator_factory(**{k: v for k, v in best.items() if k not in post})
    est.fit(features, labels, text_weights=text_weights, logit_scale=logit_scale, **extra)
    est.set_params(**{k: v for k, v in best.items() if k in post})
    return est, best, table
