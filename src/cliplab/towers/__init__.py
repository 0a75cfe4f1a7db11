"""Inside the towers: the image tower's internals and the direct-effect decomposition of its embedding.

The "inspect" layer: above ``cliplab.models`` and ``cliplab.features``, below ``adapt`` and ``bench``.

- ``cliplab.towers.vit``: ``vit_tower(model)``, a structural view of a ViT image tower (found from the modules
  the model has, never from its name), one adapter per architecture kind;
- ``cliplab.towers.internals``: ``trace`` (per-layer residual stream, the last block's attention weights and
  q/k/v, the pooled output) and ``patch_features`` (patch tokens in the joint space);
- ``cliplab.towers.direct_effects``: ``decompose`` (Gandelsman, Efros & Steinhardt, ICLR 2024).
"""

from cliplab.towers.direct_effects import Decomposition, decompose
from cliplab.towers.internals import TowerTrace, patch_features, trace
from cliplab.towers.vit import UnsupportedTowerError, ViTTower, vit_tower

__all__ = [
    "Decomposition",
    "TowerTrace",
    "UnsupportedTowerError",
    "ViTTower",
    "decompose",
    "patch_features",
    "trace",
    "vit_tower",
]
