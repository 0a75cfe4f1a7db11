"""Fine-tuning objectives and CLIPood's Beta moving average.

* ``"ce"`` (WiSE-FT's end-to-end fine-tuning): ``z = f·Hᵀ`` with the head ``H`` initialised to
  ``s·W_zs`` (the zero-shot class weights times the logit scale), cross-entropy; image tower and head trained.
* ``"flyp"`` (Goyal et al., "Finetune like you pretrain", CVPR 2023): the contrastive loss of pre-training
  between each image and a prompt of its class (``clip_loss``, both towers and the logit scale trained);
  the classifier is the zero-shot head of the fine-tuned towers.
* ``"clipood"`` (Shu et al., "CLIPood: Generalizing CLIP to Out-of-Distributions", ICML 2023): margin
  metric softmax against the frozen class text features ``t``:
  ``L = −log exp(s·cos(f, t_y)) / Σ_c exp(s·(cos(f, t_c) + λ·(1 − cos(t_y, t_c))))`` (the margin is 0 for
  c = y), image tower trained; its weights are averaged with the Beta moving average.

``FINETUNE_OBJECTIVES`` is their registry (a :class:`cliplab.extension.Registry`; entry-point group
``cliplab.finetune_objectives``): a :class:`FinetuneObjective` is a ``loss(batch)`` over one
:class:`ObjectiveBatch` plus what else the loop does for it (train a head, average the weights, train the logit
scale, which head the classifier gets). ``register_finetune_objective`` adds one; ``finetune(method=...)`` and
``cliplab finetune`` (``method:`` in the config) then use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from cliplab.extension import Registry

if TYPE_CHECKING:
    from cliplab.models.base import Model


@dataclass
class ObjectiveBatch:
    """One step's batch as an objective's ``loss`` sees it.

    ``model``: the copy being trained; ``features``: its image features of the batch ``[B, D]`` (differentiable);
    ``labels`` ``[B]``; ``head``: the trained head ``[C, D]`` (objectives with ``trains_head``, else None);
    ``text_weights``: the frozen zero-shot class text features ``[C, D]`` (L2-normalised); ``scale``: the original
    model's logit scale; ``generator``: the step's random generator (seeded by seed and step); ``options``:
    ``mms_lambda`` and the other objective settings of ``finetune``.
    """

    model: Model
    features: torch.Tensor
    labels: torch.Tensor
    head: torch.Tensor | None
    text_weights: torch.Tensor
    scale: float
    classnames: list[str]
    templates: Any
    generator: torch.Generator
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FinetuneObjective:
    """A fine-tuning objective: ``loss(batch) -> scalar`` and what else the loop does for it.

    ``trains_head``: a linear head initialised to ``s·W_zs`` is trained too and is the classifier's head;
    ``text_head``: the classifier is the zero-shot head of the fine-tuned towers (else the frozen zero-shot
    head); ``weight_average``: the weights are averaged with CLIPood's Beta moving average;
    ``trains_logit_scale``: the logit scale is trained (clamped at 100 after each step).
    """

    loss: Callable[[ObjectiveBatch], torch.Tensor]
    trains_head: bool = False
    text_head: bool = False
    weight_average: bool = False
    trains_logit_scale: bool = False
    description: str = ""


def _check(name: str, objective: FinetuneObjective) -> None:
    if not isinstance(objective, FinetuneObjective):
        raise TypeError(f"fine-tuning objective {name!r} must be a FinetuneObjective, got {objective!r}")


def _adopt(name: str, loaded: Any) -> FinetuneObjective:
    return loaded if isinstance(loaded, FinetuneObjective) else FinetuneObjective(loaded)


#: method name → :class:`FinetuneObjective`
FINETUNE_OBJECTIVES: Registry[FinetuneObjective] = Registry(
    "fine-tuning objective", group="cliplab.finetune_objectives", check=_check, adopt=_adopt
)


def register_finetune_objective(
    name: str, objective: FinetuneObjective | Callable[[ObjectiveBatch], torch.Tensor], *, replace: bool = False
) -> FinetuneObjective:
    """Make ``finetune(method=name)`` use ``objective`` (a :class:`FinetuneObjective`, or a bare ``loss(batch)``:
    towers trained, the frozen zero-shot head); a taken name raises ValueError unless ``replace``."""
    if not isinstance(objective, FinetuneObjective):
        if not callable(objective):
            raise TypeError(f"a fine-tuning objective is a FinetuneObjective or a loss(batch), got {objective!r}")
        objective = FinetuneObjective(objective)
    return FINETUNE_OBJECTIVES.register(name, objective, replace=replace)


def cross_entropy_loss(batch: ObjectiveBatch) -> torch.Tensor:
    """``"ce"``: cross-entropy of ``f·Hᵀ`` with the trained head ``H``."""
    if batch.head is None:
        raise ValueError("the ce objective needs a trained head (FinetuneObjective.trains_head)")
    return F.cross_entropy(batch.features @ batch.head.T, batch.labels)


def flyp_loss(batch: ObjectiveBatch) -> torch.Tensor:
    """``"flyp"``: CLIP loss between the images and one prompt of each image's class (template drawn per image)."""
    from cliplab.losses import clip_loss
    from cliplab.zeroshot.templates import class_prompts

    model, f, y, gen = batch.model, batch.features, batch.labels, batch.generator
    prompts = class_prompts(batch.classnames, batch.templates or ["a photo of a {}."])  # per class, its sentences
    texts = [prompts[int(c)][int(torch.randint(len(prompts[int(c)]), (1,), generator=gen))] for c in y.cpu()]
    tokens = {k: v.to(f.device) for k, v in model.tokenize(texts).items()}
    t = model.text_features(tokens)
    scale = cast(torch.Tensor, model.module.logit_scale).exp().reshape(())
    return clip_loss(f, t.to(f.dtype), scale, geometry=model.geometry)


def clipood_loss(batch: ObjectiveBatch) -> torch.Tensor:
    """``"clipood"``: margin metric softmax against the frozen class text features."""
    f = batch.features
    lam = batch.options.get("mms_lambda", 0.3)
    return margin_metric_softmax(f, batch.text_weights.to(f.dtype), batch.labels, batch.scale, lam)


def margin_metric_softmax(
    image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor, scale: float, lam: float = 0.3
) -> torch.Tensor:
    """CLIPood's MMS loss (module docstring); features L2-normalised, ``text_features [C, D]``."""
    cos = image_features @ text_features.T
    text_sim = text_features @ text_features.T
    margin = lam * (1 - text_sim[labels])  # [B, C]; zero on the true class
    margin = margin.scatter(1, labels[:, None], 0.0)
    return F.cross_entropy(scale * (cos + margin), labels)


def beta_weight(step: int, total: int, beta: float = 0.5) -> float:
    """CLIPood's weight of the model after ``step`` (0-based) of ``total``: the Beta(β, β) density at
    ``(step + 0.5) / total``."""
    from scipy.stats import beta as beta_dist

    return float(beta_dist.pdf((step + 0.5) / total, beta, beta))


register_finetune_objective(
    "ce", FinetuneObjective(cross_entropy_loss, trains_head=True, description="zero-shot-initialised head + CE")
)
register_finetune_objective(
    "flyp",
    FinetuneObjective(flyp_loss, text_head=True, trains_logit_scale=True, description="contrastive, class prompts"),
)
register_finetune_objective(
    "clipood",
    FinetuneObjective(clipood_loss, weight_average=True, description="margin metric softmax + Beta moving average"),
)


class BetaMovingAverage:
    """``θ̄ = Σ_t w_t θ_t / Σ_t w_t`` over the optimisation steps, with ``w_t = beta_weight(t, total, β)``.

    Updated online: ``θ̄ ← θ̄ + (w_t / W_t)·(θ_t − θ̄)``, ``W_t = Σ_{u≤t} w_u`` (float64 accumulation).
    """

    def __init__(self, module: nn.Module, total_steps: int, beta: float = 0.5):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total, self.beta = total_steps, beta
        self.weight_sum = 0.0
        self.average = {k: v.detach().double().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    def update(self, module: nn.Module, step: int) -> None:
        w = beta_weight(step, self.total, self.beta)
        if not math.isfinite(w) or w <= 0:
            return
        self.weight_sum += w
        frac = w / self.weight_sum
        for k, v in module.state_dict().items():
            if k in self.average:
                self.average[k] += frac * (v.detach().double() - self.average[k])

    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into ``module`` (nothing to do before the first update)."""
        if self.weight_sum == 0:
            return
        state = module.state_dict()
        module.load_state_dict({k: (self.average[k].to(v.dtype) if k in self.average else v) for k, v in state.items()})

    def state_dict(self) -> dict:
        return {"weight_sum": self.weight_sum, "average": self.average, "total": self.total, "beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.weight_sum, self.average = float(state["weight_sum"]), state["average"]
        self.total, self.beta = int(state["total"]), float(state["beta"])
