"""anomaly_metrics: image/pixel AUROC and AP against scikit-learn, F1-max against a brute-force loop, PRO on
hand-made regions and against a threshold-by-threshold re-implementation of the MVTec AD procedure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from cliplab.metrics import anomaly_metrics


def _f1_max_brute(scores: np.ndarray, positive: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & positive)
        fp = np.sum(pred & ~positive)
        fn = np.sum(~pred & positive)
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn)
        best = max(best, 2 * p * r / (p + r) if p + r else 0.0)
    return best


def _trapezoid_to(x: list[float], y: list[float], x_max: float) -> float:
    """Area under the polyline through (x, y) for x ≤ x_max, walking segment by segment."""
    area = 0.0
    for (x0, y0), (x1, y1) in zip(zip(x, y), zip(x[1:], y[1:])):
        if x0 >= x_max:
            break
        if x1 > x_max:
            y1 = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
            x1 = x_max
        area += (x1 - x0) * (y0 + y1) / 2
    return area


def _pro_reference(maps: list[np.ndarray], masks: list[np.ndarray], x_max: float = 0.3) -> float:
    """MVTec AD procedure, one threshold at a time: 8-connected regions, FPR over normal pixels of all images,
    PRO = mean over all regions of the covered share; curve from (0, 0) to (1, 1); trapezoid to x_max / x_max."""
    regions, normal_scores = [], []
    for a, m in zip(maps, masks):
        labeled, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [a[labeled == k] for k in range(1, n + 1)]
        normal_scores.append(a[labeled == 0])
    normal = np.concatenate(normal_scores)
    thresholds = np.unique(np.concatenate([a.ravel() for a in maps]))[::-1]
    fprs, pros = [0.0], [0.0]
    for t in thresholds:
        fprs.append(float(np.mean(normal >= t)))
        pros.append(float(np.mean([np.mean(r >= t) for r in regions])))
    fprs.append(1.0)
    pros.append(1.0)
    return _trapezoid_to(fprs, pros, x_max) / x_max


def _random_maps(seed: int, n: int = 6, h: int = 12, w: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n // 2 + 1):
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
            masks[i, y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = True
    masks[0, 9, 0] = masks[0, 10, 1] = True  # a diagonal pair: one region only with 8-connectivity
    maps = np.round(rng.random((n, h, w)) + 0.6 * masks, 2)  # rounding makes ties
    return maps, masks


def test_image_metrics_match_sklearn_and_brute_force_f1():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1)  # many ties
    out = anomaly_metrics(torch.tensor(scores), torch.tensor(labels))
    assert out["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert out["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert out["image_f1_max"] == pytest.approx(_f1_max_brute(scores, labels == 1), abs=1e-12)
    assert set(out) == {"image_auroc", "image_ap", "image_f1_max"}


def test_pixel_metrics_match_sklearn_and_reference_pro():
    maps, masks = _random_maps(1)
    image_scores = maps.reshape(len(maps), -1).max(1)
    labels = masks.reshape(len(masks), -1).any(1).astype(int)
    out = anomaly_metrics(image_scores, labels, maps, masks)
    flat, positive = maps.ravel(), masks.ravel()
    assert out["pixel_auroc"] == pytest.approx(roc_auc_score(positive, flat), abs=1e-12)
    assert out["pixel_ap"] == pytest.approx(average_precision_score(positive, flat), abs=1e-12)
    assert out["pixel_f1_max"] == pytest.approx(_f1_max_brute(flat, positive), abs=1e-12)
    assert out["pro"] == pytest.approx(_pro_reference(list(maps), list(masks)), abs=1e-12)
    # torch inputs, uint8 0/255 masks and a list of per-image arrays give the same numbers
    as_list = anomaly_metrics(image_scores, labels, [torch.tensor(a) for a in maps], list(masks.astype(np.uint8) * 255))
    assert as_list == pytest.approx(out, abs=1e-12)


def test_pro_on_hand_made_regions():
    # image 1 (4 × 4): region A = 2 pixels, region B = 4 pixels joined only diagonally (3 regions if 4-connected);
    # image 2 (2 × 5): normal. Normal pixels: 10 + 10 = 20.
    m1 = np.zeros((4, 4), dtype=bool)
    m1[0, 0] = m1[0, 1] = True  # A
    m1[1, 3] = m1[2, 2] = m1[3, 1] = m1[3, 2] = True  # B
    m2 = np.zeros((2, 5), dtype=bool)
    a1, a2 = np.full((4, 4), 0.1), np.full((2, 5), 0.1)
    a1[0, 0] = a1[0, 1] = a1[1, 3] = 0.9  # t = 0.9: A fully covered, 1/4 of B
    a2[0, 0] = 0.8  # t = 0.8: first false positive
    a1[2, 2] = 0.7  # t = 0.7: 2/4 of B
    a1[0, 3] = a1[1, 0] = a2[1, 0] = a2[1, 1] = 0.5  # t = 0.5: 4 more false positives
    # curve: (0, 0) (0, 5/8) (1/20, 5/8) (1/20, 3/4) (5/20, 3/4) then (1, 1) at t = 0.1, and (1, 1)
    y_at_03 = 0.75 + (1.0 - 0.75) * (0.3 - 0.25) / (1.0 - 0.25)
    area = 0.05 * 0.625 + (0.25 - 0.05) * 0.75 + (0.3 - 0.25) * (0.75 + y_at_03) / 2
    out = anomaly_metrics([0.9, 0.8], [1, 0], [a1, a2], [m1, m2])
    assert out["pro"] == pytest.approx(area / 0.3, abs=1e-12)
    # with the limit at FPR 0.05 exactly, no interpolation: (0.05 · 5/8) / 0.05
    assert anomaly_metrics([0.9, 0.8], [1, 0], [a1, a2], [m1, m2], pro_max_fpr=0.05)["pro"] == pytest.approx(0.625)


def test_pro_is_one_for_a_perfect_map_and_fast_enough():
    maps, masks = _random_maps(2, n=20, h=128, w=128)
    perfect = masks.astype(np.float32) + 0.01 * np.random.default_rng(0).random(masks.shape, dtype=np.float32)
    out = anomaly_metrics(perfect.reshape(20, -1).max(1), masks.reshape(20, -1).any(1), perfect, masks)
    assert out["pro"] == pytest.approx(1.0) and out["pixel_auroc"] == pytest.approx(1.0)


def test_bad_inputs_are_named():
    maps, masks = _random_maps(3, n=4)
    s, y = maps.reshape(4, -1).max(1), masks.reshape(4, -1).any(1).astype(int)
    with pytest.raises(ValueError, match="both maps and masks"):
        anomaly_metrics(s, y, maps)
    with pytest.raises(ValueError, match="masks\\[1\\] has shape"):
        anomaly_metrics(s, y, maps, [masks[0], masks[1][:, :5], masks[2], masks[3]])
    with pytest.raises(ValueError, match="maps has 3 images but image_scores has 4"):
        anomaly_metrics(s, y, maps[:3], masks[:3])
    with pytest.raises(ValueError, match="no anomalous"):
        anomaly_metrics(s, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        anomaly_metrics(s, [0, 1, 2, 0])
    with pytest.raises(ValueError, match="threshold resized masks"):
        anomaly_metrics(s, y, maps, masks * 0.5)
    with pytest.raises(ValueError, match="pro_max_fpr"):
        anomaly_metrics(s, y, maps, masks, pro_max_fpr=0.0)
