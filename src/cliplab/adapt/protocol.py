"""The few-shot protocol (CoOp-style): methods × shots × seeds on cached features, mean ± std.

For each seed and shot count ``k`` the support set is ``k`` images per class drawn from the training
features (``cliplab.data.k_shot_indices``); each method's hyper-parameters are searched on a
validation split *of the support set* (``search_and_fit``) — the test features are only ever passed
to ``logits`` of the final fitted adapter. With one shot per class no validation split exists, so the
methods' default hyper-parameters are used (recorded as ``"search": "defaults"``).

Base-to-new generalisation: the first half of the classes is "base", the rest "new". Adapters are fit
on base classes only and scored on base test images over base classes; logit-bias adapters carry no
information about unseen classes, so new-class accuracy is zero-shot over the new classes. The
harmonic mean ``HM = 2·base·new / (base + new)`` summarises both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cliplab.adapt.amu import AMU
from cliplab.adapt.base import Adapter
from cliplab.adapt.clip_adapter import CLIPAdapter
from cliplab.adapt.gda import GDA
from cliplab.adapt.linear_probe import LinearProbe
from cliplab.adapt.lpplusplus import LPPlusPlus
from cliplab.adapt.search import search_and_fit
from cliplab.adapt.tip import TipAdapter, TipAdapterF
from cliplab.adapt.zeroshot import ZeroShot
from cliplab.data.sampling import k_shot_indices
from cliplab.features import Features

#: method name → estimator class, the registry of adapters (``register_method`` adds one). A class's
#: ``requires`` names the extra per-image inputs it needs (``amu``: ``aux_features`` from a second encoder).
METHODS: dict[str, type[Adapter]] = {
    "zeroshot": ZeroShot,
    "tip_adapter": TipAdapter,
    "tip_adapter_f": TipAdapterF,
    "gda": GDA,
    "linear_probe": LinearProbe,
    "clip_adapter": CLIPAdapter,
    "lp++": LPPlusPlus,
    "amu": AMU,
}
DEFAULT_SHOTS = (1, 2, 4, 8, 16)


def register_method(name: str, cls: type[Adapter], *, replace: bool = False) -> type[Adapter]:
    """Add the adapter class ``cls`` to ``METHODS`` under ``name`` (for ``run_few_shot``, ``cliplab adapt``)."""
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError(f"a method must be an Adapter subclass, got {cls!r}")
    if name in METHODS and METHODS[name] is not cls and not replace:
        raise ValueError(f"method {name!r} is already registered (pass replace=True to override)")
    METHODS[name] = cls
    return cls


def _requires(name: str) -> frozenset[str]:
    return frozenset(getattr(METHODS[name], "requires", frozenset()))


def _accuracy(est: Adapter, feats: torch.Tensor, labels: torch.Tensor, **extra: Any) -> float:
    return float((est.logits(feats, **extra).argmax(1) == labels).float().mean())


def _zeroshot_accuracy(feats: torch.Tensor, labels: torch.Tensor, text_weights: torch.Tensor) -> float:
    """Top-1 of ``f·Wᵀ`` (the logit scale does not change the argmax)."""
    return float(((feats @ text_weights.T).argmax(1) == labels).float().mean())


def _fit(
    name: str,
    support: torch.Tensor,
    labels: torch.Tensor,
    W: torch.Tensor,
    scale: float,
    seed: int,
    search: bool,
    extra: dict[str, Any],
) -> tuple[Adapter, dict[str, Any] | str]:
    cls = METHODS[name]
    factory: Callable[..., Adapter] = (lambda **kw: cls(seed=seed, **kw)) if "seed" in cls._param_names() else cls
    if name == "zeroshot":
        return factory().fit(support, labels, text_weights=W, logit_scale=scale), "none"
    if search and torch.bincount(labels).min() >= 2 and cls.default_grid():
        est, best, _ = search_and_fit(factory, support, labels, text_weights=W, logit_scale=scale, seed=seed, **extra)
        return est, best
    return factory().fit(support, labels, text_weights=W, logit_scale=scale, **extra), "defaults"


def run_few_shot(
    train: Features,
    test: Features,
    text_weights: torch.Tensor,
    *,
    logit_scale: float = 100.0,
    methods: Sequence[str] | None = None,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = (1, 2, 3),
    train_views: torch.Tensor | None = None,
    aux_train: torch.Tensor | None = None,
    aux_test: torch.Tensor | None = None,
    extra_inputs: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    search: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Accuracy of each method for each shot count, over ``seeds``: ``{"results": {method: {k: {mean, std,
    runs}}}, "zeroshot": acc, "params": ..., "seconds": {method: s}}``.

    ``train_views`` ``[V, N, D]``: augmented views of the training images (Tip averages, GDA concatenates);
    ``aux_train``/``aux_test``: a second encoder's features for ``amu`` (skipped without them), the same as
    ``extra_inputs={"aux_features": (aux_train, aux_test)}``. ``extra_inputs`` maps an input name to its
    ``(train rows, test rows)``; a method whose ``requires`` names an input not given is skipped by default
    and refused when asked for.
    """
    if train.labels is None or test.labels is None:
        raise ValueError("the few-shot protocol needs labelled train and test features")
    n_cls = text_weights.shape[0]
    if int(train.labels.max()) >= n_cls or int(test.labels.max()) >= n_cls:
        raise ValueError(f"labels exceed the {n_cls} classes of the text weights")
    inputs = dict(extra_inputs or {})
    if aux_train is not None or aux_test is not None:
        if aux_train is None or aux_test is None:
            raise ValueError("aux_features need both aux_train and aux_test (from a second encoder)")
        inputs.setdefault("aux_features", (aux_train, aux_test))
    methods = list(methods or [m for m in METHODS if _requires(m) <= inputs.keys()])
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    for m in methods:
        missing = sorted(_requires(m) - inputs.keys())
        if missing:
            hint = " (aux_train and aux_test, from a second encoder)" if "aux_features" in missing else ""
            raise ValueError(f"{m} needs {', '.join(missing)}{hint}: pass them in extra_inputs")
    if train_views is not None and train_views.shape[1:] != train.images.shape:
        raise ValueError(f"train_views must be [V, {len(train)}, {train.dim}], got {tuple(train_views.shape)}")
    counts = torch.bincount(train.labels, minlength=n_cls)
    max_k = int(counts.min())
    if max(shots) > max_k:
        raise ValueError(f"asked for {max(shots)} shots but the smallest class has {max_k} training images")

    results: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in methods}
    params: dict[str, dict[int, list[Any]]] = {m: {} for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    jobs = [(k, s) for k in shots for s in seeds]
    for k, seed in tqdm(jobs, disable=not progress, desc="few-shot", unit="run"):
        idx = torch.as_tensor(k_shot_indices(train.labels, k, seed, num_classes=n_cls))
        y = train.labels[idx]
        support = (
            train.images[idx] if train_views is None else torch.cat([train.images[idx][None], train_views[:, idx]])
        )
        for m in methods:
            extra = {name: inputs[name][0][idx] for name in _requires(m)}
            t0 = time.perf_counter()
            est, chosen = _fit(m, support, y, text_weights, logit_scale, seed, search, extra)
            test_extra = {name: inputs[name][1] for name in _requires(m)}
            acc = _accuracy(est, test.images, test.labels, **test_extra)
            seconds[m] += time.perf_counter() - t0
            results[m].setdefault(k, {"runs": []})["runs"].append(acc)
            params[m].setdefault(k, []).append(chosen)
    for m in methods:
        for r in results[m].values():
            r["mean"], r["std"] = float(np.mean(r["runs"])), float(np.std(r["runs"]))
    zs = _zeroshot_accuracy(test.images, test.labels, text_weights)
    return {
        "results": results,
        "zeroshot": zs,
        "params": params,
        "seconds": seconds,
        "shots": list(shots),
        "seeds": list(seeds),
        "methods": methods,
    }


def base_to_new(
    train: Features,
    test: Features,
    text_weights: torch.Tensor,
    *,
    logit_scale: float = 100.0,
    methods: Sequence[str] | None = None,
    k: int = 16,
    seeds: Sequence[int] = (1, 2, 3),
    progress: bool = False,
) -> dict[str, Any]:
    """Base (first half of classes) and new (second half) accuracy and their harmonic mean per method."""
    n_cls = text_weights.shape[0]
    if n_cls < 2:
        raise ValueError("base-to-new needs at least 2 classes")
    n_base = (n_cls + 1) // 2

    def restrict(f: Features, lo: int, hi: int) -> Features:
        keep = torch.nonzero((f.labels >= lo) & (f.labels < hi)).flatten()
        return Features(images=f.images[keep], labels=f.labels[keep] - lo)

    base_train, base_test = restrict(train, 0, n_base), restrict(test, 0, n_base)
    new_test = restrict(test, n_base, n_cls)
    methods = [m for m in (methods or METHODS) if not _requires(m)]  # no extra inputs for the new classes
    fs = run_few_shot(
        base_train,
        base_test,
        text_weights[:n_base],
        logit_scale=logit_scale,
        methods=methods,
        shots=[k],
        seeds=seeds,
        progress=progress,
    )
    new_acc = (
        _zeroshot_accuracy(new_test.images, new_test.labels, text_weights[n_base:]) if len(new_test) else float("nan")
    )
    out = {}
    for m in methods:
        base = fs["results"][m][k]["mean"]
        hm = 2 * base * new_acc / (base + new_acc) if base + new_acc > 0 else 0.0
        out[m] = {"base": base, "new": new_acc, "hm": hm}
    return {"k": k, "n_base_classes": n_base, "n_new_classes": n_cls - n_base, "results": out}
