"""Zero-shot CLIP as an adapter (the baseline every method adds to)."""

from __future__ import annotations

from typing import Any

import torch

from cliplab.adapt.base import Adapter

__all__ = ["ZeroShot"]


class ZeroShot(Adapter):
    """Zero-shot CLIP (Radford et al., ICML 2021): ``s0 = logit_scale · f·Wᵀ``.

    ``fit`` only validates its inputs and stores the text weights; the support set is not used.
    """

    def __init__(self) -> None:
        pass

    def _fit(self, X: torch.Tensor, y: torch.Tensor, **extra: Any) -> None:
        if extra:
            raise TypeError(f"ZeroShot.fit got unexpected keyword argument(s) {sorted(extra)}")

    def _logits(self, f: torch.Tensor) -> torch.Tensor:
        return self._zero_shot(f)
