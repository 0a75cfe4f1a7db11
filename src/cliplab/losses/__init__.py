"""Contrastive losses of the CLIP family: CLIP (InfoNCE), SigLIP, CLOOB's InfoLOOB, distillation.

Every loss takes feature matrices (tensors or arrays, rows are positive pairs) and a scale that may be
a number or a 0-d tensor with gradient. ``chunk_size`` switches CLIP, SigLIP and InfoLOOB to tiled
computations with the same value and gradients and O(B·chunk_size) memory (``cliplab.losses.chunked``).
The distributed versions (features gathered across ranks with gradients) are in
``cliplab.train.distributed``.
"""

from cliplab.losses.chunked import tiled_logsumexp, tiled_softplus_sum
from cliplab.losses.clip import clip_loss
from cliplab.losses.distill import DistillHead, clip_distill_loss, distill_loss
from cliplab.losses.entailment import euclidean_entailment_loss
from cliplab.losses.infoloob import infoloob_loss
from cliplab.losses.siglip import siglip_loss

__all__ = [
    "DistillHead",
    "clip_distill_loss",
    "clip_loss",
    "distill_loss",
    "euclidean_entailment_loss",
    "infoloob_loss",
    "siglip_loss",
    "tiled_logsumexp",
    "tiled_softplus_sum",
]
