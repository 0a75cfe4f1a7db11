"""segmentation_metrics: dataset-level IoU (MMSegmentation IoUMetric) on hand-made masks, ignore_index, absent class."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cliplab.metrics import segmentation_metrics

IGNORE = 255


def _hand_made() -> tuple[list[np.ndarray], list[np.ndarray]]:
    # 4 classes; class 3 appears in neither prediction nor target -> NaN; image 2 has a different size.
    t1 = np.array([[0, 0, 1], [1, 1, IGNORE]])
    p1 = np.array([[0, 1, 1], [1, 2, 2]])  # the last pixel is ignored although predicted 2
    t2 = np.array([[2, 2], [2, 0], [IGNORE, 1]])
    p2 = np.array([[2, 2], [0, 0], [1, 1]])
    return [p1, p2], [t1, t2]


def _reference(preds, targets, num_classes):
    """Per class, intersection and union summed over the images' valid pixels, by explicit loops."""
    inter = [0] * num_classes
    union = [0] * num_classes
    correct = valid = 0
    for p, t in zip(preds, targets):
        for pv, tv in zip(p.ravel().tolist(), t.ravel().tolist()):
            if tv == IGNORE:
                continue
            valid += 1
            correct += pv == tv
            for c in range(num_classes):
                inter[c] += pv == c and tv == c
                union[c] += pv == c or tv == c
    iou = [i / u if u else math.nan for i, u in zip(inter, union)]
    present = [v for v in iou if not math.isnan(v)]
    return iou, sum(present) / len(present), correct / valid


def test_hand_made_masks_with_ignore_and_absent_class():
    preds, targets = _hand_made()
    out = segmentation_metrics(preds, targets, num_classes=4)
    # by hand: class 0: I = 2 (t1[0,0], t2[1,1]), U = 4 (+ t1[0,1], p2[1,0]); class 1: I = 3 (t1[0,2], t1[1,0],
    # t2[2,1]), U = 5 (+ p1[0,1] predicted 1 on a 0, t1[1,1] predicted 2); class 2: I = 2, U = 4 (+ p1[1,1], t2[1,0])
    assert out["per_class_iou"][:3] == pytest.approx([2 / 4, 3 / 5, 2 / 4])
    assert math.isnan(out["per_class_iou"][3])
    assert out["miou"] == pytest.approx((0.5 + 0.6 + 0.5) / 3)
    assert out["pixel_acc"] == pytest.approx(7 / 10)  # 10 valid pixels, 7 correct
    iou, miou, acc = _reference(preds, targets, 4)
    np.testing.assert_allclose(out["per_class_iou"], iou, equal_nan=True)
    assert out["miou"] == pytest.approx(miou) and out["pixel_acc"] == pytest.approx(acc)


def test_dataset_level_not_per_image_average_and_stacked_input():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, (3, 8, 8))
    targets[rng.random(targets.shape) < 0.1] = IGNORE
    preds = np.where(rng.random(targets.shape) < 0.7, targets % 5, rng.integers(0, 5, targets.shape))
    preds[preds == IGNORE] = 0
    stacked = segmentation_metrics(torch.tensor(preds), torch.tensor(targets), 5)
    listed = segmentation_metrics(list(preds), list(targets), 5)
    iou, miou, acc = _reference(preds, targets, 5)
    for out in (stacked, listed):
        np.testing.assert_allclose(out["per_class_iou"], iou)
        assert out["miou"] == pytest.approx(miou) and out["pixel_acc"] == pytest.approx(acc)
    per_image = np.mean([segmentation_metrics(p, t, 5)["miou"] for p, t in zip(preds, targets)])
    assert stacked["miou"] != pytest.approx(per_image, abs=1e-9)


def test_bad_inputs_are_named():
    preds, targets = _hand_made()
    with pytest.raises(ValueError, match="target \\(image 0\\) holds class 1, outside \\[0, 1\\)"):
        segmentation_metrics(preds, targets, num_classes=1)
    with pytest.raises(ValueError, match="pred\\[1\\] has shape"):
        segmentation_metrics([preds[0], preds[1][:2]], targets, 4)
    with pytest.raises(ValueError, match="pred has 1 images but target has 2"):
        segmentation_metrics(preds[:1], targets, 4)
    with pytest.raises(ValueError, match="num_classes"):
        segmentation_metrics(preds, targets, 0)
    with pytest.raises(ValueError, match="ignore_index"):
        segmentation_metrics([np.zeros((2, 2))], [np.full((2, 2), IGNORE)], 3)
