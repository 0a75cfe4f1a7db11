"""``anomaly_evaluate``: per-category anomaly-detection metrics of each method, shot count and seed.

For every category of the test set, the test images are encoded once (``dense_features``, kept in memory) and
every (method, shots, seed) reuses them; the ``shots`` normal references of a category are drawn from the
train split's images of that category with ``numpy.random.default_rng([seed, shots])`` (without replacement)
and encoded once per category. ``winclip`` at 0 shots is WinCLIP, at ``k ≥ 1`` shots WinCLIP+; ``patchcore``
needs ``k ≥ 1`` (its 0-shot rows are left out). Maps are put back on each image's own frame
(``to_image_frame``: the model preprocess's resize and centre crop undone, the cropped-off border given the map's
minimum) before the pixel metrics, which compare them with masks at the image's size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cliplab.anomaly.detectors import PatchCore, WinCLIP
from cliplab.anomaly.prompts import state_embeddings
from cliplab.anomaly.windows import DenseFeatures, dense_features
from cliplab.metrics import anomaly_metrics

__all__ = ["METHODS", "METRIC_KEYS", "anomaly_evaluate", "reference_indices", "to_image_frame"]

METHODS = ("winclip", "patchcore")
#: the metrics of each row (pixel ones only when the data has masks)
METRIC_KEYS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pro")


def reference_indices(pool: Sequence[int], shots: int, seed: int) -> list[int]:
    """``shots`` of ``pool`` drawn with ``default_rng([seed, shots])`` without replacement (sorted)."""
    if shots > len(pool):
        raise ValueError(f"{shots} shots asked but only {len(pool)} normal reference images are available")
    rng = np.random.default_rng([int(seed), int(shots)])
    return sorted(int(pool[i]) for i in rng.choice(len(pool), size=shots, replace=False))


def _resize(maps: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if maps.shape[1:] == tuple(shape):
        return maps
    t = torch.from_numpy(np.ascontiguousarray(maps)).unsqueeze(1)
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False).squeeze(1).numpy()


def to_image_frame(anomaly_map: np.ndarray, shape: tuple[int, int], preprocess: Any) -> np.ndarray:
    """A map at the model's input size back onto the original image ``shape`` (H, W): the preprocess's resize
    and centre crop undone (``cliplab.imaging.Preprocess``), the part the crop cut off filled with the map's
    minimum; a plain bilinear resize when the preprocess is not of that kind or the crop pads."""
    resized = getattr(preprocess, "_resized_size", None)
    crop = getattr(preprocess, "crop", None)
    h, w = int(shape[0]), int(shape[1])
    if resized is None:
        return _resize(anomaly_map[None], (h, w))[0]
    rw, rh = resized(w, h)
    if crop is None:
        return _resize(anomaly_map[None], (h, w))[0]
    ch, cw = int(crop[0]), int(crop[1])
    if rh < ch or rw < cw:
        return _resize(anomaly_map[None], (h, w))[0]
    if getattr(preprocess, "crop_round", False):
        top, left = int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0))
    else:
        top, left = (rh - ch) // 2, (rw - cw) // 2
    canvas = np.full((rh, rw), float(anomaly_map.min()), dtype=np.float32)
    canvas[top : top + ch, left : left + cw] = _resize(anomaly_map[None].astype(np.float32), (ch, cw))[0]
    return _resize(canvas[None], (h, w))[0]


def _detector(method: str, model: Any, category: str, seed: int, options: dict[str, Any]) -> Any:
    if method == "winclip":
        return WinCLIP(
            model, category, scales=options["scales"], window_features=options["window_features"],
            text=options["text"],
        )  # fmt: skip
    return PatchCore(model, coreset=options["coreset"], seed=seed)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def anomaly_evaluate(
    model: Any,
    test: Any,
    train: Any,
    *,
    methods: Sequence[str] = METHODS,
    shots: Sequence[int] = (0, 1, 2, 4),
    seeds: Sequence[int] = (0,),
    scales: Sequence[int] = (2, 3),
    window_features: str = "tokens",
    coreset: float | None = None,
    batch_size: int = 32,
    cases: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Metrics per category × method × shots (averaged over ``seeds``), their mean over categories, seconds per
    test image, and the ``cases`` best- and worst-scored anomalous test images of each (method, largest shots)
    with their maps (``"cases"``: live arrays, left out of JSON by the callers).

    ``test``/``train``: anomaly datasets (``labels``, ``categories``, ``image(i)``, ``mask(i)``); ``train`` holds
    the normal references (None when only 0 shots are asked)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; accepted: {', '.join(METHODS)}")
    if any(int(k) < 0 for k in shots):
        raise ValueError(f"shots must be >= 0, got {list(shots)}")
    if any(int(k) > 0 for k in shots) and train is None:
        raise ValueError("few-shot rows need a train split of normal reference images")
    options: dict[str, Any] = {"scales": tuple(scales), "window_features": window_features, "coreset": coreset}
    enc_scales = tuple(scales) if "winclip" in methods else ()
    has_masks = bool(getattr(test, "has_masks", True))
    labels = np.asarray(test.labels, dtype=np.int64)
    categories = list(test.categories)
    train_cats = list(train.categories) if train is not None else []
    rows: list[dict[str, Any]] = []
    timing: dict[str, list[float]] = {}
    kept: list[dict[str, Any]] = []
    top = max(shots)

    def frame(m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return to_image_frame(m, (int(shape[0]), int(shape[1])), getattr(model, "preprocess", None))

    def encode(ds: Any, idx: Sequence[int]) -> DenseFeatures:
        return dense_features(
            model, [ds.image(int(i)) for i in idx], enc_scales, window_features=window_features, batch_size=batch_size
        )

    for category in sorted(set(categories)):
        idx = [i for i, c in enumerate(categories) if c == category]
        y = labels[idx]
        if y.min() == y.max():
            rows.append({"category": category, "skipped": "needs both normal and anomalous test images"})
            continue
        if progress:
            progress(f"{category}: encoding {len(idx)} test images")
        start = time.perf_counter()
        feats = encode(test, idx)
        encode_s = (time.perf_counter() - start) / len(idx)
        masks = [test.mask(i) for i in idx] if has_masks else None
        shapes = [m.shape for m in masks] if masks else [test.image(i).size[::-1] for i in idx]
        pool = [i for i, c in enumerate(train_cats) if c == category]
        try:
            draws = {(k, s): reference_indices(pool, int(k), int(s)) for k in shots for s in seeds if k > 0}
        except ValueError as err:
            raise ValueError(f"category {category!r}: {err} in the train split") from err
        needed = sorted({i for d in draws.values() for i in d})
        refs = encode(train, needed) if needed else None
        where = {i: p for p, i in enumerate(needed)}
        options["text"] = state_embeddings(model, category) if "winclip" in methods else None
        for method in methods:
            for k in shots:
                if method == "patchcore" and k == 0:
                    continue
                per_seed: list[dict[str, Any]] = []
                for seed in seeds if k > 0 else seeds[:1]:
                    t0 = time.perf_counter()
                    det = _detector(method, model, category, int(seed), options)
                    normal = refs.select([where[i] for i in draws[(k, seed)]]) if refs is not None and k > 0 else None
                    det.fit(normal)
                    scores, maps = det.score(feats)
                    timing.setdefault(method, []).append(encode_s + (time.perf_counter() - t0) / len(idx))
                    resized = [frame(maps[j], shapes[j]) for j in range(len(idx))]
                    m = anomaly_metrics(scores, y, resized, masks) if masks else anomaly_metrics(scores, y)
                    per_seed.append(m)
                    if k == top and seed == seeds[0] and cases:
                        kept.extend(_cases(method, int(k), category, idx, y, scores, resized, cases))
                row: dict[str, Any] = {"category": category, "method": method, "shots": int(k), "n": len(idx)}
                row.update({key: _mean([m.get(key) for m in per_seed]) for key in METRIC_KEYS if key in per_seed[0]})
                row["seeds"] = len(per_seed)
                rows.append(row)
    summary = _summary([r for r in rows if "skipped" not in r])
    return {
        "rows": rows,
        "mean": summary,
        "seconds_per_image": {k: float(np.mean(v)) for k, v in timing.items()},
        "methods": list(methods),
        "shots": [int(k) for k in shots],
        "seeds": [int(s) for s in seeds],
        "window_features": window_features,
        "scales": list(scales),
        "n_test": len(labels),
        "cases": kept,
    }


def _cases(
    method: str, shots: int, category: str, idx: list[int], y: np.ndarray, scores: np.ndarray,
    maps: list[np.ndarray], n: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """The ``n`` highest- and lowest-scored anomalous images (best and worst detected), with their maps."""
    anomalous = np.flatnonzero(y == 1)
    order = anomalous[np.argsort(-scores[anomalous], kind="stable")]
    out = []
    for kind, picks in (("best", order[:n]), ("worst", order[::-1][:n])):
        for j in picks:
            out.append({
                "method": method, "shots": shots, "category": category, "index": int(idx[j]), "kind": kind,
                "score": float(scores[j]), "map": maps[j],
            })  # fmt: skip
    return out


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mean over categories of each (method, shots)."""
    out = []
    keys = sorted({(r["method"], r["shots"]) for r in rows}, key=lambda t: (METHODS.index(t[0]), t[1]))
    for method, k in keys:
        group = [r for r in rows if r["method"] == method and r["shots"] == k]
        row: dict[str, Any] = {"method": method, "shots": k, "categories": len(group)}
        row.update({key: _mean([r.get(key) for r in group]) for key in METRIC_KEYS if key in group[0]})
        out.append(row)
    return out
