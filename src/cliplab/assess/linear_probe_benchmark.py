"""CLIP_benchmark's linear-probe task on cached features (LAION-AI/CLIP_benchmark, ``metrics/linear_probe.py``).

A logistic regression (``torch.nn.Linear`` + cross-entropy) trained with AdamW on the L2-normalised image
features, with CLIP_benchmark's defaults: lr 0.1, 10 epochs, batch 64, a cosine learning-rate schedule without
warm-up (``lr_t = ½(1 + cos(π t / T)) · lr`` over the T = epochs · batches steps), seed 0, all training images
(``fewshot_k = -1``). The weight decay is searched on a validation split as CLIP's paper (A.3) sweeps the
L2 penalty: over ``logspace(-6, 2, 97)``, first the 7 points ``logspace(-6, 2, 7)``, then around the best one
at steps of 8, 4, 2, 1 grid points (three trainings each, best validation top-1 wins, the first best on a
tie; a probe that diverged, as at weight decay 100 where AdamW's decoupled decay multiplies the weights by
1 − lr·wd = −9 each step, scores 0 — CLIP_benchmark ranks its NaN logits arbitrarily); the final probe is
retrained with that weight decay on train + validation (train only for few-shot ``k``), and evaluated on the
test features. Without a validation split the weight decay is 0.

Each training seeds torch's generator with ``seed`` (kept local: the caller's random state is restored), so the
probe's initialisation and batch order are those of CLIP_benchmark's ``train`` for the same seed on the CPU.
Metrics: ``lp_acc1``, ``lp_acc5`` (NaN with fewer than 5 classes; CLIP_benchmark's own test,
``target.max() >= 5``, also gives NaN for exactly 5 classes), ``lp_mean_per_class_recall`` (balanced accuracy).
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, random_split

from cliplab._validation import ArrayLike, as_features, as_labels
from cliplab.metrics.classification import mean_per_class_recall, topk_accuracy

__all__ = ["WD_GRID", "WD_START", "linear_probe_benchmark"]

#: the weight-decay grid (CLIP_benchmark: ``np.logspace(-6, 2, num=97)``)
WD_GRID: tuple[float, ...] = tuple(np.logspace(-6, 2, num=97).tolist())
#: indices of the first sweep's 7 points, ``np.logspace(-6, 2, num=7)``, in the grid
WD_START: tuple[int, ...] = tuple(i for i, v in enumerate(WD_GRID) if v in np.logspace(-6, 2, num=7).tolist())


def _cosine_lr(step: int, steps: int, lr: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / steps)) * lr


def _train(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    weight_decay: float,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    seed: int,
) -> torch.nn.Linear:
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # also when called under no_grad
        torch.manual_seed(seed)
        probe = torch.nn.Linear(x.shape[1], n_classes)
        # batches of indices: the same random stream as a DataLoader over the features, without per-item collation
        rows = cast(Dataset[int], range(len(y)))  # a range is a map-style dataset (len and indexing)
        loader: DataLoader[int] = DataLoader(rows, batch_size=batch_size, shuffle=True)
        opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
        steps = epochs * len(loader)
        for epoch in range(epochs):
            for i, idx in enumerate(loader):
                xb, yb = x[idx], y[idx]
                for group in opt.param_groups:
                    group["lr"] = _cosine_lr(i + epoch * len(loader), steps, lr)
                opt.zero_grad()
                F.cross_entropy(probe(xb), yb).backward()
                opt.step()
    return probe


def _logits(probe: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return probe(x)


def _few_shot(y: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """CLIP_benchmark's draw: walk a random permutation, keep the first ``k`` of each class."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    counts: dict[int, int] = {}
    keep = []
    for p in perm.tolist():
        c = int(y[p])
        if counts.get(c, 0) < k:
            counts[c] = counts.get(c, 0) + 1
            keep.append(p)
    short = {c: n for c, n in counts.items() if n < k}
    if short:
        raise ValueError(f"fewshot_k={k} but {len(short)} class(es) have fewer training images: {short}")
    return torch.tensor(keep, dtype=torch.long)


def linear_probe_benchmark(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    test_labels: ArrayLike,
    *,
    val_features: ArrayLike | None = None,
    val_labels: ArrayLike | None = None,
    val_proportion: float | None = None,
    fewshot_k: int = -1,
    lr: float = 0.1,
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    normalize: bool = True,
    num_classes: int | None = None,
    num_threads: int | None = 1,
) -> dict[str, Any]:
    """CLIP_benchmark's linear probe (module docstring): weight decay searched on validation, test metrics.

    Validation: ``val_features``/``val_labels``, or ``val_proportion`` of the training features split off
    (``torch.utils.data.random_split`` with a generator seeded by ``seed``), or none (weight decay 0).
    ``fewshot_k``: images per class drawn from the training features (-1: all). ``num_threads``: torch threads
    while training (restored after; None: unchanged). One by default: the probe's 64-row batches are too small
    for threads to help, and on a busy machine their synchronisation made it 30× slower (126 s vs 3.5 s for
    1000 × 64-d features on 2 shared cores).

    Returns ``lp_acc1``, ``lp_acc5``, ``lp_mean_per_class_recall``, ``weight_decay`` (the chosen one),
    ``val_acc1`` (weight decay → validation top-1 of every probe of the search), the settings, and the sizes.
    """
    xtr = as_features(train_features, "train_features")
    ytr = as_labels(train_labels, "train_labels", n=xtr.shape[0])
    xte = as_features(test_features, "test_features", dim=xtr.shape[1])
    yte = as_labels(test_labels, "test_labels", n=xte.shape[0])
    if (val_features is None) != (val_labels is None):
        raise ValueError("give both val_features and val_labels, or neither")
    if val_features is not None and val_proportion is not None:
        raise ValueError(
            "val_features and val_proportion are mutually exclusive (CLIP_benchmark: --val_split or --val_proportion)"
        )
    if val_proportion is not None and not 0 < val_proportion < 1:
        raise ValueError(f"val_proportion must be in (0, 1), got {val_proportion}")
    for name, value in (("lr", lr), ("epochs", epochs), ("batch_size", batch_size)):
        if not value > 0 or (name != "lr" and int(value) != value):
            raise ValueError(f"{name} must be positive{'' if name == 'lr' else ' integer'}, got {value!r}")
    if fewshot_k == 0 or fewshot_k < -1:
        raise ValueError(f"fewshot_k must be -1 (all images) or a positive number of images per class, got {fewshot_k}")
    if normalize:
        xtr, xte = F.normalize(xtr.float(), dim=-1), F.normalize(xte.float(), dim=-1)
    xva = yva = None
    if val_features is not None:
        if val_labels is None:
            raise ValueError("val_features needs val_labels")
        xva = as_features(val_features, "val_features", dim=xtr.shape[1]).float()
        yva = as_labels(val_labels, "val_labels", n=xva.shape[0])
        xva = F.normalize(xva, dim=-1) if normalize else xva
    elif val_proportion is not None:
        tr_split, va_split = random_split(
            cast(Dataset[int], range(len(ytr))),  # a range is a map-style dataset (len and indexing)
            [1 - val_proportion, val_proportion],
            generator=torch.Generator().manual_seed(seed),
        )
        if not len(tr_split) or not len(va_split):
            raise ValueError(f"val_proportion={val_proportion} leaves an empty split of {len(ytr)} training images")
        tr_idx, va_idx = torch.tensor(list(tr_split.indices)), torch.tensor(list(va_split.indices))  # range: i ↦ i
        xtr, ytr, xva, yva = xtr[tr_idx], ytr[tr_idx], xtr[va_idx], ytr[va_idx]
    if fewshot_k > 0:
        keep = _few_shot(ytr, fewshot_k, seed)
        xtr, ytr = xtr[keep], ytr[keep]
    labels = [ytr, yte] + ([yva] if yva is not None else [])
    c = num_classes if num_classes is not None else int(max(int(t.max()) for t in labels)) + 1
    fit = {"lr": lr, "epochs": int(epochs), "batch_size": int(batch_size), "seed": seed}

    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _search_and_fit(xtr, ytr, xva, yva, xte, yte, c, fit, fewshot_k, normalize)
    finally:
        torch.set_num_threads(threads)


def _search_and_fit(
    xtr: torch.Tensor,
    ytr: torch.Tensor,
    xva: torch.Tensor | None,
    yva: torch.Tensor | None,
    xte: torch.Tensor,
    yte: torch.Tensor,
    c: int,
    fit: dict[str, Any],
    fewshot_k: int,
    normalize: bool,
) -> dict[str, Any]:
    searched: dict[int, float] = {}

    def peak(indices: list[int], xv: torch.Tensor, yv: torch.Tensor) -> int:
        best, best_acc = 0, 0.0  # as CLIP_benchmark's find_peak: index 0 unless some accuracy beats 0
        for idx in indices:
            if idx not in searched:
                probe = _train(xtr, ytr, c, WD_GRID[idx], **fit)
                z = _logits(probe, xv)
                searched[idx] = topk_accuracy(z, yv, 1) if bool(torch.isfinite(z).all()) else 0.0
            if best_acc < searched[idx]:
                best, best_acc = idx, searched[idx]
        return best

    if xva is not None and yva is not None:  # given together
        at = peak(list(WD_START), xva, yva)
        span = 8
        while span > 0:
            at = peak([max(at - span, 0), at, min(at + span, len(WD_GRID) - 1)], xva, yva)
            span //= 2
        wd = WD_GRID[at]
        if fewshot_k < 0:  # full training: train + validation
            xtr, ytr = torch.cat([xtr, xva]), torch.cat([ytr, yva])
    else:
        wd = 0.0
    probe = _train(xtr, ytr, c, wd, **fit)
    z = _logits(probe, xte)
    return {
        "lp_acc1": topk_accuracy(z, yte, 1),
        "lp_acc5": topk_accuracy(z, yte, 5) if c >= 5 else float("nan"),
        "lp_mean_per_class_recall": mean_per_class_recall(z, yte),
        "weight_decay": wd,
        "val_acc1": {f"{WD_GRID[i]:.3g}": a for i, a in sorted(searched.items())},
        **fit,
        "fewshot_k": fewshot_k,
        "normalized": normalize,
        "n_train": int(len(ytr)),
        "n_val": 0 if yva is None else int(len(yva)),
        "n_test": int(len(yte)),
        "n_classes": c,
    }
