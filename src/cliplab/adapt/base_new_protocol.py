"""Base-to-new generalisation (CoCoOp's setting) for the feature adapters: fit on the base classes' few-shot
support sets, report base accuracy, new-class accuracy and their harmonic mean.

The shots × seeds machinery (draws, augmented passes, validation, search) is ``cliplab.adapt.protocol``'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from cliplab.adapt.protocol import (
    ADAPTERS,
    Draw,
    _accuracy,
    _as_pool,
    _default_draw,
    _Prepared,
    _requires,
    _runs,
    _zeroshot_accuracy,
    recipes_ran,
)
from cliplab.adapt.protocol_settings import FewShotProtocol
from cliplab.adapt.views import SupportViews
from cliplab.features import Features


def _restrict(f: Features, lo: int, hi: int) -> tuple[Features, torch.Tensor, torch.Tensor]:
    """``(features of classes lo..hi-1 relabelled from 0, their labels, their rows in f)``."""
    if f.labels is None:
        raise ValueError("base-to-new needs labelled features")
    keep = torch.nonzero((f.labels >= lo) & (f.labels < hi)).flatten()
    labels = f.labels[keep] - lo
    return Features(images=f.images[keep], labels=labels), labels, keep


def _positions(keep: torch.Tensor, rows: Any) -> torch.Tensor:
    """Positions in ``keep`` of those ``rows`` that are kept (in the order of ``rows``)."""
    where = torch.full((int(keep.max()) + 1 if keep.numel() else 1,), -1, dtype=torch.int64)
    where[keep] = torch.arange(keep.numel())
    rows = torch.as_tensor(np.asarray(rows), dtype=torch.int64)
    rows = rows[rows < where.numel()]
    pos = where[rows]
    return pos[pos >= 0]


def base_to_new(
    train: Features,
    test: Features,
    text_weights: torch.Tensor,
    protocol: FewShotProtocol | None = None,
    *,
    logit_scale: float = 100.0,
    k: int | None = None,
    train_views: torch.Tensor | SupportViews | None = None,
    val: Features | None = None,
    draw: Draw | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Base (first ``ceil(C/2)`` classes) and new accuracy and their harmonic mean per method (module doc).

    ``protocol``: methods, seeds, search, per-method settings (``FewShotProtocol``, or its fields as keywords
    in ``settings``); ``k``: shots per base class (default ``protocol.base_to_new_shots``, ``min(16, max(shots))``).

    Adapters are fitted on the base classes' support sets (with ``train_views`` and ``val`` restricted to the
    base classes, as ``run_few_shot``); ``new`` is each method's accuracy on the new classes' test images over
    the new classes: ``new_class_logits`` where the method has one (GDA, CLIP-Adapter), else zero-shot.
    The support (and validation) images are the base-class part of the draw over all classes (``draw``, as
    ``run_few_shot``'s), as Dassl draws the few-shot set before ``subsample_classes``. GDA's base classifier
    uses ``covariance="class_mean"`` as ``main_base2new.py`` (GDA's ``base2new`` recipe; ``recipes`` or
    ``method_params`` override).
    """
    protocol = FewShotProtocol.resolve(protocol, "base_to_new", **settings)
    k = protocol.base_to_new_shots if k is None else int(k)
    n_cls = text_weights.shape[0]
    if n_cls < 2:
        raise ValueError("base-to-new needs at least 2 classes")
    if train.labels is None or test.labels is None:
        raise ValueError("base-to-new needs labelled train and test features")
    n_base = (n_cls + 1) // 2
    base_train, _, keep = _restrict(train, 0, n_base)
    base_test, base_test_labels, _ = _restrict(test, 0, n_base)
    new_test, new_test_labels, _ = _restrict(test, n_base, n_cls)
    base_val = _restrict(val, 0, n_base)[0] if val is not None else None
    pool = _as_pool(train_views, train, "train_views")
    # main_base2new.py fits GDA's base classes with the mean of the per-class covariances: its recipe
    recipes = {"gda": "base2new"} | dict(protocol.recipes or {})
    methods = [m for m in (protocol.methods or ADAPTERS) if not _requires(m)]  # no extra inputs for the new classes
    p = _Prepared(base_train, text_weights[:n_base], methods, None if pool is None else pool.subset(keep),
                  base_val, {}, None)  # fmt: skip
    W_base, W_new = text_weights[:n_base], text_weights[n_base:]
    full_draw = draw or _default_draw(train.labels, None if val is None else val.labels, n_cls, protocol.val_shots)
    val_keep = _restrict(val, 0, n_base)[2] if val is not None else None

    def base_draw(k: int, seed: int) -> tuple[Any, Any]:
        idx, vidx = full_draw(k, seed)
        return _positions(keep, idx), (None if vidx is None or val_keep is None else _positions(val_keep, vidx))

    zs_new = _zeroshot_accuracy(new_test.images, new_test_labels, W_new) if len(new_test) else float("nan")
    base_acc: dict[str, list[float]] = {m: [] for m in methods}
    new_acc: dict[str, list[float]] = {m: [] for m in methods}
    run_protocol = dataclasses.replace(protocol, shots=(k,), recipes=recipes)
    runs = _runs(p, W_base, logit_scale, run_protocol, base_draw)
    for _k, _seed, m, est, _chosen, _s in runs:
        base_acc[m].append(_accuracy(est.logits(base_test.images), base_test_labels))
        if hasattr(est, "new_class_logits") and len(new_test):
            new_acc[m].append(_accuracy(est.new_class_logits(new_test.images, W_new), new_test_labels))
        else:
            new_acc[m].append(zs_new)
    out = {}
    for m in methods:
        base, new = float(np.mean(base_acc[m])), float(np.mean(new_acc[m]))
        hm = 2 * base * new / (base + new) if base + new > 0 else 0.0
        how = "own" if hasattr(ADAPTERS[m], "new_class_logits") else "zero-shot"
        out[m] = {"base": base, "new": new, "hm": hm, "new_classifier": how}
    return {
        "k": k,
        "n_base_classes": n_base,
        "n_new_classes": n_cls - n_base,
        "zeroshot_new": zs_new,
        "results": out,
        "recipes": recipes_ran(methods, run_protocol),
    }
