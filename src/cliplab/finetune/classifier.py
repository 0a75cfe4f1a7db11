"""An image classifier made of a model's image tower and a head ``[C, D]``: ``z = f·Hᵀ`` (f in the model's
geometry). The zero-shot classifier has ``H = s·W_zs``; WiSE-FT mixes two classifiers' towers and heads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cliplab.finetune.weight_space import interpolate_heads, wise_ft
from cliplab.models.base import Model


def zeroshot_head(model: Model, classnames: Sequence[str], templates: Any = None) -> torch.Tensor:
    """``s · W_zs`` (``cliplab.zeroshot_weights`` times the model's logit scale), ``[C, D]``."""
    from cliplab.zeroshot import zeroshot_weights

    return (model.logit_scale * zeroshot_weights(model, list(classnames), templates)).clone()


@dataclass
class ImageClassifier:
    """``model``'s image tower plus ``head``. ``text_head``: the head is the model's zero-shot head (recomputed
    from the text tower when the model changes: FLYP); otherwise it is a free parameter (CE fine-tuning)."""

    model: Model
    head: torch.Tensor
    classnames: list[str]
    templates: Any = None
    text_head: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def zero_shot(cls, model: Model, classnames: Sequence[str], templates: Any = None) -> ImageClassifier:
        return cls(model, zeroshot_head(model, classnames, templates), list(classnames), templates, text_head=True)

    def features(self, images: Any, *, batch_size: int = 64) -> torch.Tensor:
        from cliplab.data.base import Dataset

        if isinstance(images, Dataset):
            from cliplab.features.embedding import embed_images

            return embed_images(self.model, images, batch_size=batch_size, progress=False)
        return self.model.encode_images(images, batch_size=batch_size)

    def logits(self, images: Any, *, batch_size: int = 64) -> torch.Tensor:
        """``[N, C]`` for a Dataset, a pixel batch or a list of images."""
        return self.features(images, batch_size=batch_size) @ self.head.float().cpu().T

    def accuracy(self, dataset: Any, *, batch_size: int = 64) -> float:
        labels = getattr(dataset, "labels", None)
        if labels is None:
            raise ValueError(f"dataset {getattr(dataset, 'name', dataset)!r} has no labels to score accuracy")
        pred = self.logits(dataset, batch_size=batch_size).argmax(1)
        return float((pred == torch.as_tensor(np.asarray(labels))).float().mean())


def wise_ft_classifier(zero_shot: ImageClassifier, finetuned: ImageClassifier, alpha: float) -> ImageClassifier:
    """WiSE-FT of two classifiers: towers mixed by :func:`wise_ft`; the head mixed the same way, or — for a
    text head (FLYP) — recomputed from the mixed text tower."""
    model = wise_ft(zero_shot.model, finetuned.model, alpha)
    if finetuned.text_head:
        head = (
            zeroshot_head(model, finetuned.classnames, finetuned.templates)
            if 0 < alpha < 1
            else (finetuned.head if alpha == 1 else zero_shot.head).clone()
        )
    else:
        head = interpolate_heads(zero_shot.head, finetuned.head, alpha)
    return ImageClassifier(
        model, head, finetuned.classnames, finetuned.templates, finetuned.text_head, {"wise_ft_alpha": alpha}
    )
