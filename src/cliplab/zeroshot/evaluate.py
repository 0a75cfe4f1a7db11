"""End-to-end zero-shot classification of a dataset: embed (cached), build class weights, score."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from cliplab.data.base import Dataset
from cliplab.features import Features, embed
from cliplab.metrics.classification import classification_report
from cliplab.models.base import Model
from cliplab.zeroshot.templates import Templates, templates_for
from cliplab.zeroshot.weights import zeroshot_logits, zeroshot_weights


def check_classnames(features: Features, classnames: Sequence[str] | None) -> list[str]:
    """The class names to classify into; they must match the labels' class count."""
    names = list(classnames) if classnames is not None else features.classnames
    if not names:
        raise ValueError("no class names: the dataset has none and none were given")
    if features.labels is not None and features.labels.numel() and int(features.labels.max()) >= len(names):
        raise ValueError(
            f"labels go up to class {int(features.labels.max())} but only {len(names)} class names were given"
        )
    if features.classnames and classnames is not None and len(features.classnames) != len(names):
        raise ValueError(f"{len(names)} class names given but the dataset has {len(features.classnames)} classes")
    return names


def zeroshot_evaluate(
    model: Model,
    data: Dataset | Features,
    *,
    classnames: Sequence[str] | None = None,
    templates: Templates = None,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None | bool = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Zero-shot metrics (``acc1``, ``acc5``, ``mean_per_class_recall``, per-class recall) on labelled data.

    ``templates`` default to the dataset's own (``Dataset.templates``), else ``"a photo of a {}."`` (logged);
    ``report["templates"]`` records which (``cliplab.zeroshot.templates.describe_templates``).
    """
    templates, used = templates_for(templates, data)
    if isinstance(data, Dataset):
        features = embed(model, data, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    else:
        features = data
    if features.labels is None:
        raise ValueError("zero-shot evaluation needs labelled data, but the dataset has no labels")
    names = check_classnames(features, classnames)
    weights = zeroshot_weights(model, names, templates)
    logits = zeroshot_logits(features.images, weights, model.logit_scale, model.logit_bias, model.geometry)
    report = classification_report(logits, features.labels, names)
    report["classnames"] = names
    report["model"] = model.spec
    report["dataset"] = features.meta.get("dataset")
    report["templates"] = used
    return report


__all__ = ["check_classnames", "zeroshot_evaluate"]
