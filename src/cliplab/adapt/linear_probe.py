"""Linear probe: multinomial logistic regression on frozen CLIP features (Radford et al., ICML 2021)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

from cliplab.adapt.base import (
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

_C_GRID = [1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4]


class LinearProbe(Adapter):
    """L2-regularised multinomial logistic regression, full-batch L-BFGS in torch.

    Minimises ``mean_i CE(f_i·Wᵀ + b, y_i) + ‖W − W₀‖² / (2·C·N)``: scikit-learn's
    ``LogisticRegression(C=C)`` objective (``C · Σ CE + ½‖W‖²``, divided by ``C·N``; the bias is not
    penalised), as used for CLIP's linear-probe evaluation (Radford et al., 2021; CoOp's protocol
    searches ``C`` on validation data). ``W₀ = 0`` by default; with ``zs_init=True`` the probe starts
    from and is pulled towards the zero-shot classifier, ``W₀ = logit_scale · Wₜₑₓₜ`` (a
    "zero-shot-initialised" probe; large ``C`` lets the data move it, small ``C`` keeps it zero-shot).
    In both cases the logits are the probe's alone: ``f·Wᵀ + b`` (no zero-shot term added).

    ``C=None`` picks ``C`` from ``C_grid`` (default ``{1e-2, …, 1e4}``) by accuracy on a stratified
    validation split of the support set (``val_fraction`` per class, split by image so the views of
    one image stay together, drawn with ``seed``), warm-starting along the grid, then refits on the
    whole support set; the choice is in ``C_`` and the scores in ``search_table_``. Without a
    validation sample (one shot per class) it warns and uses ``fallback_C``.
    ``[V, N, D]`` support features are concatenated as extra rows.
    """

    _constraints = {
        "C": Interval(0, None, closed="neither", allow_none=True),
        "zs_init": Options(False, True),
        "max_iter": SIZE,
        "tol": NON_NEGATIVE,
        "val_fraction": Interval(0, 1, closed="neither"),
        "fallback_C": POSITIVE,
        "seed": SEED,
    }

    def __init__(
        self,
        C: float | None = None,
        zs_init: bool = False,
        max_iter: int = 100,
        tol: float = 1e-5,
        C_grid: list[float] | None = None,
        val_fraction: float = 0.25,
        fallback_C: float = 10.0,
        seed: int = 0,
    ) -> None:
        self.C = C
        self.zs_init = zs_init
        self.max_iter = max_iter
        self.tol = tol
        self.C_grid = C_grid
        self.val_fraction = val_fraction
        self.fallback_C = fallback_C
        self.seed = seed

    @classmethod
    def default_grid(cls) -> dict[str, list[Any]]:
        return {"C": list(_C_GRID)}

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        max_iter = int(self.max_iter)
        W0 = self._s0_weights if self.zs_init else torch.zeros_like(self.text_weights_)
        if self.C is not None:
            C = float(self.C)
            self.search_table_ = None
        else:
            C = self._search_C(X, y, W0, max_iter)
        Xc, yc = concat_views(X, y)
        self.C_ = C
        self.coef_, self.intercept_ = _fit_logreg(Xc, yc, W0, W0.clone(), None, C, max_iter, self.tol)

    def _search_C(self, X: torch.Tensor, y: torch.Tensor, W0: torch.Tensor, max_iter: int) -> float:
        from cliplab.adapt.search import split_validation

        grid = sorted(check_positive(c, "C_grid entry") for c in (self.C_grid or _C_GRID))
        if int(torch.bincount(y).max()) < 2:
            warnings.warn(
                f"LinearProbe: no validation split possible (every class has a single sample); "
                f"using fallback_C={self.fallback_C}",
                stacklevel=3,
            )
            self.search_table_ = None
            return float(self.fallback_C)
        train, val = split_validation(y, val_fraction=self.val_fraction, seed=self.seed)
        Xt, yt = concat_views(X[:, train], y[train])
        Xv = mean_views(X[:, val])  # validation images: their view average, renormalised
        W, b = W0.clone(), None
        table = []
        for C in grid:  # strongest regularisation first, each fit warm-started from the previous
            W, b = _fit_logreg(Xt, yt, W0, W, b, C, max_iter, self.tol)
            with torch.no_grad():
                acc = float((torch.addmm(b, Xv, W.T).argmax(1) == y[val]).float().mean())
            table.append({"C": C, "val_accuracy": acc})
        self.search_table_ = table
        return max(table, key=lambda row: row["val_accuracy"])["C"]  # ties: the smallest C

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
