"""Zero-/few-shot anomaly detection on CLIP's dense features (``docs/anomaly.md``).

A methods layer (beside ``adapt``), above ``towers``, ``features`` and ``metrics``:

- ``cliplab.anomaly.prompts``: WinCLIP's compositional prompt ensemble;
- ``cliplab.anomaly.windows``: ``dense_features`` (pooled, patch and multi-scale window embeddings) and
  ``harmonic_aggregation``;
- ``cliplab.anomaly.detectors``: the ``WinCLIP`` (zero-shot and WinCLIP+) and ``PatchCore`` estimators;
- ``cliplab.anomaly.evaluation``: ``anomaly_evaluate`` — per-category metrics over methods, shots and seeds.
"""

from cliplab.anomaly.detectors import PatchCore, WinCLIP
from cliplab.anomaly.evaluation import METHODS, anomaly_evaluate
from cliplab.anomaly.prompts import prompt_ensemble
from cliplab.anomaly.windows import DenseFeatures, dense_features, harmonic_aggregation

__all__ = [
    "METHODS",
    "DenseFeatures",
    "PatchCore",
    "WinCLIP",
    "anomaly_evaluate",
    "dense_features",
    "harmonic_aggregation",
    "prompt_ensemble",
]
