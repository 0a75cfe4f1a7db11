"""The optimizers, parameter groups, learning-rate schedules and gradient scaler every training loop uses.

Model-independent (torch only), so every layer above may import it. One definition for contrastive training
(``Trainer``), the built-in recipes, fine-tuning (``cliplab.finetune``) and
prompt learning (``cliplab.adapt.prompting``); where those loops historically differ, an explicit argument keeps
each one's numbers:

* weight decay (AdamW, Loshchilov & Hutter 2019) on weight matrices only: never on parameters with fewer than
  2 dimensions (biases, norm gains, the logit scale/bias); training also spares embeddings and any parameter
  named ``*norm*`` / ``logit_*``, fine-tuning (``decay_embeddings=True``) decides by shape alone;
* the schedule: linear warm-up ``m(s) = (s + 1) / W`` for ``s < W``, then cosine
  ``m(s) = r + (1 − r)·½·(1 + cos(π·min(1, (s − W) / max(1, T − W))))`` down to ``r = min_ratio``
  (SGDR, Loshchilov & Hutter 2017), or constant 1 after warm-up;
* prompt learning (CoOp, Zhou et al. 2022): SGD (momentum 0.9, weight decay 5e-4) with cosine annealing
  ``η_t = ½·η_0·(1 + cos(π·t / T))`` over all ``T`` steps, computed by torch's ``CosineAnnealingLR``
  (``cosine_annealing``). Torch evaluates it recursively, ``η_t = η_{t−1}·(1 + cos(π·t/T)) / (1 + cos(π·(t−1)/T))``,
  which differs from the closed form (``warmup_cosine(t, 0, T)·η_0``) in the last bits, so the scheduler is
  torch's own and the prompt learners' numbers stay those of the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

ParamGroups = list[dict[str, Any]]


def param_groups(
    named: nn.Module | Iterable[tuple[str, nn.Parameter]], weight_decay: float, *, decay_embeddings: bool = False
) -> ParamGroups:
    """``[{decayed params, weight_decay}, {the rest, 0.0}]`` of the trainable parameters of ``named``.

    ``named``: a module or ``(name, parameter)`` pairs. Parameters with ``ndim < 2`` are never decayed; unless
    ``decay_embeddings``, neither are those whose name contains ``embedding``, ``norm`` or ``logit_``.
    """
    pairs = named.named_parameters() if isinstance(named, nn.Module) else named
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in pairs:
        if not p.requires_grad:
            continue
        by_name = not decay_embeddings and ("logit_" in name or "embedding" in name or "norm" in name)
        (no_decay if p.ndim < 2 or by_name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup: int, total: int, *, min_ratio: float = 0.0, constant: bool = False) -> float:
    """The LR multiplier at ``step`` (module docstring): linear warm-up, then cosine to ``min_ratio`` (or 1)."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    if constant:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule(warmup: int, total: int, *, min_ratio: float = 0.0, constant: bool = False) -> Callable[[int], float]:
    """``warmup_cosine`` as a plain function of the step (``LambdaLR`` does not checkpoint a plain function, so
    the number of steps may change on resume)."""

    def fn(step: int) -> float:
        return warmup_cosine(step, warmup, total, min_ratio=min_ratio, constant=constant)

    return fn


def build_optimizer(
    groups: ParamGroups,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    warmup: int,
    total: int,
    min_ratio: float = 0.0,
    constant: bool = False,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``groups`` and its warm-up + cosine ``LambdaLR``."""
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, schedule(warmup, total, min_ratio=min_ratio, constant=constant)
    )
    return optimizer, scheduler


def sgd(
    params: Iterable[nn.Parameter] | ParamGroups, *, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4
) -> torch.optim.SGD:
    """SGD with momentum and (L2) weight decay: the prompt learners' optimizer (CoOp's defaults)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def cosine_annealing(optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """Cosine annealing of every group's LR to 0 over ``total`` steps (``η_t = ½·η_0·(1 + cos(π·t / T))``,
    SGDR without restarts; torch's recursive evaluation, see the module docstring)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))


def grad_scaler(precision: str, device: torch.device, *, cuda_only: bool = False) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 autocast (None otherwise). ``cuda_only``: none off CUDA (fine-tuning's rule);
    else a device that cannot scale raises ``ValueError``."""
    if precision != "fp16" or (cuda_only and device.type != "cuda"):
        return None
    try:
        return torch.amp.GradScaler(device.type)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"precision fp16 is not supported on {device}: {err}; use bf16") from err


__all__ = [
    "ParamGroups",
    "build_optimizer",
    "cosine_annealing",
    "grad_scaler",
    "param_groups",
    "schedule",
    "sgd",
    "warmup_cosine",
]
