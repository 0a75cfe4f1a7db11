"""``NormClipper``, the base class of the adaptive gradient clippers (``ZClip``, ``AutoClip``), and its
plumbing: collect gradients, one fused total norm with a single host sync, in-place scaling, state validation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

# Added to the norm in the clipping coefficient, as torch.nn.utils.clip_grad_norm_ and both
# reference implementations do: coef = clip / (norm + 1e-6).
_COEF_EPS = 1e-6
_STATE_VERSION = 1

GradSource = nn.Module | torch.Tensor | Iterable[Any]


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _collect_grads(source: GradSource) -> list[torch.Tensor]:
    """The ``.grad`` tensors (not ``None``) of the parameters in ``source``, each once."""
    if isinstance(source, nn.Module):
        params: Iterable[Any] = source.parameters()
    elif isinstance(source, torch.Tensor | Mapping):  # one tensor or one param group
        params = [source]
    elif isinstance(source, Iterable) and not isinstance(source, str | bytes):
        params = source
    else:
        raise TypeError(
            "expected an nn.Module, a tensor, an iterable of tensors or optimizer param_groups, "
            f"got {type(source).__name__}"
        )
    grads: list[torch.Tensor] = []
    seen: set[int] = set()

    def add(p: Any) -> None:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"expected parameters to be tensors, got {type(p).__name__}")
        if id(p) in seen:
            return
        seen.add(id(p))
        if p.grad is not None:
            grads.append(p.grad)

    for item in params:
        if isinstance(item, Mapping):  # an optimizer param group
            if "params" not in item:
                raise TypeError("a parameter group must be a dict with a 'params' entry")
            group = item["params"]
            for p in [group] if isinstance(group, torch.Tensor) else group:
                add(p)
        else:
            add(item)
    return grads


def _foreach_devices() -> set[str]:
    try:
        from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices

        return set(_get_foreach_kernels_supported_devices()) | {"cpu"}
    except Exception:  # pragma: no cover - private helper moved or removed
        return {"cpu", "cuda"}


_FOREACH_DEVICES = _foreach_devices()


def _foreach_norm_has_dtype() -> bool:
    """torch._foreach_norm gained its ``dtype`` argument after torch 2.2 (our minimum)."""
    try:
        return "dtype" in str(torch.ops.aten._foreach_norm.Scalar._schema)
    except Exception:  # pragma: no cover - older or changed torch
        return False


_FOREACH_NORM_DTYPE = _foreach_norm_has_dtype()


def _group(grads: list[torch.Tensor]) -> dict[tuple[torch.device, torch.dtype, bool], list[torch.Tensor]]:
    """Group gradients by (device, dtype, foreach-capable)."""
    groups: dict[tuple[torch.device, torch.dtype, bool], list[torch.Tensor]] = {}
    for g in grads:
        fused = (not g.is_sparse) and g.layout == torch.strided and g.device.type in _FOREACH_DEVICES
        groups.setdefault((g.device, g.dtype, fused), []).append(g)
    return groups


def _accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms are accumulated in float32, or float64 for float64 gradients."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.no_grad()
def _total_norm(grads: list[torch.Tensor]) -> float:
    """Global L2 norm of ``grads`` (as one concatenated vector), with one host sync."""
    if not grads:
        return 0.0
    out_dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    target = grads[0].device
    norms: list[torch.Tensor] = []
    for (_, dtype, fused), group in _group(grads).items():
        acc = _accum_dtype(dtype)
        if fused and dtype == acc:
            norms.extend(torch._foreach_norm(group, 2))
        elif fused and _FOREACH_NORM_DTYPE:
            norms.extend(torch._foreach_norm(group, 2, dtype=acc))
        else:
            for g in group:
                values = g.coalesce().values() if g.is_sparse else g
                norms.append(torch.linalg.vector_norm(values, 2, dtype=acc))
    stacked = torch.stack([n.to(device=target, dtype=out_dtype) for n in norms])
    return float(torch.linalg.vector_norm(stacked, 2).item())


@torch.no_grad()
def _scale_(grads: list[torch.Tensor], coef: float) -> None:
    """Multiply every gradient in place by the Python scalar ``coef`` (no host sync)."""
    for (_, _, fused), group in _group(grads).items():
        if fused:
            torch._foreach_mul_(group, coef)
        else:
            for g in group:
                g.mul_(coef)


def _check_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _check_state_float(state: Mapping[str, Any], key: str, *, allow_none: bool = False) -> float | None:
    value = state[key]
    if value is None and allow_none:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"state_dict[{key!r}] must be a finite number, got {value!r}")
    return float(value)


def _check_state_floats(state: Mapping[str, Any], key: str) -> list[float]:
    values = state[key]
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise ValueError(f"state_dict[{key!r}] must be a list of numbers, got {type(values).__name__}")
    out: list[float] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"state_dict[{key!r}] must hold finite numbers, got {v!r}")
        out.append(float(v))
    return out


def _check_state_keys(state: Mapping[str, Any], keys: tuple[str, ...], owner: str) -> None:
    if not isinstance(state, Mapping):
        raise TypeError(f"{owner}.load_state_dict expects a dict, got {type(state).__name__}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{owner} state_dict is missing key(s): {', '.join(missing)}")
    version = state.get("version", _STATE_VERSION)
    if version != _STATE_VERSION:
        raise ValueError(f"{owner} state_dict has version {version!r}; this cliplab reads {_STATE_VERSION}")


# ----------------------------------------------------------------------------------------------
# ZClip
# ----------------------------------------------------------------------------------------------


def _check_state_steps(state: Mapping[str, Any], owner: str) -> tuple[int, float | None]:
    """``num_steps`` (a non-negative int) and the optional ``last_clip`` of a clipper's state dict."""
    num_steps = state["num_steps"]
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"{owner} state_dict: 'num_steps' must be a non-negative int, got {num_steps!r}")
    last_clip = _check_state_float(state, "last_clip", allow_none=True) if "last_clip" in state else None
    return num_steps, last_clip


class NormClipper:
    """What the adaptive clippers share: step counting, the last clip value, ``clipper(params)``."""

    _num_steps: int
    _last_clip: float | None

    @property
    def num_steps(self) -> int:
        """Number of ``step`` calls that saw a finite gradient norm."""
        return self._num_steps

    @property
    def last_clip(self) -> float | None:
        """Norm the gradients were clipped to on the last step, or ``None`` if they were not."""
        return self._last_clip

    def step(self, model_or_parameters: GradSource) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, model_or_parameters: GradSource) -> float:
        return self.step(model_or_parameters)
