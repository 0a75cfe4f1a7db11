"""Semantic segmentation metrics over a whole dataset (MMSegmentation's ``IoUMetric`` convention).

For every class ``c`` the intersection ``|pred = c ∧ target = c|`` and the union
``|pred = c| + |target = c| − intersection`` are summed over all valid pixels (``target ≠ ignore_index``)
of all images before dividing: ``IoU_c = I_c / U_c`` (NaN when ``U_c = 0``, the class absent from both
prediction and ground truth), ``mIoU = nanmean_c IoU_c``, ``pixel_acc = Σ_c I_c / #valid pixels`` (aAcc),
``acc_c = I_c / |target = c|`` and ``macc = nanmean_c acc_c`` (mAcc). Not per-image averages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cliplab._validation import ArrayLike, as_tensor

__all__ = ["segmentation_metrics"]


def _label_maps(x: ArrayLike | Sequence[ArrayLike], name: str) -> list[torch.Tensor]:
    """One stacked ``[N, H, W]`` (or ``[H, W]``) array, or a sequence of per-image label maps."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return [as_tensor(x, name, dtype=torch.int64).detach().cpu()]
    if not isinstance(x, Sequence) or len(x) == 0:
        raise ValueError(f"{name} must be an array of label maps or a non-empty sequence of them")
    return [as_tensor(a, f"{name}[{i}]", dtype=torch.int64).detach().cpu() for i, a in enumerate(x)]


def segmentation_metrics(
    pred: ArrayLike | Sequence[ArrayLike],
    target: ArrayLike | Sequence[ArrayLike],
    num_classes: int,
    ignore_index: int = 255,
) -> dict[str, Any]:
    """``miou``, ``per_class_iou`` (NumPy ``[num_classes]``, NaN for classes with an empty union), ``pixel_acc``,
    ``macc`` and ``per_class_acc`` of predicted label maps against ground-truth label maps.

    ``pred`` and ``target`` are one stacked array or matching sequences of per-image arrays (sizes may
    differ between images) of class indices in ``[0, num_classes)``; target pixels equal to
    ``ignore_index`` are skipped. Totals are accumulated over all images (MMSegmentation ``IoUMetric``).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    preds, targets = _label_maps(pred, "pred"), _label_maps(target, "target")
    if len(preds) != len(targets):
        raise ValueError(f"pred has {len(preds)} images but target has {len(targets)}")
    for i, (p, t) in enumerate(zip(preds, targets)):
        if p.shape != t.shape:
            where = "" if len(preds) == 1 else f"[{i}]"
            raise ValueError(f"pred{where} has shape {tuple(p.shape)} but target{where} has {tuple(t.shape)}")
    c = int(num_classes)
    confusion = torch.zeros(c * c, dtype=torch.int64)  # rows: target class, columns: predicted class
    for i, (p, t) in enumerate(zip(preds, targets)):
        valid = t != ignore_index
        p, t = p[valid], t[valid]  # 1-D
        for what, v in (("target", t), ("pred", p)):
            if v.numel() and (int(v.min()) < 0 or int(v.max()) >= c):
                bad = int(v.min()) if int(v.min()) < 0 else int(v.max())
                raise ValueError(
                    f"{what} (image {i}) holds class {bad}, outside [0, {c}) "
                    f"(num_classes={c}, ignore_index={ignore_index})"
                )
        confusion += torch.bincount(t * c + p, minlength=c * c)
    cm = confusion.reshape(c, c).double().numpy()
    intersect = np.diag(cm)
    area_target, area_pred = cm.sum(1), cm.sum(0)
    union = area_target + area_pred - intersect
    n_valid = cm.sum()
    if n_valid == 0:
        raise ValueError(f"every target pixel equals ignore_index={ignore_index}; nothing to score")
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, intersect / union, np.nan)
        acc = np.where(area_target > 0, intersect / area_target, np.nan)
    return {
        "miou": float(np.nanmean(iou)),  # some class has a non-empty union: there are valid pixels
        "per_class_iou": iou,
        "pixel_acc": float(intersect.sum() / n_valid),
        "macc": float(np.nanmean(acc)),
        "per_class_acc": acc,
    }
