"""The training objective: the contrastive loss ``config.loss`` names, plus optional distillation.

Losses come from ``cliplab.losses`` (one process) or ``cliplab.train.distributed`` (``torchrun``:
features gathered across ranks with gradients, each rank scoring its rows against the global batch).
Features are cast to float32 before the loss, whatever the autocast precision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from cliplab.models.base import Model
from cliplab.train.config import LossOptions


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class Objective:
    """``loss(image_features, text_features, scale, bias, teacher) → scalar`` for one optimizer step.

    Args:
        options: the ``loss`` section of the config.
        model: the student (its geometry is the loss geometry).
        env: the distributed environment (``cliplab.train.setup.DistEnv``).
        device: where the teacher runs.
    """

    def __init__(self, options: LossOptions, model: Model, env: Any, device: torch.device):
        self.options, self.env = options, env
        self.name = options.name
        self.geometry = model.geometry
        if self.name != "clip" and self.geometry != "cosine":
            raise ValueError(f"the {self.name} loss needs cosine geometry, but the model is {self.geometry}")
        self.teacher: Model | None = None
        if options.distill is not None:
            from cliplab.models import load_model

            teacher = load_model(options.distill.teacher, device=device)
            if teacher.geometry != self.geometry:
                raise ValueError(
                    f"the distillation teacher's geometry ({teacher.geometry}) "
                    f"differs from the student's ({self.geometry})"
                )
            teacher.module.eval()
            for p in teacher.module.parameters():
                p.requires_grad_(False)
            self.teacher = teacher
        self._task = self._task_loss()
        self.hard_negatives = options.hard_negatives
        if self.hard_negatives is not None and (env.distributed or options.chunk_size is not None):
            raise ValueError("loss.hard_negatives runs in one process without loss.chunk_size")

    def _task_loss(self) -> Callable[..., torch.Tensor]:
        opts, kw = self.options, dict(self.options.options)
        if opts.chunk_size is not None:
            kw["chunk_size"] = opts.chunk_size
        if self.env.distributed:
            from cliplab.train import distributed as d

            if self.name == "clip":
                return lambda i, t, s, b: d.distributed_clip_loss(i, t, s, geometry=self.geometry, **kw)
            if self.name == "siglip":
                return lambda i, t, s, b: d.distributed_siglip_loss(i, t, s, b, **kw)
            # InfoLOOB (the logit scale is its inverse temperature): gather with gradients, then the plain loss
            from cliplab.losses import infoloob_loss

            return lambda i, t, s, b: infoloob_loss(d.gather_features(i), d.gather_features(t), s, **kw)
        from cliplab import losses

        if self.name == "clip":
            return lambda i, t, s, b: losses.clip_loss(i, t, s, geometry=self.geometry, **kw)
        if self.name == "siglip":
            return lambda i, t, s, b: losses.siglip_loss(i, t, s, b, **kw)
        return lambda i, t, s, b: losses.infoloob_loss(i, t, s, **kw)

    def __call__(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None,
        teacher: tuple[torch.Tensor, torch.Tensor, float] | None = None,
        negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        image, text = _f32(image), _f32(text)
        if self.name == "siglip" and bias is None:
            raise ValueError("the siglip loss needs a trainable logit bias")
        if negatives is not None:  # hard-negative captions: extra text columns (cliplab.losses.hard_negatives)
            from cliplab.losses.hard_negatives import hard_negative_clip_loss

            loss = hard_negative_clip_loss(image, text, _f32(negatives), scale, bias, geometry=self.geometry)
        else:
            loss = self._task(image, text, scale, bias)
        if teacher is not None and self.options.distill is not None:
            from cliplab.losses import clip_distill_loss

            t_image, t_text, t_scale = teacher
            distill = clip_distill_loss(
                image, text, t_image, t_text, scale, t_scale, geometry=self.geometry, **self.options.distill.options
            )
            loss = loss + self.options.distill.weight * distill
        return loss

    @torch.no_grad()
    def teacher_features(
        self, batch: dict[str, Any], micro_batch: int, autocast: Callable[[], Any]
    ) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """The teacher's ``(image features, text features, logit scale)`` for a batch, or None."""
        if self.teacher is None:
            return None
        pixels, tokens = batch["teacher_pixels"], batch["teacher_tokens"]
        dtype = next(self.teacher.module.parameters()).dtype
        images, texts = [], []
        with autocast():
            for i in range(0, pixels.shape[0], micro_batch):
                images.append(self.teacher.image_features(pixels[i : i + micro_batch].to(dtype)))
                texts.append(self.teacher.text_features({k: v[i : i + micro_batch] for k, v in tokens.items()}))
        return _f32(torch.cat(images)), _f32(torch.cat(texts)), self.teacher.logit_scale


__all__ = ["Objective"]
