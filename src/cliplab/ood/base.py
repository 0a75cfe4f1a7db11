"""The OOD scorer interface every feature-based detector follows, and the registry of scorers.

``fit(train_features [N, D], labels=None, text_weights=None) -> self`` and ``score(features [M, D]) -> [M]``
(higher = more in-distribution). ``requires`` names what ``fit`` needs besides nothing at all: ``"labels"``
(Mahalanobis), ``"text_weights"`` (ViM's classifier, NegLabel's ID labels), ``"train_features"`` (KNN,
ViM, Mahalanobis). Hyper-parameters follow ``cliplab._validation.Estimator`` (``get_params``,
``set_params``, ``_constraints``), so ``sklearn.base.clone`` works.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import torch

from cliplab._validation import ArrayLike, Estimator
from cliplab.extension import Registry

__all__ = ["OOD_SCORERS", "OODScorer", "register_ood_scorer"]


class OODScorer(Estimator):
    """Base class of the OOD scorers: ``fit(train_features, labels=None, text_weights=None)``, ``score``."""

    requires: ClassVar[frozenset[str]] = frozenset({"train_features"})

    def fit(
        self, train_features: ArrayLike | None = None, labels: ArrayLike | None = None, text_weights: Any = None
    ) -> Self:
        raise NotImplementedError

    def score(self, features: ArrayLike) -> torch.Tensor:
        """OOD scores ``[M]`` of ``features`` ``[M, D]``, higher = more in-distribution."""
        raise NotImplementedError

    def _check_inputs(self, **given: Any) -> None:
        """``ValueError`` naming the inputs in ``requires`` that are ``None``."""
        missing = sorted(name for name in self.requires if given.get(name) is None)
        if missing:
            raise ValueError(f"{type(self).__name__}.fit needs {', '.join(missing)}")

    def _required(self, value: ArrayLike | None, name: str) -> ArrayLike:
        """``value``, an input in ``requires`` (so never None after ``_check_inputs``)."""
        if value is None:
            raise ValueError(f"{type(self).__name__}.fit needs {name}")
        return value


def _check(name: str, cls: type[OODScorer]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, OODScorer)):
        raise TypeError(f"an OOD scorer must be an OODScorer subclass, got {cls!r}")


#: scorer name → class, the registry of fitted OOD scorers (``register_ood_scorer`` adds one; entry-point group
#: ``cliplab.ood_scorers``); the built-ins are registered by ``cliplab.ood``
OOD_SCORERS: Registry[type[OODScorer]] = Registry("OOD scorer", group="cliplab.ood_scorers", check=_check)


def register_ood_scorer(name: str, cls: type[OODScorer], *, replace: bool = False) -> type[OODScorer]:
    """Add the scorer class ``cls`` to ``OOD_SCORERS`` under ``name`` (``ood_evaluation`` and ``cliplab ood``
    then run it); a taken name raises ValueError unless ``replace``."""
    return OOD_SCORERS.register(name, cls, replace=replace)
