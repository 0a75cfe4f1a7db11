"""Input validation shared by every public function (scikit-learn style: fail early, name the problem)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Self

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


def as_labels(y: ArrayLike, name: str = "labels", n: int | None = None, num_classes: int | None = None) -> torch.Tensor:
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


# --------------------------------------------------------------------- estimator parameters
class Interval:
    """A numeric parameter constraint: ``low``/``high`` bounds (``None``: unbounded), ``closed`` ends.

    ``closed`` is ``"both"``, ``"left"``, ``"right"`` or ``"neither"``; ``integer=True`` also requires an
    integral value; ``allow_none`` accepts ``None``. Values must be finite.
    """

    def __init__(
        self,
        low: float | None,
        high: float | None,
        *,
        closed: str = "both",
        integer: bool = False,
        allow_none: bool = False,
    ) -> None:
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be 'both', 'left', 'right' or 'neither', got {closed!r}")
        self.low, self.high, self.closed, self.integer, self.allow_none = low, high, closed, integer, allow_none

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            what = f"in {'[' if lo_in else '('}{self.low:g}, {self.high:g}{']' if hi_in else ')'}"
            return what if not self.integer else f"{kind} {what}"
        if self.low is not None:
            return f"{kind} {'>=' if lo_in else '>'} {self.low:g}"
        if self.high is not None:
            return f"{kind} {'<=' if hi_in else '<'} {self.high:g}"
        return kind

    def is_valid(self, value: Any) -> bool:
        if value is None:
            return self.allow_none
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return False
        v = float(value)
        if not np.isfinite(v) or (self.integer and v != int(v)):
            return False
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and (v < self.low or (v == self.low and not lo_in)):
            return False
        return not (self.high is not None and (v > self.high or (v == self.high and not hi_in)))

    def __call__(self, value: Any, name: str) -> None:
        if not self.is_valid(value):
            suffix = " or None" if self.allow_none else ""
            raise ValueError(f"{name} must be {self.describe()}{suffix}, got {value!r}")

    def __repr__(self) -> str:
        return f"Interval({self.describe()})"


class Options:
    """A parameter constraint: one of ``values``."""

    def __init__(self, *values: Any) -> None:
        self.values = values

    def __call__(self, value: Any, name: str) -> None:
        if value not in self.values:
            choices = " or ".join(repr(v) for v in self.values)
            raise ValueError(f"{name} must be {choices}, got {value!r}")

    def __repr__(self) -> str:
        return f"Options{self.values!r}"


#: a constraint: ``Interval``, ``Options`` or any callable ``(value, name) -> None`` raising ``ValueError``
Constraint = Callable[[Any, str], None]


class Estimator:
    """scikit-learn-style hyper-parameters: the constructor's arguments, stored unchanged as attributes.

    ``get_params(deep=True)``/``set_params(**params)`` (so ``sklearn.base.clone`` works) and ``_constraints``
    (``{name: constraint}``), checked by ``_validate_params()`` (subclasses call it at the start of ``fit``).
    """

    _constraints: ClassVar[Mapping[str, Constraint]] = {}

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments (scikit-learn style; ``deep`` is accepted, there are no nested estimators)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set constructor arguments; unknown names raise ``ValueError``."""
        names = self._param_names()
        for key, value in params.items():
            if key not in names:
                raise ValueError(f"{type(self).__name__} has no parameter {key!r}; parameters: {names}")
            setattr(self, key, value)
        return self

    def _validate_params(self) -> None:
        """Check every declared constraint against the current parameter values (``ValueError`` naming it)."""
        for name, constraint in self._constraints.items():
            constraint(getattr(self, name), name)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
