"""Post-hoc out-of-distribution detection scores. Every score: higher = more in-distribution.

Functions: ``msp``, ``max_logit``, ``energy`` (logits → ``[N]``), ``mcm`` (features + text weights),
``knn_score``. Scorers (``cliplab.ood.base.OODScorer``: ``fit(train_features, labels=None, text_weights=None)
-> self``, ``score(x) -> [N]``): ``KNN``, ``ViM``, ``Mahalanobis``, ``NegLabel``, registered in
``OOD_SCORERS`` (``register_ood_scorer`` adds one). Evaluate with
``cliplab.metrics.ood_metrics(id_scores, ood_scores)``.
"""

from __future__ import annotations

from cliplab.ood.base import OOD_SCORERS, OODScorer, register_ood_scorer
from cliplab.ood.mahalanobis import Mahalanobis
from cliplab.ood.neglabel import BUILTIN_SOURCE, NegLabel, builtin_words
from cliplab.ood.scores import KNN, energy, knn_score, max_logit, mcm, msp
from cliplab.ood.vim import ViM, default_vim_dim

for _name, _cls in (("knn", KNN), ("vim", ViM), ("mahalanobis", Mahalanobis), ("neglabel", NegLabel)):
    register_ood_scorer(_name, _cls)

__all__ = [
    "BUILTIN_SOURCE",
    "KNN",
    "OOD_SCORERS",
    "Mahalanobis",
    "NegLabel",
    "OODScorer",
    "ViM",
    "builtin_words",
    "default_vim_dim",
    "energy",
    "knn_score",
    "max_logit",
    "mcm",
    "msp",
    "register_ood_scorer",
]
