"""CoOp and the two text-only variants that regularise it toward the hand-crafted prompt: KgCoOp and ProGrad.

All three train on cached image features (a step is one text forward over the C class prompts).

* **CoOp** (Zhou et al., IJCV 2022): ``z = s · f·t(ctx, c)ᵀ``, cross-entropy on the support set; context
  ``[M, d]`` shared by all classes or ``[C, M, d]`` class-specific; SGD lr 0.002, momentum 0.9, cosine schedule.
* **KgCoOp** (Yao et al., "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization", CVPR
  2023): ``L = CE + λ · (1/C) Σ_c ‖t_c − w_c‖²`` with ``w_c`` the hand-crafted prompt's (normalised) text
  feature; λ = 4 equals the official weight 8 on ``1 − cos`` (``‖a − b‖² = 2(1 − cos)`` for unit vectors).
* **ProGrad** (Zhu et al., "Prompt-aligned Gradient for Prompt Tuning", ICCV 2023): with ``g`` the gradient
  of CE and ``g_kl`` that of ``KL(softmax(z_zs) ‖ softmax(z))`` (z_zs the zero-shot logits), the update is
  ``g`` when ``g·g_kl ≥ 0`` and ``g − λ (g·g_kl / ‖g_kl‖²) g_kl`` otherwise (λ = 1: the conflicting component
  is removed).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from cliplab.adapt.prompting.learner import NON_NEGATIVE, PromptLearner
from cliplab.adapt.prompting.text_prompts import PromptedText
from cliplab.models.base import Model

#: the hand-crafted prompt KgCoOp and ProGrad regularise toward (and CoOp's usual initialisation)
HAND_CRAFTED = ("a photo of a {}.",)


class CoOp(PromptLearner):
    """Context Optimization: M learned context vectors in the class prompts (see the module docstring)."""

    prompt_: PromptedText

    method = "CoOp"

    def __init__(
        self,
        n_ctx: int | None = 4,
        ctx_init: str | None = None,
        class_token_position: str = "end",
        class_specific: bool = False,
        epochs: int = 200,
        batch_size: int = 32,
        lr: float = 0.002,
        eval_every: int = 10,
        seed: int = 0,
    ) -> None:
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.class_token_position = class_token_position
        self.class_specific = class_specific
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.eval_every = eval_every
        self.seed = seed

    def _make_prompt(self, model: Model, classnames: list[str]) -> PromptedText:
        return PromptedText(
            model,
            classnames,
            n_ctx=None if self.ctx_init else self.n_ctx,
            ctx_init=self.ctx_init,
            position=self.class_token_position,
            class_specific=self.class_specific,
            method=self.method,
            seed=self.seed,
        )

    def text_features(self) -> torch.Tensor:
        """The learned class prompts' text features ``[C, D]`` (in the model's geometry)."""
        self._check_fitted()
        with torch.no_grad(), self._frozen():
            return self.prompt_().float().cpu()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model_.logits(x, self.prompt_())

    def _hand_crafted(self, model: Model, classnames: list[str], templates: Any) -> torch.Tensor:
        from cliplab.zeroshot import zeroshot_weights

        return zeroshot_weights(model, classnames, list(templates or HAND_CRAFTED)).clone().to(model.device)


class KgCoOp(CoOp):
    """CoOp + ``λ·mean_c ‖t_c − w_c‖²`` toward the hand-crafted prompts' features ``w`` (``templates``)."""

    method = "KgCoOp"
    _constraints: ClassVar[dict[str, Any]] = {**CoOp._constraints, "lam": NON_NEGATIVE}

    def __init__(
        self,
        n_ctx: int | None = 4,
        ctx_init: str | None = None,
        class_token_position: str = "end",
        class_specific: bool = False,
        epochs: int = 200,
        batch_size: int = 32,
        lr: float = 0.002,
        eval_every: int = 10,
        seed: int = 0,
        lam: float = 4.0,
        templates: tuple[str, ...] | list[str] | None = None,
    ) -> None:
        super().__init__(
            n_ctx, ctx_init, class_token_position, class_specific, epochs, batch_size, lr, eval_every, seed
        )
        self.lam = lam
        self.templates = templates

    def _prepare(self, model: Model, x: torch.Tensor, y: torch.Tensor) -> None:
        self.hand_crafted_ = self._hand_crafted(model, self.classnames_, self.templates)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.prompt_()
        ce = F.cross_entropy(self.model_.logits(x, t), y)
        return ce + self.lam * (t - self.hand_crafted_).square().sum(1).mean()


class ProGrad(CoOp):
    """CoOp whose gradient is projected off the direction that conflicts with the zero-shot KL gradient."""

    method = "ProGrad"
    _constraints: ClassVar[dict[str, Any]] = {**CoOp._constraints, "lam": NON_NEGATIVE, "temperature": NON_NEGATIVE}

    def __init__(
        self,
        n_ctx: int | None = 4,
        ctx_init: str | None = None,
        class_token_position: str = "end",
        class_specific: bool = False,
        epochs: int = 200,
        batch_size: int = 32,
        lr: float = 0.002,
        eval_every: int = 10,
        seed: int = 0,
        lam: float = 1.0,
        temperature: float = 1.0,
        templates: tuple[str, ...] | list[str] | None = None,
    ) -> None:
        super().__init__(
            n_ctx, ctx_init, class_token_position, class_specific, epochs, batch_size, lr, eval_every, seed
        )
        self.lam = lam
        self.temperature = temperature
        self.templates = templates

    def _prepare(self, model: Model, x: torch.Tensor, y: torch.Tensor) -> None:
        self.hand_crafted_ = self._hand_crafted(model, self.classnames_, self.templates)

    def _gradients(self, x: torch.Tensor, y: torch.Tensor, params: list[nn.Parameter]) -> tuple[torch.Tensor, ...]:
        z = self.model_.logits(x, self.prompt_())
        z_zs = self.model_.logits(x, self.hand_crafted_).detach()
        T = self.temperature
        ce = F.cross_entropy(z, y)
        kl = (
            F.kl_div(F.log_softmax(z / T, 1), F.log_softmax(z_zs / T, 1), reduction="batchmean", log_target=True)
            * T
            * T
        )
        g = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
        g_kl = torch.autograd.grad(kl, params, allow_unused=True)
        g = tuple(torch.zeros_like(p) if a is None else a for p, a in zip(params, g))
        g_kl = tuple(torch.zeros_like(p) if a is None else a for p, a in zip(params, g_kl))
        return project_conflicting(g, g_kl, self.lam)


def project_conflicting(
    g: tuple[torch.Tensor, ...], g_ref: tuple[torch.Tensor, ...], lam: float = 1.0
) -> tuple[torch.Tensor, ...]:
    """ProGrad's rule over all parameters as one vector: ``g`` if ``g·r ≥ 0``, else ``g − λ (g·r / ‖r‖²) r``."""
    dot = sum((a * b).sum() for a, b in zip(g, g_ref))
    norm2 = sum(b.square().sum() for b in g_ref)
    if float(dot) >= 0 or float(norm2) == 0:
        return g
    coef = lam * dot / norm2
    return tuple(a - coef * b for a, b in zip(g, g_ref))
