"""Scoring probes with a model, and each benchmark's metrics.

Scores are the model's similarity ``sim(image, caption)`` (cosine, or ``−‖x − y‖²`` for Euclidean models):
the logit up to its scale and bias, which do not change any comparison.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cliplab.models.base import Model
from cliplab.probes.base import PairProbe, SelectionProbe


def _pair_similarity(model: Model, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """``sim(images[k], texts[k])`` row by row, in the model's geometry."""
    if model.geometry == "cosine":
        return (images * texts).sum(-1)
    return -(images - texts).square().sum(-1)


def _text_features(model: Model, texts: Sequence[str], batch_size: int, progress: bool) -> tuple[torch.Tensor, dict]:
    unique = list(dict.fromkeys(texts))
    feats = model.encode_texts(unique, batch_size=max(batch_size, 64), progress=progress)
    return feats, {t: i for i, t in enumerate(unique)}


def _image_features(
    model: Model,
    probe: SelectionProbe | PairProbe,
    batch_size: int,
    cache_dir: Any,
    progress: bool,
    image_features: torch.Tensor | None,
) -> torch.Tensor:
    if image_features is not None:
        return torch.as_tensor(image_features, dtype=torch.float32)
    from cliplab.features import embed

    return embed(model, probe.images, batch_size=batch_size, cache_dir=cache_dir, progress=progress).images


def selection_scores(
    model: Model,
    probe: SelectionProbe,
    *,
    batch_size: int = 64,
    cache_dir: Any = None,
    progress: bool = False,
    image_features: torch.Tensor | None = None,
) -> list[np.ndarray]:
    """Per item, the score of each of its captions (true first). ``image_features``: precomputed, one per image."""
    img = _image_features(model, probe, batch_size, cache_dir, progress, image_features)
    flat = [c for caps in probe.captions for c in caps]
    txt, pos = _text_features(model, flat, batch_size, progress)
    counts = np.array([len(c) for c in probe.captions])
    rows = torch.from_numpy(np.repeat(probe.image_index, counts))
    cols = torch.tensor([pos[c] for c in flat], dtype=torch.int64)
    s = _pair_similarity(model, img[rows], txt[cols]).numpy()
    return np.split(s, np.cumsum(counts)[:-1])


def selection_metrics(scores: Sequence[np.ndarray], kinds: Sequence[str]) -> dict[str, Any]:
    """Accuracy = share of items whose true caption (index 0) scores strictly above every other caption.

    Returns ``accuracy`` (over all items), ``by_type`` (``{kind: {"accuracy", "n"}}``, in first-seen order) and
    ``macro_accuracy`` (the mean over kinds; ARO's per-relation average).
    """
    correct = np.array([bool(s[0] > np.max(s[1:])) for s in scores])
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(kinds):
        groups[k].append(i)
    by_type = {k: {"accuracy": float(correct[idx].mean()), "n": len(idx)} for k, idx in groups.items()}
    return {
        "accuracy": float(correct.mean()) if correct.size else float("nan"),
        "macro_accuracy": float(np.mean([v["accuracy"] for v in by_type.values()])) if by_type else float("nan"),
        "by_type": by_type,
        "n": int(correct.size),
    }


def pair_scores(
    model: Model,
    probe: PairProbe,
    *,
    batch_size: int = 64,
    cache_dir: Any = None,
    progress: bool = False,
    image_features: torch.Tensor | None = None,
) -> np.ndarray:
    """``s[m, c, i]``: score of caption ``c`` of item ``m`` with its image ``i`` — ``[M, 2, 2]``."""
    img = _image_features(model, probe, batch_size, cache_dir, progress, image_features)
    flat = [c for pair in probe.captions for c in pair]
    txt, pos = _text_features(model, flat, batch_size, progress)
    t = txt[torch.tensor([pos[c] for c in flat])].reshape(len(probe), 2, 1, -1)
    i = img[torch.from_numpy(probe.image_index)].reshape(len(probe), 1, 2, -1)
    t, i = torch.broadcast_tensors(t, i)
    return _pair_similarity(model, i, t).numpy()


def winoground_metrics(s: np.ndarray, tags: Sequence[str] | None = None) -> dict[str, Any]:
    """Winoground's text, image and group scores from ``s[m, c, i]`` (caption ``c``, image ``i``).

    text: ``s[0,0] > s[1,0]`` and ``s[1,1] > s[0,1]``; image: ``s[0,0] > s[0,1]`` and ``s[1,1] > s[1,0]``;
    group: both. ``by_tag`` repeats the three per tag when ``tags`` are given.
    """
    s = np.asarray(s, dtype=float)
    if s.ndim != 3 or s.shape[1:] != (2, 2):
        raise ValueError(f"Winoground scores must have shape [M, 2, 2], got {s.shape}")
    text = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    image = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    group = text & image

    def summary(mask: np.ndarray) -> dict[str, Any]:
        return {
            "text": float(text[mask].mean()),
            "image": float(image[mask].mean()),
            "group": float(group[mask].mean()),
            "n": int(mask.sum()),
        }

    out = summary(np.ones(len(s), dtype=bool))
    if tags is not None:
        tags_arr = np.asarray(tags)
        out["by_tag"] = {str(t): summary(tags_arr == t) for t in dict.fromkeys(tags) if t}
    return out


def evaluate_probe(
    model: Model,
    probe: SelectionProbe | PairProbe,
    *,
    batch_size: int = 64,
    cache_dir: Any = None,
    progress: bool = False,
    image_features: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The probe's metrics for ``model``: :func:`selection_metrics` or :func:`winoground_metrics`, plus its name."""
    kw = dict(batch_size=batch_size, cache_dir=cache_dir, progress=progress, image_features=image_features)
    if isinstance(probe, PairProbe):
        out = winoground_metrics(pair_scores(model, probe, **kw), probe.tags)
    else:
        out = selection_metrics(selection_scores(model, probe, **kw), probe.kinds)
    return {"probe": probe.name, **out, **({"info": probe.info} if probe.info else {})}
