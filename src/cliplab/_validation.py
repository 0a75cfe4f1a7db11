"""Input validation shared by every public function (scikit-learn style: fail early, name the problem)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray | Sequence[Any]


def as_tensor(
    x: ArrayLike,
    name: str = "input",
    *,
    dtype: torch.dtype | None = torch.float32,
    ndim: int | None = None,
    finite: bool = True,
    allow_empty: bool = False,
) -> torch.Tensor:
    """Convert ``x`` (tensor, NumPy array or nested sequence) to a tensor and check it.

    ``dtype=None`` keeps the input's dtype. Raises ``ValueError`` naming ``name`` on a wrong
    number of dimensions, an empty input or non-finite values.
    """
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a tensor or array-like, got {type(x).__name__}") from err
    if dtype is not None and t.dtype != dtype:
        if dtype.is_floating_point or not t.dtype.is_floating_point:
            t = t.to(dtype)
        else:
            rounded = t.round()
            if not torch.equal(rounded, t):
                raise ValueError(f"{name} must hold integers, got non-integer values")
            t = rounded.to(dtype)
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if not allow_empty and t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return t


def as_features(x: ArrayLike, name: str = "features", dim: int | None = None) -> torch.Tensor:
    """A float32 ``[N, D]`` matrix; ``dim`` checks D."""
    t = as_tensor(x, name, ndim=2)
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{name} has dimension {t.shape[1]}, expected {dim}")
    return t


def as_labels(
    y: ArrayLike, name: str = "labels", n: int | None = None, num_classes: int | None = None
) -> torch.Tensor:
    """An int64 ``[N]`` vector of class indices in ``[0, num_classes)``."""
    t = as_tensor(y, name, dtype=torch.int64, ndim=1)
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} entries but there are {n} samples")
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must be non-negative class indices, got {int(t.min())}")
    if num_classes is not None and t.numel() and int(t.max()) >= num_classes:
        raise ValueError(f"{name} contains class {int(t.max())} but there are only {num_classes} classes")
    return t


def check_same_length(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} has {a.shape[0]} rows but {name_b} has {b.shape[0]}")


def l2_normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(‖x‖₂, eps)`` along ``dim``."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)
