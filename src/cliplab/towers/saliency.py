"""Spatial maps of a text's logit over an image: the per-token direct effects and a gradient × input baseline.

- ``direct_effect_map`` (Gandelsman et al., ICLR 2024, Sec. 5): the patch tokens' direct contributions through
  the chosen layers' attention, summed over heads, dotted with the text: ``m_t = Σ_l Σ_h c^{l,h}_t · T``
  (``[B, M, gh, gw]``; ``Decomposition.token_map``).
- ``gradient_times_input`` (the plain baseline, e.g. Shrikumar et al. 2016; Ancona et al., ICLR 2018): the
  gradient of the logit ``z = s·cos(f, T) + b`` with respect to the preprocessed pixels ``x`` times ``x``, summed
  over channels: ``m_ij = Σ_c x_cij · ∂z/∂x_cij`` (``[B, M, H, W]``, or summed within each patch).
  ``x`` is the normalised pixel tensor, so its zero is the preprocessing's mean colour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cliplab.towers.direct_effects import decompose
from cliplab.towers.internals import pixels_for
from cliplab.towers.vit import vit_tower


def _text_features(model: Any, texts: Sequence[str] | torch.Tensor) -> torch.Tensor:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings or a [M, E] tensor, got a single string")
    if isinstance(texts, torch.Tensor):
        if texts.ndim != 2:
            raise ValueError(f"text features must be [M, E], got {tuple(texts.shape)}")
        return texts.float().clone()  # a normal tensor: encode_texts returns inference-mode ones
    return model.encode_texts(list(texts), precision="fp32").clone()


def direct_effect_map(
    model: Any, images: Sequence[Any] | torch.Tensor, texts: Sequence[str] | torch.Tensor,
    layers: Iterable[int] | None = None,
) -> torch.Tensor:  # fmt: skip
    """``[B, M, gh, gw]``: each patch token's direct contribution (``layers``' attention, all heads; default every
    layer) to the image embedding, dotted with each text's (normalised) features."""
    d = decompose(model, images, layers=layers)
    return d.token_map(_text_features(model, texts))


def gradient_times_input(
    model: Any, images: Sequence[Any] | torch.Tensor, texts: Sequence[str] | torch.Tensor, *, per_patch: bool = False
) -> torch.Tensor:
    """``[B, M, H, W]`` gradient × input of each text's logit over the preprocessed pixels (summed over channels);
    with ``per_patch``, summed within each patch of the ViT tower (``[B, M, gh, gw]``)."""
    tower = vit_tower(model)
    t = _text_features(model, texts).to(tower.blocks[0].attention.q_weight.device)
    x = pixels_for(model, images, tower).clone().requires_grad_(True)
    module = model.module
    was = module.training
    module.eval()
    maps = []
    try:
        with torch.enable_grad():
            z = model.logits(model.image_features(x), t)  # [B, M]; images do not interact in eval mode
            for m in range(z.shape[1]):
                (grad,) = torch.autograd.grad(z[:, m].sum(), x, retain_graph=m + 1 < z.shape[1])
                maps.append((grad * x).sum(1).detach())
    finally:
        module.train(was)
    out = torch.stack(maps, 1)  # [B, M, H, W]
    if per_patch:
        ph, pw = tower.patch_size
        out = F.avg_pool2d(out, (ph, pw)) * (ph * pw)
    return out


__all__ = ["direct_effect_map", "gradient_times_input"]
