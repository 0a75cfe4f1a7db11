"""Group robustness metrics (Sagawa et al., "Distributionally Robust Neural Networks", ICLR 2020).

Samples carry a group id (e.g. Waterbirds' (label, background) pairs). ``acc_g`` = accuracy over the
samples of group ``g``; worst-group accuracy = ``min_g acc_g`` over the groups present; average accuracy =
accuracy over all samples (each sample weighted equally, so groups by their size); mean group accuracy =
the unweighted mean of the ``acc_g``.
"""

from __future__ import annotations

from typing import Any

import torch

from cliplab._validation import ArrayLike, as_labels, as_tensor

__all__ = ["group_accuracies", "group_robustness", "worst_group_accuracy"]


def _correct_groups(pred: ArrayLike, labels: ArrayLike, groups: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    p = as_tensor(pred, "pred", dtype=None)
    if p.ndim == 2:  # logits or scores [N, C]
        p = p.argmax(1)
    p = as_tensor(p, "pred", dtype=torch.int64, ndim=1)
    y = as_labels(labels, "labels", n=p.shape[0])
    g = as_tensor(groups, "groups", dtype=torch.int64, ndim=1)
    if g.shape[0] != p.shape[0]:
        raise ValueError(f"groups has {g.shape[0]} entries but there are {p.shape[0]} predictions")
    return (p == y), g


def group_accuracies(pred: ArrayLike, labels: ArrayLike, groups: ArrayLike) -> dict[int, float]:
    """``{group id: accuracy of its samples}`` for every group present, in ascending id order.

    ``pred`` holds predicted classes ``[N]`` or logits ``[N, C]`` (argmax taken); ``labels`` and ``groups`` ``[N]``.
    """
    correct, g = _correct_groups(pred, labels, groups)
    ids, inverse = torch.unique(g, return_inverse=True)
    hits = torch.zeros(ids.numel(), dtype=torch.float64).index_add_(0, inverse, correct.double())
    counts = torch.bincount(inverse, minlength=ids.numel()).double()
    return {int(i): float(h / n) for i, h, n in zip(ids, hits, counts)}


def worst_group_accuracy(pred: ArrayLike, labels: ArrayLike, groups: ArrayLike) -> float:
    """``min_g acc_g`` over the groups present in ``groups``."""
    return min(group_accuracies(pred, labels, groups).values())


def group_robustness(pred: ArrayLike, labels: ArrayLike, groups: ArrayLike) -> dict[str, Any]:
    """``worst_group_accuracy``, ``worst_group`` (its id), ``average_accuracy`` (over all samples),
    ``mean_group_accuracy`` (unweighted over groups) and ``group_accuracies``."""
    correct, _ = _correct_groups(pred, labels, groups)
    per_group = group_accuracies(pred, labels, groups)
    worst = min(per_group, key=lambda k: per_group[k])
    return {
        "worst_group_accuracy": per_group[worst],
        "worst_group": worst,
        "average_accuracy": float(correct.double().mean()),
        "mean_group_accuracy": sum(per_group.values()) / len(per_group),
        "group_accuracies": per_group,
    }
