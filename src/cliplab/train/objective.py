"""The training objective: the contrastive loss ``config.loss`` names, plus optional distillation.

Losses come from ``cliplab.losses`` (one process) or ``cliplab.train.distributed`` (``torchrun``:
features gathered across ranks with gradients, each rank scoring its rows against the global batch).
Features are cast to float32 before the loss, whatever the autocast precision.

Objective options (``loss.options``, besides the loss's own keyword arguments), each defaulting to the
reference's setting:

* ``clip`` with the ``euclidean`` geometry (EuCLIP, EIFY/open_clip ``euclip`` branch): ``feature_scale``
  (``"sqrt_dim"``: features times ``1/√D`` before the loss, so the logits are ``−s·‖x − y‖²/D``; or a
  number; 1 switches it off), ``squared`` (True; False is the ``−s·‖x − y‖`` variant),
  ``entailment_weight`` (0; > 0 adds the entailment-cone loss of texts over images) and ``entailment_K``
  (0.1).
* ``infoloob`` (CLOOB, ml-jku/cloob): ``inv_tau`` (14.3, fixed) and ``learnable_inv_tau`` (False; True
  uses the model's learnable logit scale instead, whatever its value, e.g. 100 for a CLIP checkpoint).
* distillation (``loss.distill.options``, CLIP-KD): ``icl_weight`` (1.0) and ``feature_weight`` (2000.0),
  the paper's best CKD + ICL + FD; a ``DistillHead`` (ICL scale, and projections when the student's and
  teacher's dimensions differ) is trained with the student (``Objective.head``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cliplab.models.base import Model
from cliplab.models.geometry import euclidean_feature_scale
from cliplab.train.config import LossOptions

if TYPE_CHECKING:
    from cliplab.losses import DistillHead

#: CLOOB's default inverse temperature (ml-jku/cloob ``--init-inv-tau``)
CLOOB_INV_TAU = 14.3
#: CLIP-KD's best distillation weights (winycg/CLIP-KD: CKD + ICL + FD)
CLIP_KD_DEFAULTS = {"icl_weight": 1.0, "feature_weight": 2000.0}
_EUCLIDEAN_KEYS = ("feature_scale", "squared", "entailment_weight", "entailment_K")
_INFOLOOB_KEYS = ("inv_tau", "learnable_inv_tau")


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _feature_scale(value: Any, dim: int) -> float:
    if value == "sqrt_dim":
        return euclidean_feature_scale(dim)  # the scale Model.logits applies at evaluation
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"loss.options.feature_scale must be 'sqrt_dim' or a positive number, got {value!r}")
    return float(value)


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
        kw = dict(options.options)
        own = _EUCLIDEAN_KEYS if self.name == "clip" else _INFOLOOB_KEYS if self.name == "infoloob" else ()
        self._own = {k: kw.pop(k) for k in own if k in kw}
        self._loss_kw = kw
        if self.name == "clip" and self.geometry != "euclidean" and self._own:
            raise ValueError(f"loss.options {sorted(self._own)} are for the euclidean geometry only")
        self.feature_scale = 1.0
        self.entailment_weight, self.entailment_K = 0.0, 0.1
        if self.name == "clip" and self.geometry == "euclidean":
            self.feature_scale = _feature_scale(self._own.get("feature_scale", "sqrt_dim"), model.embed_dim)
            self.entailment_weight = float(self._own.get("entailment_weight", 0.0))
            self.entailment_K = float(self._own.get("entailment_K", 0.1))
            if not self.entailment_weight >= 0:
                raise ValueError(f"loss.options.entailment_weight must be >= 0, got {self.entailment_weight}")
            if not self._own.get("squared", True):
                if env.distributed:
                    raise ValueError("loss.options.squared=false is not supported under torchrun")
                self._loss_kw["squared"] = False
        self.inv_tau: float | None = None  # None: the model's logit scale
        if self.name == "infoloob" and not self._own.get("learnable_inv_tau", False):
            self.inv_tau = float(self._own.get("inv_tau", CLOOB_INV_TAU))
            if not self.inv_tau > 0:
                raise ValueError(f"loss.options.inv_tau must be positive, got {self.inv_tau}")
        self.teacher: Model | None = None
        self.head: DistillHead | None = None
        self.distill_kw: dict[str, Any] = {}

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
            from cliplab.losses import DistillHead

            self.distill_kw = {**CLIP_KD_DEFAULTS, **options.distill.options}
            self.head = DistillHead(model.embed_dim, teacher.embed_dim).to(device)
            if env.distributed:  # the head is outside DDP: average its gradients across ranks
                import torch.distributed as dist

                for p in self.head.parameters():
                    p.register_post_accumulate_grad_hook(
                        lambda p: (dist.all_reduce(p.grad), p.grad.div_(dist.get_world_size()))
                    )
        self._task = self._task_loss()
        self.hard_negatives = options.hard_negatives
        if self.hard_negatives is not None and (env.distributed or options.chunk_size is not None):
            raise ValueError("loss.hard_negatives runs in one process without loss.chunk_size")

    def optimized(self, module: nn.Module) -> nn.Module:
        """What the optimizer trains: the student's ``module``, plus the distillation head when there is one."""
        if self.head is None:
            return module
        return nn.ModuleDict({"model": module, "distill_head": self.head})

    def _task_loss(self) -> Callable[..., torch.Tensor]:
        opts, kw = self.options, dict(self._loss_kw)
        if opts.chunk_size is not None:
            kw["chunk_size"] = opts.chunk_size
        if self.env.distributed:
            from cliplab.train import distributed as d

            if self.name == "clip":
                return lambda i, t, s, b: d.distributed_clip_loss(i, t, s, geometry=self.geometry, **kw)
            if self.name == "siglip":
                return lambda i, t, s, b: d.distributed_siglip_loss(i, t, s, b, **kw)
            # InfoLOOB: gather with gradients, then the plain loss
            from cliplab.losses import infoloob_loss

            return lambda i, t, s, b: infoloob_loss(d.gather_features(i), d.gather_features(t), self._tau(s), **kw)
        from cliplab import losses

        if self.name == "clip":
            return lambda i, t, s, b: losses.clip_loss(i, t, s, geometry=self.geometry, **kw)
        if self.name == "siglip":
            return lambda i, t, s, b: losses.siglip_loss(i, t, s, b, **kw)
        return lambda i, t, s, b: losses.infoloob_loss(i, t, self._tau(s), **kw)

    def _tau(self, scale: torch.Tensor) -> torch.Tensor | float:
        """InfoLOOB's inverse temperature: the fixed ``inv_tau`` (CLOOB) or the model's logit scale."""
        return scale if self.inv_tau is None else self.inv_tau

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
        if self.feature_scale != 1.0:  # EuCLIP: features scaled by 1/√D before the distances
            image, text = image * self.feature_scale, text * self.feature_scale
            negatives = None if negatives is None else negatives * self.feature_scale
        if negatives is not None:  # hard-negative captions: extra text columns (cliplab.losses.hard_negatives)
            from cliplab.losses.hard_negatives import hard_negative_clip_loss

            loss = hard_negative_clip_loss(image, text, _f32(negatives), scale, bias, geometry=self.geometry)
        else:
            loss = self._task(image, text, scale, bias)
        if self.entailment_weight > 0:
            from cliplab.losses import euclidean_entailment_loss

            loss = loss + self.entailment_weight * euclidean_entailment_loss(text, image, self.entailment_K)
        if teacher is not None and self.options.distill is not None:
            from cliplab.losses import clip_distill_loss

            t_image, t_text, t_scale = teacher
            if self.feature_scale != 1.0:
                t_image, t_text = t_image * self.feature_scale, t_text * self.feature_scale
            distill = clip_distill_loss(
                image, text, t_image, t_text, scale, t_scale, geometry=self.geometry, head=self.head, **self.distill_kw
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


__all__ = ["CLIP_KD_DEFAULTS", "CLOOB_INV_TAU", "Objective"]
