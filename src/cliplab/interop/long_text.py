"""Longer texts for CLIP text towers: Long-CLIP's knowledge-preserved stretching of positional embeddings.

Long-CLIP (Zhang et al., 2024, "Long-CLIP: Unlocking the Long-Text Capability of CLIP"; beichenzbc/Long-CLIP,
``model/longclip.py``, ``load_from_clip``): the first ``keep`` = 20 positions, which CLIP trained well, are kept
exactly; the other ``L − keep`` are linearly interpolated by the ratio ``r = (length − keep) / (L − keep)``
(77 → 248: r = 4): for ``i < L − keep − 1`` and ``j < r``,
``P'[keep + r·i + j] = (1 − j/r)·P[keep + i] + (j/r)·P[keep + i + 1]``, and the last ``r`` positions extrapolate
linearly from the last two, ``P'[length − r + j] = P[L−1] + (j/r)·(P[L−1] − P[L−2])``. The baseline
(``mode="interpolate"``) resizes all ``L`` positions to ``length`` with linear interpolation (``align_corners``:
the first and last positions are kept).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cliplab.models.base import Model

STRETCH_MODES = ("knowledge_preserved", "interpolate")


def stretched_positions(
    pos: torch.Tensor, length: int = 248, keep: int = 20, mode: str = "knowledge_preserved"
) -> torch.Tensor:
    """The ``[length, D]`` positional embeddings stretched from ``pos`` ``[L, D]`` (see the module docstring)."""
    if mode not in STRETCH_MODES:
        raise ValueError(f"unknown stretch mode {mode!r}; expected one of {STRETCH_MODES}")
    if pos.ndim != 2:
        raise ValueError(f"positional embeddings must be [L, D], got shape {tuple(pos.shape)}")
    old = int(pos.shape[0])
    if length <= old:
        raise ValueError(f"stretch length {length} must exceed the text tower's {old} positions")
    src = pos.detach().float()
    if mode == "interpolate":
        out = F.interpolate(src.T[None], size=length, mode="linear", align_corners=True)[0].T
        return out.to(pos.dtype).contiguous()
    if not 0 <= keep <= old - 2:
        raise ValueError(f"keep={keep} must be between 0 and {old - 2} (the text tower has {old} positions)")
    ratio, rest = divmod(length - keep, old - keep)
    if rest:
        raise ValueError(
            f"knowledge-preserved stretching needs (length - keep) to be a multiple of (positions - keep): "
            f"({length} - {keep}) / ({old} - {keep}) is not an integer (Long-CLIP: 77 positions, keep 20 -> 248)"
        )
    new = torch.empty(length, src.shape[1], dtype=src.dtype)
    new[:keep] = src[:keep]
    for j in range(ratio):
        w = j / ratio
        new[keep + j : length - ratio : ratio] = (1 - w) * src[keep : old - 1] + w * src[keep + 1 : old]
        new[length - ratio + j] = src[old - 1] + w * (src[old - 1] - src[old - 2])
    return new.to(pos.dtype).contiguous()


def stretch_positions(model: Model, length: int = 248, keep: int = 20, mode: str = "knowledge_preserved") -> Model:
    """Stretch ``model``'s text positions in place to ``length`` and return it (``stretched_positions``).

    Hugging Face CLIP text towers: ``position_embedding``, the ``position_ids`` buffer, ``max_position_embeddings``
    and the tokenizer's ``model_max_length``; open_clip text towers: ``positional_embedding``, ``attn_mask``,
    ``text_cfg.context_length`` and the tokenizer's ``context_length``. ``save`` then writes what both libraries
    load.
    """
    from cliplab.models.hf import HFModel
    from cliplab.models.openclip import OpenCLIPModel

    if isinstance(model, HFModel):
        _stretch_hf(model, length, keep, mode)
    elif isinstance(model, OpenCLIPModel):
        _stretch_open_clip(model, length, keep, mode)
    else:
        raise TypeError(
            f"stretch_positions works on Hugging Face CLIP and open_clip models, not {type(model).__name__}"
        )
    return model  # the fingerprint's memo sees the new tensors


def _stretch_hf(model: Any, length: int, keep: int, mode: str) -> None:
    text_model = getattr(model.module, "text_model", None)
    embeddings: Any = getattr(text_model, "embeddings", None)
    old = getattr(embeddings, "position_embedding", None)
    if not isinstance(old, nn.Embedding) or not hasattr(embeddings, "position_ids"):
        raise ValueError(
            f"{model.spec}: the text tower ({type(text_model).__name__}) has no learned absolute position_embedding "
            "(an nn.Embedding with a position_ids buffer), so its positions cannot be stretched"
        )
    if model.text_pooling != "model" or model.padding != "longest":
        raise ValueError(f"{model.spec}: only CLIP-style text towers (causal, pooled at end of text) are stretched")
    weight = stretched_positions(old.weight, length, keep, mode)
    new = nn.Embedding(length, weight.shape[1], device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
    embeddings.position_embedding = new
    embeddings.position_ids = torch.arange(length, device=old.weight.device).expand((1, -1))
    for config in (getattr(model.module.config, "text_config", None), getattr(text_model, "config", None)):
        if config is not None:
            config.max_position_embeddings = length
    model.tokenizer.model_max_length = length
    model.max_length = length


def _stretch_open_clip(model: Any, length: int, keep: int, mode: str) -> None:
    module = model.module
    pos = getattr(module, "positional_embedding", None)
    if not isinstance(pos, torch.Tensor) or not hasattr(module, "token_embedding"):
        raise ValueError(
            f"{model.spec}: the open_clip text tower is not open_clip's own transformer (no positional_embedding "
            "and token_embedding on the model, e.g. a Hugging Face text tower), so its positions cannot be stretched"
        )
    weight = stretched_positions(pos, length, keep, mode)
    module.positional_embedding = nn.Parameter(weight.to(pos.device), requires_grad=pos.requires_grad)
    if getattr(module, "attn_mask", None) is not None:  # causal: −inf above the diagonal
        mask = torch.full((length, length), float("-inf"), device=pos.device).triu_(1)
        module.register_buffer("attn_mask", mask, persistent=False)
    module.context_length = length
    text_cfg = model.model_cfg.setdefault("text_cfg", {})
    text_cfg["context_length"] = length
    if hasattr(model.tokenizer, "context_length"):
        model.tokenizer.context_length = length
