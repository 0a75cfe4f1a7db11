"""Split conformal prediction sets for classifiers (LAC, APS, RAPS; marginal or class-conditional).

Calibration: scores ``s_i = s(x_i, y_i)`` of ``n`` held-out samples; ``q̂`` = the ``k``-th smallest, with
``k = ⌈(n + 1)(1 − α)⌉``, the empirical quantile at level ``k/n`` (Vovk et al. 2005; Angelopoulos & Bates,
"A Gentle Introduction to Conformal Prediction", 2021). Then ``P(y ∈ C(x)) ≥ 1 − α`` for exchangeable data.
When ``k > n`` (``n < 1/α − 1``) the quantile is infinite and ``fit`` refuses. Mondrian (class-conditional,
Vovk 2003): one ``q̂_c`` from the calibration samples of each class, ``P(y ∈ C(x) | y = c) ≥ 1 − α``.

Scores, with ``p = softmax(logits)``, labels sorted by decreasing ``p`` and ``r(y)`` the 1-based rank of ``y``:

* LAC (Sadinle, Lei & Wasserman 2019): ``s(x, y) = 1 − p_y``; ``C(x) = {y : s(x, y) ≤ q̂}``.
* APS (Romano, Sesia & Candès 2020): ``s(x, y) = Σ_{r(j) ≤ r(y)} p_j`` (mass up to and including ``y``).
* RAPS (Angelopoulos et al. 2021): APS ``+ λ·max(0, r(y) − k_reg)``.

APS/RAPS sets: non-randomized (the papers' deterministic variant, MAPIE's default ``include_last_label=True``)
``C(x)`` = the labels in rank order up to and including the first whose score reaches ``q̂`` (never
empty; conservative). Randomized (``randomized=True``, the papers' exact-coverage variant): ``U ~ U(0, 1)``
per sample, calibration and test alike, ``s(x, y, U) = s(x, y) − U·p_y``, ``C(x) = {y : s(x, y, U) ≤ q̂}``
(may be empty). With Mondrian the threshold of label ``y`` is ``q̂_y``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

import torch

from cliplab._validation import ArrayLike, Constraint, Estimator, Interval, Options, as_labels, as_tensor

__all__ = ["ConformalClassifier", "conformal_quantile", "conformal_set_mask", "conformity_scores", "coverage_and_size"]

METHODS = ("lac", "aps", "raps")


def _k(n: int, alpha: float) -> int:
    # round() guards against (n + 1)(1 − α) landing a hair above an integer, e.g. 0.9 · 100 = 90.00000000000001
    return math.ceil(round((n + 1) * (1.0 - alpha), 9))


def conformal_quantile(scores: ArrayLike, alpha: float) -> float:
    """``q̂`` = the ``⌈(n + 1)(1 − α)⌉``-th smallest of ``scores`` (``np.quantile(..., k/n, method="inverted_cdf")``).

    ``ValueError`` when ``n < 1/α − 1``: then ``k > n`` and the quantile is infinite.
    """
    s = as_tensor(scores, "scores", dtype=torch.float64, ndim=1)
    n, k = s.numel(), _k(s.numel(), alpha)
    if k > n:
        raise ValueError(
            f"{n} calibration score(s) are too few for alpha={alpha}: the conformal quantile is infinite when "
            f"n < 1/alpha - 1 = {1 / alpha - 1:g} (need n >= {math.ceil(round(1 / alpha - 1, 9))})"
        )
    return float(torch.kthvalue(s, k).values)


def _ranked(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Descending sort order and the 1-based rank of every label."""
    order = torch.sort(probs, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(1, probs.shape[1] + 1).expand_as(order).clone())
    return order, ranks


def conformity_scores(
    probs: torch.Tensor, method: str, *, k_reg: int = 1, lam: float = 0.01, u: torch.Tensor | None = None
) -> torch.Tensor:
    """``s(x, y)`` for every sample and label ``[N, C]`` (formulas in the module docstring).

    ``u`` ``[N]`` randomizes APS/RAPS: ``s(x, y) − u·p_y``.
    """
    if method == "lac":
        return 1.0 - probs
    order, ranks = _ranked(probs)
    cumulative = torch.cumsum(torch.gather(probs, 1, order), dim=1)
    s = torch.empty_like(probs).scatter_(1, order, cumulative)
    if method == "raps":
        s = s + lam * (ranks - k_reg).clamp_min(0).to(probs.dtype)
    if u is not None:
        s = s - u[:, None] * probs
    return s


def conformal_set_mask(
    probs: torch.Tensor,
    qhat: torch.Tensor,
    method: str,
    *,
    k_reg: int = 1,
    lam: float = 0.01,
    u: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean ``[N, C]`` sets for thresholds ``qhat`` ``[C]`` (label ``y`` uses ``qhat[y]``).

    LAC, or APS/RAPS with ``u``: ``{y : s(x, y) ≤ q̂_y}``; APS/RAPS without ``u``: label ``y`` is in the set when
    it ranks first or the score of the label ranked just above it is below ``q̂_y`` (include the crossing label).
    """
    s = conformity_scores(probs, method, k_reg=k_reg, lam=lam, u=u)
    if method == "lac" or u is not None:
        return s <= qhat[None, :]
    order, _ = _ranked(probs)
    sorted_s = torch.gather(s, 1, order)
    above = torch.cat([torch.full_like(sorted_s[:, :1], -math.inf), sorted_s[:, :-1]], dim=1)
    previous = torch.empty_like(s).scatter_(1, order, above)  # score of the label ranked just above y
    return previous < qhat[None, :]


class ConformalClassifier(Estimator):
    """Split conformal prediction sets from classifier logits (LAC, APS or RAPS; see the module docstring).

    ``fit(cal_logits [n, C], cal_labels [n]) -> self`` calibrates ``qhat_`` (float64 ``[C]``; one value
    repeated unless ``mondrian``); ``predict_sets(logits [N, C]) -> bool [N, C]``. ``k_reg``/``lam`` are RAPS's
    regularisation; ``randomized`` uses the exact-coverage randomized APS/RAPS scores with uniforms drawn
    from a generator seeded by ``seed`` at ``fit`` (``None``: fresh entropy).
    """

    _constraints: ClassVar[dict[str, Constraint]] = {
        "method": Options(*METHODS),
        "alpha": Interval(0, 1, closed="neither"),
        "mondrian": Options(False, True),
        "k_reg": Interval(0, None, integer=True),
        "lam": Interval(0, None),
        "randomized": Options(False, True),
        "seed": Interval(None, None, integer=True, allow_none=True),
    }

    def __init__(
        self,
        method: str = "lac",
        alpha: float = 0.1,
        *,
        mondrian: bool = False,
        k_reg: int = 1,
        lam: float = 0.01,
        randomized: bool = False,
        seed: int | None = None,
    ) -> None:
        self.method = method
        self.alpha = alpha
        self.mondrian = mondrian
        self.k_reg = k_reg
        self.lam = lam
        self.randomized = randomized
        self.seed = seed

    def _probs(self, logits: ArrayLike, name: str, num_classes: int | None = None) -> torch.Tensor:
        z = as_tensor(logits, name, dtype=torch.float64, ndim=2)
        if z.shape[1] < 2:
            raise ValueError(f"{name} must have at least 2 classes (columns), got shape {tuple(z.shape)}")
        if num_classes is not None and z.shape[1] != num_classes:
            raise ValueError(f"{name} has {z.shape[1]} classes but the classifier was calibrated on {num_classes}")
        return torch.softmax(z, dim=1)

    def _uniforms(self, n: int) -> torch.Tensor | None:
        if not self.randomized:
            return None
        return torch.rand(n, generator=self._generator, dtype=torch.float64)

    def _score_kwargs(self) -> dict[str, Any]:
        return {"k_reg": int(self.k_reg), "lam": float(self.lam)}

    def fit(self, cal_logits: ArrayLike, cal_labels: ArrayLike) -> Self:
        """Calibrate ``qhat_`` on held-out logits ``[n, C]`` and labels ``[n]``."""
        self._validate_params()
        if self.randomized and self.method == "lac":
            raise ValueError("randomized=True applies to method 'aps' or 'raps'; LAC scores are not randomized")
        probs = self._probs(cal_logits, "cal_logits")
        n, c = probs.shape
        y = as_labels(cal_labels, "cal_labels", n=n, num_classes=c)
        alpha = float(self.alpha)
        if self.mondrian:
            counts = torch.bincount(y, minlength=c)
            few = [k for k in range(c) if _k(int(counts[k]), alpha) > int(counts[k])]
            if few:
                shown = ", ".join(f"class {k} (n={int(counts[k])})" for k in few[:5]) + (" ..." if len(few) > 5 else "")
                raise ValueError(
                    f"mondrian=True needs at least 1/alpha - 1 = {1 / alpha - 1:g} calibration samples per class, "
                    f"else the class's conformal quantile is infinite; too few for {len(few)} class(es): {shown}. "
                    f"Use more calibration data, a larger alpha or mondrian=False"
                )
        elif _k(n, alpha) > n:
            conformal_quantile(torch.zeros(n), alpha)  # raises, naming n and the minimum
        self._generator = torch.Generator()
        if self.seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(int(self.seed))
        u = self._uniforms(n)
        s = conformity_scores(probs, self.method, u=u, **self._score_kwargs())
        cal = s[torch.arange(n), y]
        if self.mondrian:
            qhat = torch.tensor([conformal_quantile(cal[y == k], alpha) for k in range(c)], dtype=torch.float64)
        else:
            qhat = torch.full((c,), conformal_quantile(cal, alpha), dtype=torch.float64)
        self.calibration_scores_ = cal
        self.qhat_ = qhat
        self.num_classes_ = c
        self.n_calibration_ = n
        return self

    def predict_sets(self, logits: ArrayLike) -> torch.Tensor:
        """Prediction sets ``bool [N, C]`` for ``logits`` ``[N, C]``."""
        if not hasattr(self, "qhat_"):
            raise RuntimeError("ConformalClassifier is not fitted; call fit(cal_logits, cal_labels) first")
        probs = self._probs(logits, "logits", self.num_classes_)
        u = self._uniforms(probs.shape[0])
        return conformal_set_mask(probs, self.qhat_, self.method, u=u, **self._score_kwargs())


def coverage_and_size(sets: ArrayLike, labels: ArrayLike) -> dict[str, Any]:
    """``coverage`` (share of samples whose label is in its set), ``mean_size``, ``empty_fraction``, and
    ``per_class_coverage`` / ``per_class_size`` (NumPy ``[C]`` over the samples of each true class; NaN where
    a class has no samples) of boolean sets ``[N, C]``."""
    m = as_tensor(sets, "sets", dtype=None, ndim=2)
    if m.dtype != torch.bool:
        if bool(((m != 0) & (m != 1)).any()):
            raise ValueError("sets must be boolean (or 0/1) of shape [N, C]")
        m = m != 0
    n, c = m.shape
    y = as_labels(labels, "labels", n=n, num_classes=c)
    covered = m[torch.arange(n), y].double()
    size = m.sum(1).double()
    count = torch.bincount(y, minlength=c).double()
    per_cov = (torch.zeros(c, dtype=torch.float64).index_add_(0, y, covered) / count).numpy()  # 0/0 = NaN
    per_size = (torch.zeros(c, dtype=torch.float64).index_add_(0, y, size) / count).numpy()
    return {
        "coverage": float(covered.mean()),
        "mean_size": float(size.mean()),
        "empty_fraction": float((size == 0).double().mean()),
        "per_class_coverage": per_cov,
        "per_class_size": per_size,
    }
