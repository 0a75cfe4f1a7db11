"""Classification metrics (CLIP_benchmark conventions): top-k accuracy, mean per-class recall, confusion.

CLIP_benchmark (LAION-AI/CLIP_benchmark, ``clip_benchmark/metrics/zeroshot_classification.py``) reports, for a
single-label dataset with logits ``z [N, C]`` and labels ``y [N]``:

* ``acc1`` = (1/N) Σ_i [y_i = argmax_c z_ic];
* ``acc5`` = (1/N) Σ_i [y_i ∈ top-5(z_i)], **NaN when the dataset has fewer than 5 classes** (C < 5);
* ``mean_per_class_recall`` = scikit-learn's ``balanced_accuracy_score(y, argmax z)``: the mean, over the
  classes present in ``y``, of the share of that class's samples predicted as it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cliplab._validation import ArrayLike, as_labels, as_tensor, check_same_length


def _logits_labels(logits: ArrayLike, labels: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    z = as_tensor(logits, "logits", ndim=2)
    y = as_labels(labels, "labels", n=z.shape[0], num_classes=z.shape[1])
    return z, y


def topk_accuracy(logits: ArrayLike, labels: ArrayLike, k: int = 1) -> float:
    """Share of samples whose label is among the ``k`` highest logits (ties broken by class index)."""
    z, y = _logits_labels(logits, labels)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, z.shape[1])
    top = z.topk(k, dim=1).indices
    return float((top == y[:, None]).any(1).float().mean())


def accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Top-1 accuracy."""
    return topk_accuracy(logits, labels, 1)


def confusion_matrix(predictions: ArrayLike, labels: ArrayLike, num_classes: int | None = None) -> torch.Tensor:
    """``M[i, j]`` = number of samples of true class ``i`` predicted as ``j`` (int64 ``[C, C]``)."""
    p = as_labels(predictions, "predictions")
    y = as_labels(labels, "labels", n=p.shape[0])
    check_same_length(p, y, "predictions", "labels")
    c = num_classes if num_classes is not None else int(max(p.max(), y.max())) + 1
    if int(max(p.max(), y.max())) >= c:
        raise ValueError(f"class index {int(max(p.max(), y.max()))} out of range for {c} classes")
    return torch.bincount(y * c + p, minlength=c * c).reshape(c, c)


def mean_per_class_recall(logits: ArrayLike, labels: ArrayLike) -> float:
    """Balanced accuracy: mean over the classes present in ``labels`` of their recall."""
    z, y = _logits_labels(logits, labels)
    cm = confusion_matrix(z.argmax(1), y, z.shape[1]).double()
    support = cm.sum(1)
    present = support > 0
    return float((cm.diag()[present] / support[present]).mean())


def classification_report(
    logits: ArrayLike, labels: ArrayLike, classnames: Sequence[str] | None = None
) -> dict[str, Any]:
    """``acc1``, ``acc5``, ``mean_per_class_recall``, ``n`` and per-class recall keyed by class name.

    As CLIP_benchmark: ``acc5`` is NaN (``null`` in JSON) when there are fewer than 5 classes, where top-5 would
    be trivially 1.
    """
    z, y = _logits_labels(logits, labels)
    c = z.shape[1]
    names = list(classnames) if classnames is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for logits with {c} classes")
    cm = confusion_matrix(z.argmax(1), y, c)
    support = cm.sum(1)
    per_class = {names[i]: (float(cm[i, i] / support[i]) if support[i] > 0 else None) for i in range(c)}
    return {
        "acc1": topk_accuracy(z, y, 1),
        "acc5": topk_accuracy(z, y, 5) if c >= 5 else float("nan"),
        "mean_per_class_recall": mean_per_class_recall(z, y),
        "n": int(y.numel()),
        "per_class_recall": per_class,
    }
