"""The few-shot protocol (CoOp-style): methods × shots × seeds on cached features, mean ± std.

For each seed and shot count ``k`` the support set is ``k`` images per class drawn from the training
features (``cliplab.data.k_shot_indices``, or the dataset's own sampler through ``draw``).

Augmentation (``cliplab.adapt.views``): given a pool of augmented passes of the support images
(``train_views``), each method gets the passes its reference uses — Tip-Adapter and GDA the 10 cache
passes (averaged / concatenated, no clean view), LP++ one pass, the trained adapters one pass per epoch,
the linear probe and zero-shot the clean features. ``cliplab adapt`` and the bench build a 10-pass pool by
default.

Validation (never the test split): when the dataset has a validation split (``val``), each run draws
``min(k, 4)`` images per class from it (CoOp's few-shot val; lpclip's ``val_shot_list``), with the run's
seed, and every method's hyper-parameters are searched there on single clean crops (``fit_with_validation``
fits on the whole support set). Only data without a validation split falls back to carving 25% of each
class out of the support set (``search_and_fit``, validated on the held-out images' clean features); with
one shot per class and no validation split the defaults are used (recorded as ``"defaults"``).

Each method runs its reference recipe (``cliplab.recipes``: ``recipes/<method>/<name>.yaml``): its parameters,
search grid and validation size (Tip-Adapter and GDA the whole val split, LP++ k per class, the linear probe
``min(k, 4)`` per class, AMU and CLIP-Adapter no search). Tip-Adapter's recipes are its per-dataset configs,
selected by the dataset's name; ``FewShotProtocol.recipes`` picks another recipe (or a user's YAML file),
``validation`` one policy for all, and ``method_params``/``param_grids`` override any parameter or grid. The
results record, per method, the recipe that ran and its resolved settings (``results["recipes"]``).

Base-to-new generalisation (``base_to_new`` in ``cliplab.adapt.base_new_protocol``): the first ``ceil(C/2)``
classes are "base", the rest "new" (Dassl's ``subsample_classes``). Adapters are fit on the base classes and
scored on base test images over the base classes; on the new classes, GDA synthesises a classifier from the
support features nearest to each new class's text weight (``GDA.new_class_logits``, the official
``main_base2new.py``), CLIP-Adapter applies its feature adapter (``CLIPAdapter.new_class_logits``), and the
logit-bias adapters, which carry nothing about unseen classes, fall back to zero-shot.
``HM = 2·base·new / (base + new)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cliplab.adapt.base import Adapter
from cliplab.adapt.protocol_settings import DEFAULT_SHOTS as DEFAULT_SHOTS  # re-exported: the public default
from cliplab.adapt.protocol_settings import FewShotProtocol
from cliplab.adapt.registry import ADAPTERS
from cliplab.adapt.search import fit_with_validation, grid_search, split_validation
from cliplab.adapt.tip import TipAdapterF
from cliplab.adapt.views import CACHE_PASSES, SupportViews, views_for
from cliplab.adapt.zeroshot import ZeroShot
from cliplab.data.sampling import k_shot_indices
from cliplab.features import Features
from cliplab.progress import step, track
from cliplab.recipes import Recipe, dataset_key, load_recipe

#: Draw of one run: ``draw(k, seed) -> (support rows of the training set, validation rows or None)``.
Draw = Callable[[int, int], tuple[Any, Any]]
#: an extra per-image input: (train rows, test rows) or (train rows, test rows, validation rows)
ExtraInput = tuple[torch.Tensor, ...]


def _requires(name: str) -> frozenset[str]:
    return frozenset(getattr(ADAPTERS[name], "requires", frozenset()))


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def _zeroshot_accuracy(feats: torch.Tensor, labels: torch.Tensor, text_weights: torch.Tensor) -> float:
    """Top-1 of ``f·Wᵀ`` (the logit scale does not change the argmax)."""
    return float(((feats @ text_weights.T).argmax(1) == labels).float().mean())


def val_shots(k: int, most: int = 4) -> int:
    """Validation images per class for a ``k``-shot run: ``min(k, most)`` (4: CoOp/Dassl; lpclip's
    ``val_shot_list``)."""
    return min(int(k), int(most))


def method_recipe(name: str, dataset: str | None, recipes: Mapping[str, str] | None = None) -> Recipe | None:
    """The recipe method ``name`` runs (``cliplab.recipes``): ``recipes[name]`` (a recipe name or a YAML path), else
    the one for ``dataset`` (Tip-Adapter's per-dataset configs), else the method's default; None when the method
    has no recipe files (its constructor defaults and ``default_grid()`` then)."""
    choice = (recipes or {}).get(name)
    try:
        return load_recipe(name, choice, dataset)
    except LookupError:
        if choice is not None and not str(choice).endswith((".yaml", ".yml")):
            raise ValueError(f"no recipes for method {name!r} (asked for recipe {choice!r})") from None
        return None


def method_settings(
    name: str,
    dataset: str | None,
    *,
    cache_passes: int = CACHE_PASSES,
    method_params: Mapping[str, Mapping[str, Any]] | None = None,
    param_grids: Mapping[str, Mapping[str, list[Any]]] | None = None,
    recipes: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``(constructor params, search grid)`` of method ``name`` on ``dataset`` (a dataset name, or None).

    The method's recipe (``method_recipe``: e.g. Tip-Adapter's per-dataset config, with Tip-Adapter-F's keys
    from the first ``cache_passes`` passes) gives both; a method without recipe files its defaults and
    ``default_grid()``. ``method_params[name]`` / ``param_grids[name]`` override.
    """
    cls = ADAPTERS[name]
    params: dict[str, Any] = {}
    grid: dict[str, list[Any]] = dict(cls.default_grid())
    recipe = method_recipe(name, dataset, recipes)
    if recipe is not None:
        params = dict(recipe.params)
        grid = dict(recipe.grid) or grid  # a recipe without a grid (no search) keeps default_grid for --validation
    if issubclass(cls, TipAdapterF):
        params["cache_views"] = cache_passes
    params.update((method_params or {}).get(name, {}))
    if param_grids and name in param_grids:
        grid = dict(param_grids[name])
    return params, grid


def method_validation(name: str, recipe: Recipe | None, protocol: FewShotProtocol) -> str:
    """The validation policy of a method (``cliplab.recipes.VALIDATION``): the protocol's ``validation`` when
    set, else its recipe's, else ``min_k_4``."""
    return protocol.validation or (recipe.validation if recipe is not None else "min_k_4")


def _factory(cls: type[Adapter], seed: int, params: Mapping[str, Any]) -> Callable[..., Adapter]:
    base = dict(params)
    if "seed" in cls._param_names():
        base.setdefault("seed", seed)
    return lambda **kw: cls(**{**base, **kw})


def _fit_method(
    cls: type[Adapter],
    factory: Callable[..., Adapter],
    grid: Mapping[str, list[Any]],
    support: torch.Tensor,
    y: torch.Tensor,
    clean: torch.Tensor,
    W: torch.Tensor,
    scale: float,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    search: bool,
    extra: dict[str, Any],
    clean_extra: dict[str, Any],
    val_extra: dict[str, Any],
) -> tuple[Adapter, dict[str, Any] | str]:
    """Fit one method on one support set, searching its hyper-parameters where it has any (see module doc)."""
    kw: dict[str, Any] = {"text_weights": W, "logit_scale": scale}
    if cls is ZeroShot:
        return factory().fit(support, y, **kw), "none"
    if search and cls.validation_search:
        vkw: dict[str, Any] = {"val_features": val[0], "val_labels": val[1]} if val is not None else {}
        est = factory().fit(support, y, **kw, **vkw, **extra)
        chosen: dict[str, Any] | str = {"C": est.C_} if hasattr(est, "C_") else "own search"
    elif search and grid and val is not None:
        est, chosen, _ = fit_with_validation(
            factory, support, y, val[0], val[1], param_grid=grid, val_extra=val_extra, **kw, **extra
        )
    elif search and grid and int(torch.bincount(y).min()) >= 2:
        est, chosen = _carve_and_fit(factory, grid, support, y, clean, kw, extra, clean_extra)
    else:
        return factory().fit(support, y, **kw, **extra), "defaults"
    if getattr(est, "degenerate_", False) and isinstance(chosen, dict):
        chosen = {**chosen, "degenerate": True}
    return est, chosen


def _carve_and_fit(
    factory: Callable[..., Adapter],
    grid: Mapping[str, list[Any]],
    support: torch.Tensor,
    y: torch.Tensor,
    clean: torch.Tensor,
    kw: dict[str, Any],
    extra: dict[str, Any],
    clean_extra: dict[str, Any],
) -> tuple[Adapter, dict[str, Any]]:
    """The fallback without a validation split: 25% of each class's support images (at least one, leaving
    one) are held out; the grid is fitted on the rest (all their views) and scored on the held-out images'
    clean features; the best setting is refitted on the whole support set."""
    tr, va = split_validation(y, 0.25, seed=0)

    def rows(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return t[:, i] if t.ndim == 3 else t[i]

    train_extra: dict[str, Any] = {n: rows(v, tr) for n, v in extra.items()}
    best, _ = grid_search(
        factory,
        grid,
        rows(support, tr),
        y[tr],
        clean[va],
        y[va],
        val_extra={n: v[va] for n, v in clean_extra.items()},
        **kw,
        **train_extra,
    )
    post = set(getattr(factory(**best), "_post_fit_params", ()))
    est = factory(**{k: v for k, v in best.items() if k not in post}).fit(support, y, **kw, **extra)
    est.set_params(**{k: v for k, v in best.items() if k in post})
    return est, best


class _Prepared:
    """Validated inputs of one protocol run (shared by ``run_few_shot`` and ``base_to_new``)."""

    def __init__(
        self,
        train: Features,
        text_weights: torch.Tensor,
        methods: Sequence[str] | None,
        train_views: torch.Tensor | SupportViews | None,
        val: Features | None,
        inputs: dict[str, ExtraInput],
        aux_views: torch.Tensor | SupportViews | None,
    ) -> None:
        if train.labels is None:
            raise ValueError("the few-shot protocol needs labelled train features")
        self.n_cls = text_weights.shape[0]
        if int(train.labels.max()) >= self.n_cls:
            raise ValueError(f"labels exceed the {self.n_cls} classes of the text weights")
        self.labels: torch.Tensor = train.labels
        self.val_labels: torch.Tensor | None = None
        if val is not None:
            if val.labels is None or int(val.labels.max()) >= self.n_cls:
                raise ValueError("validation features need labels within the classes of the text weights")
            self.val_labels = val.labels
        self.inputs = inputs
        self.methods = list(methods or [m for m in ADAPTERS if _requires(m) <= inputs.keys()])
        unknown = [m for m in self.methods if m not in ADAPTERS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(ADAPTERS)}")
        for m in self.methods:
            missing = sorted(_requires(m) - inputs.keys())
            if missing:
                hint = " (aux_train and aux_test, from a second encoder)" if "aux_features" in missing else ""
                raise ValueError(f"{m} needs {', '.join(missing)}{hint}: pass them in extra_inputs")
        self.pool = _as_pool(train_views, train, "train_views")
        self.aux_pool = _as_pool(aux_views, None, "aux_views")
        self.train, self.val = train, val


def _as_pool(views: torch.Tensor | SupportViews | None, train: Features | None, name: str) -> SupportViews | None:
    if views is None or isinstance(views, SupportViews):
        return views
    t = torch.as_tensor(views)
    if train is not None and (t.ndim != 3 or t.shape[1:] != train.images.shape):
        raise ValueError(f"{name} must be [V, {len(train)}, {train.dim}], got {tuple(t.shape)}")
    return SupportViews.full(t)


def _default_draw(
    train_labels: torch.Tensor, val_labels: torch.Tensor | None, n_cls: int, most_val_shots: int = 4
) -> Draw:
    def draw(k: int, seed: int) -> tuple[Any, Any]:
        idx = k_shot_indices(train_labels, k, seed, num_classes=n_cls)
        if val_labels is None:
            return idx, None
        vk = min(val_shots(k, most_val_shots), int(torch.bincount(val_labels, minlength=n_cls).min()))
        return idx, (k_shot_indices(val_labels, vk, seed, num_classes=n_cls) if vk >= 1 else None)

    return draw


def _job_note(job: tuple[int, int]) -> str:
    return f"{job[0]} shot{'s' if job[0] != 1 else ''}, seed {job[1]}"


def _runs(
    p: _Prepared, W: torch.Tensor, scale: float, protocol: FewShotProtocol, draw: Draw
) -> Iterator[tuple[int, int, str, Adapter, Any, float]]:
    """``(k, seed, method, fitted estimator, chosen params, fit seconds)`` for every run of ``protocol``'s
    shots and seeds."""
    jobs = [(k, s) for k in protocol.shots for s in protocol.seeds]
    cache_passes = protocol.cache_passes
    settings = {
        m: method_settings(
            m,
            protocol.dataset,
            cache_passes=cache_passes,
            method_params=protocol.method_params,
            param_grids=protocol.param_grids,
            recipes=protocol.recipes,
        )
        for m in p.methods
    }
    policies = {
        m: method_validation(m, method_recipe(m, protocol.dataset, protocol.recipes), protocol) for m in p.methods
    }
    for k, seed in track(jobs, "few-shot", unit="run", enabled=protocol.progress, note=_job_note):
        idx, drawn = draw(k, seed)
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.int64)
        y = p.labels[idx]
        clean = p.train.images[idx]
        augmented = p.pool.take(idx) if p.pool is not None else None
        for m in p.methods:
            vidx = _validation_rows(policies[m], p, k, seed, drawn)
            val = (
                None
                if vidx is None or p.val is None or p.val_labels is None
                else (p.val.images[vidx], p.val_labels[vidx])
            )
            cls = ADAPTERS[m]
            role = cls.augmentation
            if _requires(m) and augmented is not None and p.aux_pool is None:
                role = "none"  # no augmented passes of the extra inputs: both branches on the clean images
            support = views_for(role, clean, augmented, cache_passes)
            extra, clean_extra, val_extra = {}, {}, {}
            for name in _requires(m):
                rows = p.inputs[name]
                clean_extra[name] = rows[0][idx]
                if support.ndim == 3 and role != "none" and p.aux_pool is not None:
                    extra[name] = views_for(role, clean_extra[name], p.aux_pool.take(idx), cache_passes)
                else:
                    extra[name] = clean_extra[name]
                if val is not None and len(rows) > 2:
                    val_extra[name] = rows[2][vidx]
            m_val = val if (val is not None and val_extra.keys() >= _requires(m)) else None
            params, grid = settings[m]
            t0 = time.perf_counter()
            with step(m):
                est, chosen = _fit_method(
                    cls, _factory(cls, seed, params), grid, support, y, clean, W, scale, m_val,
                    protocol.search and policies[m] != "none", extra, clean_extra, val_extra,
                )  # fmt: skip
            yield k, seed, m, est, chosen, time.perf_counter() - t0


def _validation_rows(policy: str, p: _Prepared, k: int, seed: int, drawn: Any) -> torch.Tensor | None:
    """The validation rows a method with validation ``policy`` is searched on in a ``k``-shot run: the whole val
    split (``full``), ``k`` per class (``k_per_class``), the draw's ``min(k, val_shots)`` per class (``min_k_4``);
    None without a val split (the search then carves the support set) or with ``none``."""
    if p.val_labels is None or policy == "none":
        return None
    if policy == "full":
        return torch.arange(len(p.val_labels))
    if policy == "k_per_class":
        vk = min(int(k), int(torch.bincount(p.val_labels, minlength=p.n_cls).min()))
        if vk < 1:
            return None
        return torch.as_tensor(np.asarray(k_shot_indices(p.val_labels, vk, seed, num_classes=p.n_cls)))
    return None if drawn is None else torch.as_tensor(np.asarray(drawn), dtype=torch.int64)


def protocol_note(
    *, validation: str, passes: int, cache_passes: int, dataset: str | None, search: bool
) -> dict[str, Any]:
    """What produced the numbers: validation source, augmentation, per-dataset settings (for reports)."""
    key = dataset_key(dataset)
    aug = (
        f"{passes} random-crop passes of the support images (Tip-Adapter/GDA: the first {min(passes, cache_passes)};"
        " LP++: one; Tip-Adapter-F/CLIP-Adapter/AMU: one per epoch; linear probe: clean)"
        if passes
        else "none (clean support features)"
    )
    val = {
        "dataset": "the dataset's validation split, clean images; how many per method: its recipe's validation "
        "(results.recipes)",
        "support": "carved from the support set (25% per class; data without a validation split)",
    }[validation]
    return {
        "validation": validation,
        "validation_note": val if search else "no search (default hyper-parameters)",
        "augmentation": aug,
        "passes": passes,
        "cache_passes": cache_passes,
        "tip_settings": key or "default (the ImageNet config)",
        "text": f"Hyper-parameters: {val if search else 'defaults, no search'}; augmentation: {aug}; "
        f"Tip-Adapter settings: {key or 'default (ImageNet config)'}. Never the test split.",
    }


def run_few_shot(
    train: Features,
    test: Features,
    text_weights: torch.Tensor,
    protocol: FewShotProtocol | None = None,
    *,
    logit_scale: float = 100.0,
    train_views: torch.Tensor | SupportViews | None = None,
    val: Features | None = None,
    aux_train: torch.Tensor | None = None,
    aux_test: torch.Tensor | None = None,
    aux_val: torch.Tensor | None = None,
    aux_views: torch.Tensor | SupportViews | None = None,
    extra_inputs: Mapping[str, ExtraInput] | None = None,
    draw: Draw | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Accuracy of each method for each shot count, over the seeds: ``{"results": {method: {k: {mean, std,
    runs}}}, "zeroshot": acc, "params": ..., "seconds": {method: s}, "protocol": {...}}``.

    ``protocol``: methods, shots, seeds, search, per-method settings (``FewShotProtocol``; ``settings``: any
    of its fields as keywords, overriding it: ``run_few_shot(train, test, W, shots=[4], seeds=[1])``).

    ``train_views``: augmented passes of the training images, ``[P, N, D]`` or a ``SupportViews`` of only the
    rows some support set uses (``cliplab.adapt.views.support_rows``); each method takes its share (module
    docstring). ``val``: the dataset's validation split (clean features); without it the search falls back to
    a split of the support set. ``aux_train``/``aux_test``/``aux_val``: a second encoder's features for
    ``amu`` (skipped without them), ``aux_views`` its features of the *same* augmented passes; the same as
    ``extra_inputs={"aux_features": (aux_train, aux_test[, aux_val])}``. A method whose ``requires`` names an
    input not given is skipped by default and refused when asked for. ``dataset``: the dataset's name, which
    selects Tip-Adapter's per-dataset settings. ``draw(k, seed) -> (support rows, val rows)`` replaces the
    default sampler (``k_shot_indices`` on both, ``min(k, val_shots)`` per class for validation).
    """
    protocol = FewShotProtocol.resolve(protocol, "run_few_shot", **settings)
    shots = protocol.shots
    if test.labels is None:
        raise ValueError("the few-shot protocol needs labelled train and test features")
    if int(test.labels.max()) >= text_weights.shape[0]:
        raise ValueError(f"labels exceed the {text_weights.shape[0]} classes of the text weights")
    inputs: dict[str, ExtraInput] = dict(extra_inputs or {})
    if aux_train is not None or aux_test is not None:
        if aux_train is None or aux_test is None:
            raise ValueError("aux_features need both aux_train and aux_test (from a second encoder)")
        rows = (aux_train, aux_test) if aux_val is None else (aux_train, aux_test, aux_val)
        inputs.setdefault("aux_features", rows)
    if train.labels is None:
        raise ValueError("the few-shot protocol needs labelled train and test features")
    p = _Prepared(train, text_weights, protocol.methods, train_views, val, inputs, aux_views)
    counts = torch.bincount(train.labels, minlength=p.n_cls)
    max_k = int(counts.min())
    if max(shots) > max_k:
        raise ValueError(f"asked for {max(shots)} shots but the smallest class has {max_k} training images")
    draw = draw or _default_draw(train.labels, None if val is None else val.labels, p.n_cls, protocol.val_shots)
    results: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in p.methods}
    params: dict[str, dict[int, list[Any]]] = {m: {} for m in p.methods}
    seconds = dict.fromkeys(p.methods, 0.0)
    for k, _seed, m, est, chosen, fit_s in _runs(p, text_weights, logit_scale, protocol, draw):
        t0 = time.perf_counter()
        test_extra = {name: inputs[name][1] for name in _requires(m)}
        acc = _accuracy(est.logits(test.images, **test_extra), test.labels)
        seconds[m] += fit_s + time.perf_counter() - t0
        results[m].setdefault(k, {"runs": []})["runs"].append(acc)
        params[m].setdefault(k, []).append(chosen)
    for m in p.methods:
        for r in results[m].values():
            r["mean"], r["std"] = float(np.mean(r["runs"])), float(np.std(r["runs"]))
    return {
        "results": results,
        "zeroshot": _zeroshot_accuracy(test.images, test.labels, text_weights),
        "params": params,
        "seconds": seconds,
        "shots": list(shots),
        "seeds": list(protocol.seeds),
        "methods": p.methods,
        "protocol": protocol_note(
            validation="dataset" if val is not None else "support",
            passes=0 if p.pool is None else p.pool.passes,
            cache_passes=protocol.cache_passes,
            dataset=protocol.dataset,
            search=protocol.search,
        ),
        "recipes": recipes_ran(p.methods, protocol),
    }


def recipes_ran(methods: Sequence[str], protocol: FewShotProtocol) -> dict[str, dict[str, Any]]:
    """For each method: the recipe that ran (name, source, validation) and its resolved settings
    (``params``: the constructor's keyword arguments after ``method_params``; ``grid``: the search grid as written,
    or the override). Methods without recipe files report ``{"recipe": None}`` and their parameters."""
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        if m == "zeroshot":
            continue
        recipe = method_recipe(m, protocol.dataset, protocol.recipes)
        params, grid = method_settings(
            m, protocol.dataset, cache_passes=protocol.cache_passes, method_params=protocol.method_params,
            param_grids=protocol.param_grids, recipes=protocol.recipes,
        )  # fmt: skip
        entry: dict[str, Any] = recipe.summary() if recipe is not None else {"recipe": None, "grid": grid}
        entry["params"] = params
        if protocol.param_grids and m in protocol.param_grids:
            entry["grid"] = dict(protocol.param_grids[m])
        entry["validation"] = method_validation(m, recipe, protocol)
        out[m] = entry
    return out
