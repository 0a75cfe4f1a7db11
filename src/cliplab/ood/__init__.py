"""Post-hoc out-of-distribution detection scores. Every score: higher = more in-distribution.

Functions: ``msp``, ``max_logit``, ``energy`` (logits → ``[N]``), ``mcm`` (features + text weights),
``knn_score``. Estimators (``fit(...) -> self``, ``score(x) -> [N]``): ``KNN``, ``ViM``,
``Mahalanobis``, ``NegLabel``. Evaluate with ``cliplab.metrics.ood_metrics(id_scores, ood_scores)``.
"""

from __future__ import annotations

from cliplab.ood.mahalanobis import Mahalanobis
from cliplab.ood.neglabel import NegLabel, builtin_words
from cliplab.ood.scores import KNN, energy, knn_score, max_logit, mcm, msp
from cliplab.ood.vim import ViM, default_vim_dim

__all__ = [
    "KNN",
    "Mahalanobis",
    "NegLabel",
    "ViM",
    "builtin_words",
    "default_vim_dim",
    "energy",
    "knn_score",
    "max_logit",
    "mcm",
    "msp",
]
