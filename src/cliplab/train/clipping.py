"""Adaptive gradient clipping: ZClip (z-score / EMA based) and AutoClip (percentile based).

Both clippers are called between ``loss.backward()`` and ``optimizer.step()``::

    clipper = ZClip()
    for batch in loader:
        loss = compute_loss(model, batch)
        loss.backward()
        grad_norm = clipper.step(model)  # total L2 norm before clipping; grads scaled in place
        optimizer.step()
        optimizer.zero_grad()

``step`` accepts a module, a single tensor, an iterable of tensors, or an optimizer's
``param_groups`` (dicts with a ``"params"`` entry). Parameters whose ``.grad`` is ``None`` are
ignored. The total norm is computed with one fused pass per (device, dtype) group
(``torch._foreach_norm``, accumulated in float32 or better), reduced with one
``torch.linalg.vector_norm`` over the stacked per-tensor norms, and read back with a single
host synchronisation (``.item()``) per step; the in-place scaling (``torch._foreach_mul_``)
needs no further synchronisation.

Both clippers keep their running statistics as plain Python floats and can be checkpointed with
``state_dict()`` / ``load_state_dict()``; a resumed clipper continues exactly as the original.

References
----------
* ZClip: A. Kumar, L. Owen, N. R. Chowdhury, F. Güra, "ZClip: Adaptive Spike Mitigation for LLM
  Pre-Training", 2025 (arXiv:2504.02507). Reference implementation: PyPI ``zclip`` 1.0.0
  (github.com/bluorion-com/ZClip).
* AutoClip: P. Seetharaman, G. Wichern, B. Pardo, J. Le Roux, "AutoClip: Adaptive Gradient
  Clipping for Source Separation Networks", IEEE MLSP 2020. Reference implementation:
  github.com/pseeth/autoclip (``autoclip.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cliplab.train.autoclip import AutoClip, _percentile_sorted
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

__all__ = ["AutoClip", "ZClip", "_percentile_sorted"]


class ZClip(NormClipper):
    r"""ZClip: adaptive gradient clipping by z-score anomaly detection on the gradient norm.

    Kumar et al., "ZClip: Adaptive Spike Mitigation for LLM Pre-Training", 2025
    (arXiv:2504.02507). Semantics follow the authors' reference implementation (PyPI ``zclip``
    1.0.0); the differences are listed at the end.

    Let :math:`g_t` be the total L2 norm of all gradients at step :math:`t`.

    **Warm-up.** For the first ``warmup_steps`` calls the norms are only collected (and, if
    ``max_grad_norm`` is set, gradients are clipped to it exactly as
    ``torch.nn.utils.clip_grad_norm_`` does). On the call that fills the buffer, the statistics are
    initialised from it: :math:`\mu = \frac1N\sum g_i`, :math:`v = \frac1N\sum (g_i-\mu)^2`
    (population variance). No adaptive clipping happens during warm-up, including on that call.
    ``warmup_steps=0`` behaves like ``warmup_steps=1`` (the first norm initialises the statistics).

    **After warm-up**, with :math:`\sigma = \sqrt{v}`:

    * ``mode="zscore"``: :math:`z = (g_t-\mu)/(\sigma+\varepsilon)`. A spike is
      :math:`z > z_{thresh}`; then the threshold :math:`c_t` is

      - ``clip_option="adaptive_scaling"``:
        :math:`c_t = \text{clip\_factor}\cdot\left(\mu + \frac{z_{thresh}\,\sigma}{z/z_{thresh}}\right)
        = \text{clip\_factor}\cdot(\mu + z_{thresh}^2\,\sigma / z)` (``clip_factor`` scales the whole
        threshold, as in the reference code, not only the :math:`z_{thresh}\sigma` term its docstring
        mentions);
      - ``clip_option="mean"``: :math:`c_t = \mu`.

      As in the reference, a spike with ``clip_factor > 1`` can give :math:`c_t > g_t`: the
      gradients are then left as they are, but the statistics still receive :math:`c_t`.

    * ``mode="percentile"``: a spike is :math:`g_t > \mu + z_{thresh}\,\sigma` (no
      :math:`\varepsilon`), and :math:`c_t = \mu + z_{thresh}\,\sigma`.

    The gradients are then clipped to :math:`m_t = \min(c_t, \text{max\_grad\_norm})` (each term
    only if defined; :math:`c_t` is undefined when there is no spike): if :math:`g_t > m_t` they are
    multiplied by :math:`m_t/(g_t + 10^{-6})`.

    **Statistics update** (skipped on a spike when ``skip_update_on_spike=True``), with
    :math:`x = c_t` on a spike, else :math:`x = g_t` (``max_grad_norm`` never enters the
    statistics), the variance using the already-updated mean:

    .. math::
        \mu \leftarrow \alpha\mu + (1-\alpha)x, \qquad
        v \leftarrow \alpha v + (1-\alpha)(x-\mu)^2.

    Args:
        alpha: EMA smoothing factor in (0, 1); larger = slower statistics.
        z_thresh: spike threshold on the z-score (``zscore`` mode, > 0) or the number of standard
            deviations above the mean (``percentile`` mode, >= 0).
        max_grad_norm: optional fixed clip applied on every step (warm-up included) on top of the
            adaptive one. **Default ``None`` (pure ZClip)** — unlike the reference package, whose
            default ``max_grad_norm=1.0`` also clips every step at 1.0. Pass ``1.0`` to reproduce it.
        eps: added to :math:`\sigma` in the z-score (> 0).
        warmup_steps: number of initial steps whose norms initialise the statistics (>= 0).
        mode: ``"zscore"`` or ``"percentile"`` (case-insensitive).
        clip_option: ``"adaptive_scaling"`` or ``"mean"`` (case-insensitive); used in ``zscore``
            mode only, but validated in both.
        clip_factor: multiplier of the adaptive threshold (> 0; 0.5–0.9 is more aggressive).
        skip_update_on_spike: if True, spikes do not update the statistics.

    Differences from the reference (deliberate):

    * ``max_grad_norm`` defaults to ``None`` (see above).
    * A non-finite total norm (inf/NaN, e.g. an fp16 overflow before ``GradScaler`` skips the
      step) is returned but neither clips the gradients nor touches the statistics; in the
      reference a NaN (or an inf during warm-up) turns the mean/variance into NaN for good, which
      silently disables clipping from then on.
    * A call where no parameter has a gradient returns ``0.0`` and leaves the statistics alone; the
      reference records a norm of 0.
    * Per-tensor norms are accumulated in float32 (float64 for float64 gradients) instead of the
      first parameter's dtype; identical for float32 models.
    * Unknown ``clip_option`` values raise ``ValueError`` in ``percentile`` mode too, and all
      arguments are range-checked (``ValueError``) instead of ``assert``-ed.
    * FSDP-sharded gradients are not all-reduced: the norm is that of the local gradients, which is
      the global norm for single-process and DDP training (gradients already averaged).
    """

    def __init__(
        self,
        alpha: float = 0.97,
        z_thresh: float = 2.5,
        max_grad_norm: float | None = None,
        eps: float = 1e-6,
        warmup_steps: int = 25,
        mode: str = "zscore",
        clip_option: str = "adaptive_scaling",
        clip_factor: float = 1.0,
        skip_update_on_spike: bool = False,
    ) -> None:
        alpha = _check_real(alpha, "alpha")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if not isinstance(mode, str) or mode.lower() not in ("zscore", "percentile"):
            raise ValueError(f"mode must be 'zscore' or 'percentile', got {mode!r}")
        mode = mode.lower()
        if not isinstance(clip_option, str) or clip_option.lower() not in ("adaptive_scaling", "mean"):
            raise ValueError(f"clip_option must be 'adaptive_scaling' or 'mean', got {clip_option!r}")
        clip_option = clip_option.lower()
        z_thresh = _check_real(z_thresh, "z_thresh")
        if mode == "zscore" and z_thresh <= 0.0:
            raise ValueError(f"z_thresh must be > 0 in zscore mode, got {z_thresh}")
        if z_thresh < 0.0:
            raise ValueError(f"z_thresh must be >= 0, got {z_thresh}")
        if max_grad_norm is not None:
            max_grad_norm = _check_real(max_grad_norm, "max_grad_norm")
            if max_grad_norm <= 0.0:
                raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
        eps = _check_real(eps, "eps")
        if eps <= 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        clip_factor = _check_real(clip_factor, "clip_factor")
        if clip_factor <= 0.0:
            raise ValueError(f"clip_factor must be > 0, got {clip_factor}")
        if not isinstance(skip_update_on_spike, bool):
            raise ValueError(f"skip_update_on_spike must be a bool, got {skip_update_on_spike!r}")

        self.alpha = alpha
        self.z_thresh = z_thresh
        self.max_grad_norm = max_grad_norm
        self.eps = eps
        self.warmup_steps = warmup_steps
        self.mode = mode
        self.clip_option = clip_option
        self.clip_factor = clip_factor
        self.skip_update_on_spike = skip_update_on_spike
        self.reset()

    # -- state ------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all statistics (back to the start of warm-up)."""
        self._buffer: list[float] = []
        self._mean: float | None = None
        self._var: float | None = None
        self._num_steps = 0
        self._last_clip: float | None = None
        self._last_spike = False

    @property
    def initialized(self) -> bool:
        """Whether warm-up is over and the EMA statistics exist."""
        return self._mean is not None

    @property
    def mean(self) -> float | None:
        """EMA mean :math:`\\mu` of the gradient norm (``None`` during warm-up)."""
        return self._mean

    @property
    def var(self) -> float | None:
        """EMA variance :math:`v` of the gradient norm (``None`` during warm-up)."""
        return self._var

    @property
    def std(self) -> float | None:
        """:math:`\\sqrt{v}` (``None`` during warm-up)."""
        return None if self._var is None else self._var**0.5

    @property
    def last_spike(self) -> bool:
        """Whether the last step was detected as a spike (always False during warm-up)."""
        return self._last_spike

    def state_dict(self) -> dict[str, Any]:
        """Running state (plain Python values; hyper-parameters come from the constructor)."""
        return {
            "version": _STATE_VERSION,
            "num_steps": self._num_steps,
            "buffer": list(self._buffer),
            "mean": self._mean,
            "var": self._var,
            "last_clip": self._last_clip,
            "last_spike": self._last_spike,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict`; the next ``step`` continues exactly."""
        _check_state_keys(state_dict, ("num_steps", "buffer", "mean", "var"), "ZClip")
        mean = _check_state_float(state_dict, "mean", allow_none=True)
        var = _check_state_float(state_dict, "var", allow_none=True)
        if (mean is None) != (var is None):
            raise ValueError("ZClip state_dict: 'mean' and 'var' must both be set or both be None")
        if var is not None and var < 0.0:
            raise ValueError(f"ZClip state_dict: 'var' must be >= 0, got {var}")
        buffer = _check_state_floats(state_dict, "buffer")
        num_steps, last_clip = _check_state_steps(state_dict, "ZClip")
        self._buffer = buffer
        self._mean, self._var = mean, var
        self._num_steps = num_steps
        self._last_clip = last_clip
        self._last_spike = bool(state_dict.get("last_spike", False))

    # -- algorithm --------------------------------------------------------------------------------

    def _threshold(self, norm: float) -> float | None:
        """Adaptive clip value :math:`c_t`, or ``None`` if ``norm`` is not a spike."""
        assert self._mean is not None and self._var is not None
        mean, std = self._mean, self._var**0.5
        if self.mode == "percentile":
            threshold = mean + self.z_thresh * std
            return threshold if norm > threshold else None
        z = (norm - mean) / (std + self.eps)
        if z <= self.z_thresh:
            return None
        if self.clip_option == "mean":
            return mean
        return self.clip_factor * (mean + (self.z_thresh * std) / (z / self.z_thresh))

    def _update(self, x: float) -> None:
        assert self._mean is not None and self._var is not None
        a = self.alpha
        self._mean = a * self._mean + (1.0 - a) * x
        self._var = a * self._var + (1.0 - a) * (x - self._mean) ** 2  # uses the updated mean

    def step(self, model_or_parameters: GradSource) -> float:
        """Clip the gradients in place; call after ``backward()``, before ``optimizer.step()``.

        Args:
            model_or_parameters: a module, a tensor, an iterable of tensors or optimizer
                ``param_groups``. Parameters without ``.grad`` are ignored.

        Returns:
            The total gradient L2 norm before clipping.
        """
        grads = _collect_grads(model_or_parameters)
        self._last_clip, self._last_spike = None, False
        if not grads:
            return 0.0
        norm = _total_norm(grads)
        if not math.isfinite(norm):
            return norm
        self._num_steps += 1

        if not self.initialized:
            self._buffer.append(norm)
            if len(self._buffer) >= self.warmup_steps:
                n = len(self._buffer)
                mean = sum(self._buffer) / n
                self._var = sum((x - mean) ** 2 for x in self._buffer) / n
                self._mean = mean
                self._buffer = []
            if self.max_grad_norm is not None:
                # Same rule as torch.nn.utils.clip_grad_norm_ (what the reference calls here).
                coef = self.max_grad_norm / (norm + _COEF_EPS)
                if coef < 1.0:
                    _scale_(grads, coef)
                    self._last_clip = self.max_grad_norm
            return norm

        threshold = self._threshold(norm)
        clip = norm if threshold is None else threshold
        if self.max_grad_norm is not None:
            clip = min(clip, self.max_grad_norm)
        if norm > clip:
            _scale_(grads, clip / (norm + _COEF_EPS))
            self._last_clip = clip
        self._last_spike = threshold is not None
        if threshold is not None and self.skip_update_on_spike:
            return norm
        self._update(norm if threshold is None else threshold)
        return norm

    def __repr__(self) -> str:
        return (
            f"ZClip(alpha={self.alpha}, z_thresh={self.z_thresh}, max_grad_norm={self.max_grad_norm}, "
            f"eps={self.eps}, warmup_steps={self.warmup_steps}, mode={self.mode!r}, "
            f"clip_option={self.clip_option!r}, clip_factor={self.clip_factor}, "
            f"skip_update_on_spike={self.skip_update_on_spike})"
        )


# ----------------------------------------------------------------------------------------------
# AutoClip
# ----------------------------------------------------------------------------------------------
