"""``OptimizerStep``: the update every training loop makes once its loss is backpropagated.

One optimizer step, whatever the objective (contrastive pre-training in ``Trainer``, the built-in recipes of
``cliplab.train.in_memory``, fine-tuning in ``cliplab.finetune``): ``backward`` (scaled by the fp16 gradient
scaler when there is one), then ``step``: unscale, clip (``none``; ``norm``: ``g ← g·min(1, c / (‖g‖ + 1e-6))``
as ``torch.nn.utils.clip_grad_norm_``; an adaptive ``ZClip`` / ``AutoClip`` clipper), the optimizer's step (skipped
by the scaler on overflow), the learning-rate schedule's step. A non-finite loss raises ``check_finite``'s error
before any update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


class OptimizerStep:
    """Backward and update for ``params`` with ``optimizer`` and ``scheduler`` (module docstring).

    Args:
        params: the trainable parameters (what clipping sees).
        optimizer, scheduler: the ``torch.optim`` optimizer and LR scheduler.
        scaler: a ``torch.amp.GradScaler`` (fp16), or None.
        max_norm: clip the total gradient norm to this (``clip_grad_norm_``), or None.
        clipper: an adaptive clipper (``step(params) -> norm``, ``last_clip``), or None.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        *,
        scaler: Any = None,
        max_norm: float | None = None,
        clipper: Any = None,
    ) -> None:
        if max_norm is not None and clipper is not None:
            raise ValueError("clip with max_norm or with an adaptive clipper, not both")
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
        self.params, self.optimizer, self.scheduler = params, optimizer, scheduler
        self.scaler, self.max_norm, self.clipper = scaler, max_norm, clipper

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, through the gradient scaler when there is one."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    @property
    def backward_fn(self) -> Callable[[torch.Tensor], None] | None:
        """``backward`` for a loop that backpropagates itself (GradCache), or None without a scaler."""
        return self.backward if self.scaler is not None else None

    def clip(self) -> tuple[Any, float | None]:
        """Clip the (unscaled) gradients; ``(total norm before clipping or None, the clip applied or None)``."""
        if self.max_norm is not None:
            return torch.nn.utils.clip_grad_norm_(self.params, self.max_norm), self.max_norm
        if self.clipper is not None:
            return self.clipper.step(self.params), self.clipper.last_clip
        return None, None

    def step(self) -> dict[str, Any]:
        """Unscale, clip, update, advance the schedule; ``{"lr": the LR used, "grad_norm", "clip"}``."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm, clip = self.clip()
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return {"lr": lr, "grad_norm": grad_norm, "clip": clip}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing was saved for that step."""

    def __init__(self, step: int, loss: float, checkpoint: Path | None):
        self.step, self.loss, self.checkpoint = step, loss, checkpoint
        where = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written yet"
        super().__init__(
            f"training diverged: the loss is {loss} at step {step}; stopped before the optimizer step, {where}. "
            "Resume from it with a lower learning rate, a longer warm-up or gradient clipping (grad_clip.mode: zclip)."
        )


def check_finite(loss: float, step: int) -> None:
    """``FloatingPointError`` for a non-finite loss at ``step`` (before any update)."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss became {loss} at step {step}; training stopped")


__all__ = ["OptimizerStep", "TrainingDiverged", "check_finite"]
