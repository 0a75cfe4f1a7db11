"""Explaining CLIP's logits: where an image embedding (and so a logit) comes from.

``decompose(model, images, layers=None) -> Decomposition``: the direct-effect decomposition (Gandelsman et al.,
ICLR 2024) into per-layer attention and MLP, per-head and per-token contributions; see ``cliplab.towers``.
"""

from cliplab.towers.direct_effects import Decomposition, decompose

__all__ = ["Decomposition", "decompose"]
