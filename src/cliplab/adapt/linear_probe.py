"""Linear probe: multinomial logistic regression on frozen CLIP features (Radford et al., ICML 2021)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from cliplab._validation import as_features, as_labels
from cliplab.adapt.base import (
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    SIZE,
    Adapter,
    Interval,
    Options,
    check_positive,
    concat_views,
    mean_views,
)

__all__ = ["LinearProbe"]

#: lpclip's initial search list (CoOp ``lpclip/linear_probe.py``), in its order
LPCLIP_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


def lpclip_search(
    score: Callable[[float], float], grid: Sequence[float] = LPCLIP_GRID, steps: int = 8
) -> tuple[float, list[dict[str, float]]]:
    """CoOp's ``lpclip`` search for ``C``: a log grid, then ``steps`` rounds of binary search → ``(C, table)``.

    ``score(C)`` is the validation accuracy of the probe fitted with ``C``. The peak of ``grid`` (the first
    best, in ``grid``'s order) gives the bracket ``[peak/10, 10·peak]``; each round scores both ends and keeps
    the better (the left one on a tie), then halves the bracket in log10 towards it: right better →
    ``[mid, right]``, else ``[left, mid]`` with ``mid`` the log-midpoint. The result is the end kept in the last
    round (the peak when ``steps`` is 0). ``table`` lists every distinct ``C`` scored, in order.
    """
    memo: dict[float, float] = {}
    table: list[dict[str, float]] = []

    def acc(c: float) -> float:
        if c not in memo:
            memo[c] = float(score(c))
            table.append({"C": c, "val_accuracy": memo[c]})
        return memo[c]

    accs = [acc(float(c)) for c in grid]
    best = float(grid[max(range(len(accs)), key=lambda i: (accs[i], -i))])
    left, right = 0.1 * best, 10.0 * best
    for _ in range(int(steps)):
        a_left, a_right = acc(left), acc(right)
        lo, hi = math.log10(left), math.log10(right)
        if a_left < a_right:
            best, lo = right, 0.5 * (lo + hi)
        else:
            best, hi = left, 0.5 * (lo + hi)
        left, right = 10.0**lo, 10.0**hi
    return best, table


class LinearProbe(Adapter):
    """L2-regularised multinomial logistic regression, full-batch L-BFGS in torch.

    Minimises ``mean_i CE(f_i·Wᵀ + b, y_i) + ‖W − W₀‖² / (2·C·N)``: scikit-learn's
    ``LogisticRegression(C=C)`` objective (``C · Σ CE + ½‖W‖²``, divided by ``C·N``; the bias is not
    penalised), as used for CLIP's linear-probe evaluation (Radford et al., 2021) and CoOp's ``lpclip``.
    ``W₀ = 0`` by default; with ``zs_init=True`` the probe starts from and is pulled towards the zero-shot
    classifier, ``W₀ = logit_scale · Wₜₑₓₜ`` (a "zero-shot-initialised" probe; large ``C`` lets the data
    move it, small ``C`` keeps it zero-shot). In both cases the logits are the probe's alone: ``f·Wᵀ + b``.

    ``C=None`` searches ``C`` as CoOp's ``lpclip`` does (``lpclip_search``: the grid ``1e6 … 1e-6`` then 8
    rounds of binary search, each fit with ``max_iter`` 1000 by default) on a validation set: the one passed
    to ``fit(..., val_features=, val_labels=)`` (the few-shot protocol passes ``min(k, 4)`` clean images per
    class of the dataset's validation split, as lpclip), else — the documented fallback for data without
    one — a stratified split of the support set (``val_fraction`` per class, drawn with ``seed``). It then
    refits on the whole support set; the choice is in ``C_`` and the scores in ``search_table_``. Without any
    validation sample (one shot per class, no validation set) it warns and uses ``fallback_C``.

    Features: we fit the L2-normalised image features cliplab caches (``lpclip`` fits the unnormalised
    ``clip_model.visual`` output, so the same ``C`` regularises differently there; the search absorbs the
    scale). ``[V, N, D]`` support features are concatenated as extra rows (the protocol gives the probe the
    clean features only, as lpclip extracts them without augmentation).
    """

    validation_search: ClassVar[bool] = True
    #: after ``fit``: the searched ``C`` values and their validation scores (None when ``C`` was given)
    search_table_: list[dict[str, float]] | None
    _constraints = {
        "C": Interval(0, None, closed="neither", allow_none=True),
        "zs_init": Options(False, True),
        "max_iter": SIZE,
        "tol": NON_NEGATIVE,
        "val_fraction": Interval(0, 1, closed="neither"),
        "fallback_C": POSITIVE,
        "search_steps": COUNT,
        "seed": SEED,
    }

    def __init__(
        self,
        C: float | None = None,
        zs_init: bool = False,
        max_iter: int = 1000,
        tol: float = 1e-5,
        C_grid: list[float] | None = None,
        search_steps: int = 8,
        val_fraction: float = 0.25,
        fallback_C: float = 10.0,
        seed: int = 0,
    ) -> None:
        self.C = C
        self.zs_init = zs_init
        self.max_iter = max_iter
        self.tol = tol
        self.C_grid = C_grid
        self.search_steps = search_steps
        self.val_fraction = val_fraction
        self.fallback_C = fallback_C
        self.seed = seed

    def _fit(self, X: torch.Tensor, y: torch.Tensor, *, val_features: Any = None, val_labels: Any = None) -> None:
        max_iter = int(self.max_iter)
        W0 = self._s0_weights if self.zs_init else torch.zeros_like(self.text_weights_)
        if self.C is not None:
            C = float(self.C)
            self.search_table_ = None
        else:
            C = self._search_C(X, y, W0, max_iter, val_features, val_labels)
        Xc, yc = concat_views(X, y)
        self.C_ = C
        self.coef_, self.intercept_ = _fit_logreg(Xc, yc, W0, W0.clone(), None, C, max_iter, self.tol)

    def _search_C(
        self, X: torch.Tensor, y: torch.Tensor, W0: torch.Tensor, max_iter: int, val_features: Any, val_labels: Any
    ) -> float:
        from cliplab.adapt.search import split_validation

        grid = [check_positive(c, "C_grid entry") for c in (self.C_grid or LPCLIP_GRID)]
        if val_features is not None:
            if val_labels is None:
                raise ValueError("LinearProbe.fit got val_features without val_labels")
            Xv = as_features(val_features, "val_features", dim=X.shape[2])
            yv = as_labels(val_labels, "val_labels", n=Xv.shape[0], num_classes=self.n_classes_)
            Xt, yt = concat_views(X, y)
        elif int(torch.bincount(y).max()) < 2:
            warnings.warn(
                f"LinearProbe: no validation split possible (every class has a single sample and no validation "
                f"set was given); using fallback_C={self.fallback_C}",
                stacklevel=3,
            )
            self.search_table_ = None
            return float(self.fallback_C)
        else:
            train, val = split_validation(y, val_fraction=self.val_fraction, seed=self.seed)
            Xt, yt = concat_views(X[:, train], y[train])
            Xv, yv = mean_views(X[:, val]), y[val]  # clean [1, N, D] input: the held-out images themselves
        fits: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

        def score(c: float) -> float:
            # warm start from the fit with the nearest C (the objective is strictly convex: same optimum)
            near = min(fits, key=lambda k: abs(math.log(k / c)), default=None)
            W_init, b_init = fits[near] if near is not None else (W0.clone(), None)
            W, b = _fit_logreg(Xt, yt, W0, W_init, b_init, c, max_iter, self.tol)
            fits[c] = (W, b)
            with torch.no_grad():
                return float((torch.addmm(b, Xv, W.T).argmax(1) == yv).float().mean())

        C, self.search_table_ = lpclip_search(score, grid, int(self.search_steps))
        return C

    def _logits(self, f: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.intercept_, f, self.coef_.T)


def _fit_logreg(
    X: torch.Tensor,
    y: torch.Tensor,
    W0: torch.Tensor,
    W_init: torch.Tensor,
    b_init: torch.Tensor | None,
    C: float,
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch L-BFGS (strong Wolfe line search) on ``mean CE + ‖W − W0‖²/(2CN)``."""
    lam = 1.0 / (C * X.shape[0])
    W = W_init.detach().clone().requires_grad_(True)
    b = (torch.zeros(W.shape[0], device=W.device) if b_init is None else b_init.detach().clone()).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        max_eval=int(max_iter * 1.25) + 1,
        tolerance_grad=tol,
        tolerance_change=1e-9,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(torch.addmm(b, X, W.T), y) + 0.5 * lam * (W - W0).pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()
