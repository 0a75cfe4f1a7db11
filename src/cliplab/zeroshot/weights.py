"""Zero-shot classifiers from class names and prompt ensembles (Radford et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cliplab._validation import as_features, l2_normalize
from cliplab.models.base import Model
from cliplab.zeroshot.templates import Templates, class_prompts


def zeroshot_weights(
    model: Model,
    classnames: Sequence[str],
    templates: Templates = None,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Class weights ``W [C, D]``: ``W_c = norm(mean_t norm(enc(t(c))))`` over the class's prompts.

    ``templates``: see :func:`~cliplab.zeroshot.templates.class_prompts` — format strings with ``{}`` or
    ``{c}``, a set name, a dict class → sentences (CuPL descriptions), or a list combining them (CuPL's
    ensemble: the class's template prompts and descriptions pooled before the mean). This is CLIP_benchmark's
    ``zero_shot_classifier`` (the logit scale aside, which does not change a ranking).

    For Euclidean-geometry models the prompt embeddings are averaged without normalisation.
    Zero-shot logits: ``logit_scale · f @ W.T`` (see ``zeroshot_logits``).
    """
    prompts = class_prompts(classnames, templates)
    flat = [p for group in prompts for p in group]
    emb = model.encode_texts(flat, batch_size=batch_size, progress=progress)
    cosine = model.geometry == "cosine"
    if cosine:
        emb = l2_normalize(emb)
    out, start = [], 0
    for group in prompts:
        mean = emb[start : start + len(group)].mean(0)
        out.append(l2_normalize(mean) if cosine else mean)
        start += len(group)
    return torch.stack(out)


def zeroshot_logits(
    image_features: torch.Tensor,
    weights: torch.Tensor,
    logit_scale: float = 100.0,
    logit_bias: float | None = None,
    geometry: str = "cosine",
) -> torch.Tensor:
    """``s · f @ Wᵀ (+ b)`` (cosine) or ``−s · ‖f − W‖²/D (+ b)`` (Euclidean): ``Model.logits``'s function."""
    from cliplab.models.geometry import feature_logits

    f = as_features(image_features, "image features")
    w = as_features(weights, "class weights", dim=f.shape[1])
    if geometry not in ("cosine", "euclidean"):
        raise ValueError(f"unknown geometry {geometry!r}; expected 'cosine' or 'euclidean'")
    return feature_logits(f, w, logit_scale, logit_bias, geometry)
