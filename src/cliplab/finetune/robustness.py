"""Accuracy on the training distribution vs under shift, along the WiSE-FT curve (the "effective robustness" view).

``robustness_sweep`` scores the zero-shot classifier, the fine-tuned one and their WiSE-FT mixtures for each
``α`` on an in-distribution test set and on shifted sets (the built-in world's unseen styles, corruptions, or
``--shift-data``). ``ood_gain`` is each point's mean shifted accuracy minus the zero-shot's; WiSE-FT's usual
picture is a curve that bows above the straight line between its two endpoints (``ood_above_line``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cliplab.finetune.classifier import ImageClassifier, wise_ft_classifier

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def robustness_sweep(
    zero_shot: ImageClassifier,
    finetuned: ImageClassifier,
    id_test: Any,
    shifted: Mapping[str, Any],
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    progress: bool = False,
) -> dict[str, Any]:
    """``{"alphas", "id", "ood": {name: [...]}, "ood_mean", "ood_gain", "ood_above_line", "best_alpha"}``.

    Index ``i`` of every list is ``α = alphas[i]`` (α = 0: zero-shot, α = 1: fine-tuned). ``best_alpha`` is
    chosen on ID accuracy + mean shifted accuracy of these sets: report it as an oracle, not a selection.
    """
    if not shifted:
        raise ValueError("robustness_sweep needs at least one shifted test set")
    alphas = [float(a) for a in alphas]
    out: dict[str, Any] = {"alphas": alphas, "id": [], "ood": {k: [] for k in shifted}}
    for a in tqdm(alphas, disable=not progress, desc="WiSE-FT alphas", unit="alpha"):
        clf = zero_shot if a == 0 else finetuned if a == 1 else wise_ft_classifier(zero_shot, finetuned, a)
        out["id"].append(clf.accuracy(id_test))
        for name, ds in shifted.items():
            out["ood"][name].append(clf.accuracy(ds))
    ood_mean = np.mean([out["ood"][k] for k in shifted], axis=0)
    out["ood_mean"] = [float(v) for v in ood_mean]
    zs_ood = float(ood_mean[alphas.index(0.0)]) if 0.0 in alphas else None
    out["ood_gain"] = None if zs_ood is None else [float(v - zs_ood) for v in ood_mean]
    if 0.0 in alphas and 1.0 in alphas:
        i0, i1 = alphas.index(0.0), alphas.index(1.0)
        line = [
            ood_mean[i0]
            + (out["id"][i] - out["id"][i0]) * (ood_mean[i1] - ood_mean[i0]) / ((out["id"][i1] - out["id"][i0]) or 1.0)
            for i in range(len(alphas))
        ]
        out["ood_above_line"] = [float(o - ln) for o, ln in zip(ood_mean, line)]
    score = np.asarray(out["id"]) + ood_mean
    out["best_alpha"] = alphas[int(np.argmax(score))]
    return out
