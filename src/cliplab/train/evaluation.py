"""Periodic evaluation during training: zero-shot top-1 and image↔text recall@1.

The evaluation sets are loaded and preprocessed once; each evaluation only runs the model (eval mode,
so dropout and patch dropout are off) and the training RNG streams are left untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cliplab.models.base import Model
from cliplab.train.config import EvalOptions


def recall_at_1(model: Model, images: torch.Tensor, texts: torch.Tensor, text_to_image: np.ndarray) -> dict[str, float]:
    """``image_retrieval_recall@1`` (captions whose best image is theirs) and ``text_retrieval_recall@1``
    (images whose best caption is one of theirs), in the model's geometry."""
    sim = model.similarity(images, texts)  # [N, M]
    t2i = torch.as_tensor(text_to_image, dtype=torch.int64)
    image_r1 = (sim.argmax(0) == t2i).float().mean().item()
    text_r1 = (t2i[sim.argmax(1)] == torch.arange(images.shape[0])).float().mean().item()
    return {"image_retrieval_recall@1": image_r1, "text_retrieval_recall@1": text_r1}


class PeriodicEval:
    """Evaluate a model on the sets ``options`` names (nothing when it names none)."""

    def __init__(self, options: EvalOptions, model: Model):
        from cliplab.data import load_dataset

        self.options = options
        self.zeroshot = self.retrieval = None
        if options.zeroshot:
            ds = load_dataset(options.zeroshot, split=options.split)
            if ds.labels is None or not ds.classnames:
                raise ValueError(f"eval.zeroshot: dataset {ds.name!r} has no labels/class names")
            self.zeroshot = (ds, self._pixels(model, ds))
        if options.retrieval:
            ds = load_dataset(options.retrieval, split=options.split)
            if not ds.captions or ds.text_to_image is None:
                raise ValueError(f"eval.retrieval: dataset {ds.name!r} has no captions")
            self.retrieval = (ds, self._pixels(model, ds))

    @property
    def enabled(self) -> bool:
        return self.zeroshot is not None or self.retrieval is not None

    def _pixels(self, model: Model, ds: Any) -> torch.Tensor:
        bs = self.options.batch_size
        return torch.cat(
            [model.preprocess.batch(ds.images(range(i, min(len(ds), i + bs)))) for i in range(0, len(ds), bs)]
        )

    def __call__(self, model: Model) -> dict[str, Any]:
        """The metrics (``zeroshot_acc1``, recalls) of ``model`` now."""
        from cliplab.zeroshot import zeroshot_logits, zeroshot_weights

        out: dict[str, Any] = {}
        dtype = next(model.module.parameters()).dtype
        bs = self.options.batch_size
        if self.zeroshot is not None:
            ds, pixels = self.zeroshot
            feats = model.encode_images(pixels.to(dtype), batch_size=bs)
            weights = zeroshot_weights(model, ds.classnames or [], self.options.templates or ds.templates)
            logits = zeroshot_logits(feats, weights, model.logit_scale, model.logit_bias, model.geometry)
            labels = torch.as_tensor(ds.labels, dtype=torch.int64)
            out["zeroshot_acc1"] = (logits.argmax(1) == labels).float().mean().item()
        if self.retrieval is not None:
            ds, pixels = self.retrieval
            images = model.encode_images(pixels.to(dtype), batch_size=bs)
            texts = model.encode_texts(list(ds.captions or []), batch_size=max(bs, 256))
            out.update(recall_at_1(model, images, texts, np.asarray(ds.text_to_image)))
        return out


__all__ = ["PeriodicEval", "recall_at_1"]
