"""WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): weight-space ensembling.

``θ_α = (1 − α)·θ_zero-shot + α·θ_fine-tuned``, parameter by parameter, over every floating-point tensor of
the model's state (the zero-shot-initialised head included, see :func:`interpolate_heads`); integer buffers
(position ids) are taken from the fine-tuned model. ``α = 0`` and ``α = 1`` return exact copies of the two
endpoints (no arithmetic is done on them).
"""

from __future__ import annotations

import copy

import torch

from cliplab.models.base import Model


def clone_model(model: Model) -> Model:
    """A copy of ``model`` with its own weights (the tokenizer and preprocessing are shared)."""
    new = copy.copy(model)
    new.module = copy.deepcopy(model.module)
    new.__dict__.pop("_fingerprint_cache", None)
    return new


def _mix(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    if alpha == 0:
        return a.clone()
    if alpha == 1:
        return b.clone()
    if not a.is_floating_point():
        return b.clone()
    return ((1 - alpha) * a.double() + alpha * b.double()).to(b.dtype)


def interpolate_state(
    zero_shot: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 − α)·zero_shot + α·finetuned`` for every entry; the two states must have the same keys and shapes."""
    if set(zero_shot) != set(finetuned):
        only = sorted(set(zero_shot) ^ set(finetuned))[:5]
        raise ValueError(f"the two models have different parameters (e.g. {only}): WiSE-FT needs one architecture")
    out = {}
    for k, a in zero_shot.items():
        b = finetuned[k]
        if a.shape != b.shape:
            raise ValueError(f"parameter {k!r} has shape {tuple(a.shape)} vs {tuple(b.shape)}")
        out[k] = _mix(a, b.to(a.device), alpha)
    return out


def _check_alpha(alpha: float) -> float:
    if not isinstance(alpha, int | float) or not 0 <= float(alpha) <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return float(alpha)


def wise_ft(zero_shot_model: Model, finetuned_model: Model, alpha: float) -> Model:
    """A new model with ``θ = (1 − α)·θ_zs + α·θ_ft``; neither input is modified."""
    alpha = _check_alpha(alpha)
    mixed = clone_model(finetuned_model)
    state = interpolate_state(zero_shot_model.module.state_dict(), finetuned_model.module.state_dict(), alpha)
    mixed.module.load_state_dict(state)
    return mixed


def interpolate_heads(zero_shot_head: torch.Tensor, finetuned_head: torch.Tensor, alpha: float) -> torch.Tensor:
    """The same rule for a classification head ``[C, D]``."""
    alpha = _check_alpha(alpha)
    return interpolate_state({"w": zero_shot_head}, {"w": finetuned_head}, alpha)["w"]
