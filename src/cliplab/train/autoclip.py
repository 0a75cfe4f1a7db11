"""AutoClip (Seetharaman et al., MLSP 2020): clip to a percentile of every gradient norm seen so far.

Reference implementation: github.com/pseeth/autoclip. See ``cliplab.train.clipping`` for the shared
conventions (fused norm, one host sync per step, exact ``state_dict`` resume)."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from cliplab.train.clipper_base import (
    _COEF_EPS,
    _STATE_VERSION,
    GradSource,
    NormClipper,
    _check_real,
    _check_state_float,
    _check_state_floats,
    _check_state_keys,
    _check_state_steps,
    _collect_grads,
    _scale_,
    _total_norm,
)

__all__ = ["AutoClip"]


def _percentile_sorted(values: list[float], percentile: float) -> float:
    """``np.percentile(values, percentile)`` (default ``"linear"`` method) of a sorted list.

    Virtual index :math:`h = (n-1)\\,p/100`; result :math:`x_{\\lfloor h\\rfloor} + (h-\\lfloor
    h\\rfloor)(x_{\\lfloor h\\rfloor+1}-x_{\\lfloor h\\rfloor})`, evaluated as NumPy does (from the
    upper neighbour when the fraction is >= 0.5) so the result is bit-identical.
    """
    n = len(values)
    h = (n - 1) * (percentile / 100.0)
    if h >= n - 1:
        return values[-1]
    lo = math.floor(h)
    gamma = h - lo
    a, b = values[lo], values[lo + 1]
    diff = b - a
    return b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma


class AutoClip(NormClipper):
    r"""AutoClip: clip to a percentile of the history of gradient norms.

    Seetharaman et al., "AutoClip: Adaptive Gradient Clipping for Source Separation Networks",
    IEEE MLSP 2020; semantics of the reference ``autoclip.py`` (github.com/pseeth/autoclip).

    At step :math:`t` with total gradient L2 norm :math:`g_t`, the norm is appended to the history
    :math:`H_t` (all norms so far, the current one included, or the last ``history`` of them), and

    .. math::
        c_t = \text{percentile}(H_t, p)

    with NumPy's default linear interpolation (``np.percentile(H_t, p)``). Gradients are clipped as
    by ``torch.nn.utils.clip_grad_norm_(params, c_t)``: multiplied by
    :math:`\min(1, c_t/(g_t+10^{-6}))`.

    Args:
        percentile: :math:`p \in [0, 100]` (the paper recommends about 10).
        history: maximum number of most recent norms kept, or ``None`` to keep all of them.

    Differences from the reference: a non-finite norm is returned but neither recorded nor used
    to clip (the reference would record it and set every later threshold to NaN); a call with no
    gradients at all returns ``0.0`` and records nothing (the reference records 0). The percentile
    is maintained on a sorted list (``O(log n)`` search plus an ``O(n)`` memory move per step)
    instead of re-running ``np.percentile`` over the whole history.
    """

    def __init__(self, percentile: float = 10.0, history: int | None = None) -> None:
        percentile = _check_real(percentile, "percentile")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}")
        if history is not None and (isinstance(history, bool) or not isinstance(history, int) or history < 1):
            raise ValueError(f"history must be a positive integer or None, got {history!r}")
        self.percentile = percentile
        self.history = history
        self.reset()

    def reset(self) -> None:
        """Forget the norm history."""
        self._norms: deque[float] = deque(maxlen=self.history)  # chronological
        self._sorted: list[float] = []
        self._num_steps = 0
        self._last_clip: float | None = None
        self._last_threshold: float | None = None

    @property
    def norms(self) -> list[float]:
        """The recorded norms, oldest first."""
        return list(self._norms)

    @property
    def threshold(self) -> float | None:
        """Percentile threshold :math:`c_t` computed on the last step."""
        return self._last_threshold

    def _record(self, norm: float) -> None:
        if self.history is not None and len(self._norms) == self.history:
            oldest = self._norms[0]
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._norms.append(norm)
        bisect.insort(self._sorted, norm)

    def state_dict(self) -> dict[str, Any]:
        """Running state (plain Python values; hyper-parameters come from the constructor)."""
        return {
            "version": _STATE_VERSION,
            "num_steps": self._num_steps,
            "norms": list(self._norms),
            "last_clip": self._last_clip,
            "threshold": self._last_threshold,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict` (keeps the last ``history`` norms)."""
        _check_state_keys(state_dict, ("num_steps", "norms"), "AutoClip")
        norms = _check_state_floats(state_dict, "norms")
        num_steps, last_clip = _check_state_steps(state_dict, "AutoClip")
        threshold = _check_state_float(state_dict, "threshold", allow_none=True) if "threshold" in state_dict else None
        self.reset()
        for v in norms:
            self._record(v)
        self._num_steps = num_steps
        self._last_clip = last_clip
        self._last_threshold = threshold

    def step(self, model_or_parameters: GradSource) -> float:
        """Clip the gradients in place; call after ``backward()``, before ``optimizer.step()``.

        Args:
            model_or_parameters: a module, a tensor, an iterable of tensors or optimizer
                ``param_groups``. Parameters without ``.grad`` are ignored.

        Returns:
            The total gradient L2 norm before clipping.
        """
        grads = _collect_grads(model_or_parameters)
        self._last_clip = None
        if not grads:
            return 0.0
        norm = _total_norm(grads)
        if not math.isfinite(norm):
            return norm
        self._num_steps += 1
        self._record(norm)
        threshold = _percentile_sorted(self._sorted, self.percentile)
        self._last_threshold = threshold
        coef = threshold / (norm + _COEF_EPS)
        if coef < 1.0:
            _scale_(grads, coef)
            self._last_clip = threshold
        return norm

    def __repr__(self) -> str:
        return f"AutoClip(percentile={self.percentile}, history={self.history})"
