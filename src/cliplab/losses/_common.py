"""Input checks and logit helpers shared by the losses (internal)."""

from __future__ import annotations

import torch

from cliplab._validation import ArrayLike, as_tensor
from cliplab.models.geometry import pairwise_logits as pairwise_logits  # re-exported: Model.logits uses it too

GEOMETRIES = ("cosine", "euclidean")
Scalar = float | int | torch.Tensor


def check_geometry(geometry: str) -> str:
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown geometry {geometry!r}; expected one of {', '.join(map(repr, GEOMETRIES))}")
    return geometry


def check_chunk_size(chunk_size: int | None) -> int | None:
    """None (materialise the logits) or a positive integer tile size."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


def as_feature_matrix(x: ArrayLike, name: str) -> torch.Tensor:
    """A floating-point ``[N, D]`` matrix, dtype kept (integers become float32), finite, non-empty."""
    t = as_tensor(x, name, dtype=None, ndim=2)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t


def as_pair(a: ArrayLike, b: ArrayLike, name_a: str, name_b: str, *, same_rows: bool = True):
    """Two feature matrices with the same dimension (and row count), common dtype and device."""
    a, b = as_feature_matrix(a, name_a), as_feature_matrix(b, name_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} has dimension {a.shape[1]} but {name_b} has dimension {b.shape[1]}")
    if same_rows and a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} has {a.shape[0]} rows but {name_b} has {b.shape[0]}: the losses need one row per pair"
        )
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def as_scalar(value: Scalar | None, name: str, like: torch.Tensor, *, default: float | None = None) -> torch.Tensor:
    """A 0-d tensor on ``like``'s device and dtype; a tensor argument keeps its autograd graph."""
    if value is None:
        if default is None:
            raise ValueError(f"{name} is required")
        value = default
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        t = value.reshape(()).to(device=like.device, dtype=like.dtype)
    else:
        try:
            t = torch.tensor(float(value), device=like.device, dtype=like.dtype)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a number or a 0-d tensor, got {type(value).__name__}") from err
    if not bool(torch.isfinite(t.detach())):
        raise ValueError(f"{name} must be finite, got {float(t)}")
    return t


def paired_logits(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, geometry: str) -> torch.Tensor:
    """``[N]`` logits of the pairs ``(a_i, b_i)`` without bias."""
    if geometry == "cosine":
        return scale * (a * b).sum(1)
    return -scale * (a - b).pow(2).sum(1)
