"""Inference precision: ``fp32``, ``bf16`` or ``fp16`` autocast around the tower forwards.

The weights stay float32; under ``torch.autocast`` matrix products and convolutions run in the low-precision
type and the features come back float32 (``.float()``), so the cache stores float32 whatever the precision.
The default (``precision=None``) is ``fp16`` on CUDA and ``fp32`` elsewhere. On CPU, ``bf16`` autocast is
supported (oneDNN) and about as fast as fp32 on CPUs without AMX/AVX512-BF16; ``fp16`` autocast on CPU runs
but is emulated and several times slower than fp32 (measured: ``benchmarks/precision.py``), so it is kept,
for matching a GPU's numbers, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

log = logging.getLogger(__name__)


def resolve_precision(precision: str | None, device: torch.device | str) -> str:
    """``precision`` checked; None becomes ``fp16`` on CUDA and ``fp32`` on any other device."""
    device = torch.device(device)
    if precision is None:
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        warnings.warn(
            "precision fp16 on CPU is emulated and several times slower than fp32; bf16 or fp32 are faster there",
            RuntimeWarning,
            stacklevel=3,
        )
    return precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``bf16``/``fp16`` on ``device``; a no-op for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    device = torch.device(device)
    return torch.autocast(device.type, dtype=DTYPES[precision])


__all__ = ["DTYPES", "PRECISIONS", "autocast", "resolve_precision"]
