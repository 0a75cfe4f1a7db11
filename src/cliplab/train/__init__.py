"""Training: the trainer, its typed checkpoint state (``TrainState``), the optimizer step every loop shares
(``OptimizerStep``, ``cliplab.optimization``), gradient clipping and distributed helpers."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ZClip": "clipping",
    "AutoClip": "clipping",
    "OptimizerStep": "engine",
    "Trainer": "trainer",
    "TrainState": "state",
    "TrainConfig": "config",
    "train": "trainer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"cliplab.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cliplab.train' has no attribute {name!r}")
