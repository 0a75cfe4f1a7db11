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
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

METHODS = ("ce", "flyp", "clipood")


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
