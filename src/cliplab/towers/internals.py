"""The towers' internals: a re-implemented ViT forward from the model's own weights, with everything exposed.

``trace(model, images)`` runs the image tower block by block (``cliplab.towers.vit``) and keeps

- the residual stream entering each block and leaving the last (``residual[l]``, ``[B, T, D]``: class token
  first when the tower has one, then the patch tokens in raster order);
- the last block's attention weights ``softmax(scale·q kᵀ)`` ``[B, H, T, T]`` and its ``q``, ``k``, ``v`` per
  head ``[B, H, T, D/H]`` (what MaskCLIP, SCLIP and ClearCLIP read);
- the pooled output, equal to the model's own image embedding before normalisation.

``patch_features(model, images)`` projects the patch tokens into the joint space the way the model projects
its pooled token (final layer norm, then the projection): ``ln_post(x_t) @ proj``, ``[B, N, E]``; for an
attention-pooling head (SigLIP), the head applied to each token alone.

The forward is exact, not approximate: the tests check the pooled output against ``encode_images``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cliplab.towers.vit import AttentionParams, Block, UnsupportedTowerError, ViTTower, vit_tower


@dataclass
class Attended:
    """One attention call: output ``[B, T, D]`` (after ``W_O``, bias included), weights ``[B, H, T, T]``,
    and ``q``, ``k``, ``v`` per head ``[B, H, T, D/H]``."""

    output: torch.Tensor
    weights: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor


def attend(params: AttentionParams, h: torch.Tensor) -> Attended:
    """Multi-head self-attention of the normalised tokens ``h`` ``[B, T, D]`` (no mask: image tokens)."""
    b, t, _ = h.shape

    def heads(w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(h, w, bias).view(b, t, params.heads, -1).transpose(1, 2)

    q, k, v = (
        heads(params.q_weight, params.q_bias),
        heads(params.k_weight, params.k_bias),
        heads(params.v_weight, params.v_bias),
    )
    weights = torch.softmax((q @ k.transpose(-1, -2)) * params.scale, dim=-1)
    mixed = (weights @ v).transpose(1, 2).reshape(b, t, -1)
    return Attended(F.linear(mixed, params.out_weight, params.out_bias), weights, q, k, v)


def _scaled(x: torch.Tensor, gamma: torch.Tensor | None) -> torch.Tensor:
    return x if gamma is None else x * gamma


@dataclass
class BlockStep:
    """One block's direct writes to the residual stream: ``attention`` and ``mlp`` (``[B, T, D]``, layer scale
    applied), and the attention call itself."""

    attention: torch.Tensor
    mlp: torch.Tensor
    attended: Attended


def run_block(block: Block, x: torch.Tensor) -> tuple[torch.Tensor, BlockStep]:
    """``x + ls1·attn(ln1(x))``, then ``+ ls2·mlp(ln2(·))``; returns the new stream and what was written."""
    att = attend(block.attention, block.ln1(x))
    a = _scaled(att.output, block.ls1)
    x = x + a
    m = _scaled(block.mlp(block.ln2(x)), block.ls2)
    return x + m, BlockStep(a, m, att)


def pool(tower: ViTTower, final: torch.Tensor) -> torch.Tensor:
    """The tower's pooled embedding from the last residual stream ``[B, T, D]`` → ``[B, E]``."""
    if tower.pooling == "class-token":
        pooled = tower.ln_post(final[:, 0])
    else:
        assert tower.head is not None
        pooled = tower.head(tower.ln_post(final))
    return project(tower, pooled)


def project(tower: ViTTower, x: torch.Tensor) -> torch.Tensor:
    """``x @ proj (+ bias)``: the tower's final projection into the joint space (identity without one)."""
    if tower.proj is not None:
        x = x @ tower.proj
    return x if tower.proj_bias is None else x + tower.proj_bias


def pixels_for(model: Any, images: Sequence[Any] | torch.Tensor, tower: ViTTower) -> torch.Tensor:
    """A float32 pixel batch ``[B, 3, H, W]`` at the tower's resolution on the model's device.

    Images (PIL, paths) go through ``model.preprocess``; a tensor must already have the tower's size.
    """
    from cliplab.imaging.preprocess import PatchPreprocess

    if isinstance(images, torch.Tensor):
        px = images
    else:
        preprocess = getattr(model, "preprocess", None)
        if preprocess is None or isinstance(preprocess, PatchPreprocess):
            raise ValueError(
                f"model {tower.spec!r}: pass a pixel tensor [B, 3, H, W] (no fixed-size preprocessing to apply)"
            )
        images = list(images)
        if not images:
            raise ValueError("no images given")
        px = preprocess.batch(images)
    if px.ndim != 4 or px.shape[1] != 3:
        raise ValueError(f"a pixel tensor must have shape [B, 3, H, W], got {tuple(px.shape)}")
    if tuple(px.shape[-2:]) != tower.image_size:
        raise ValueError(
            f"image size {tuple(px.shape[-2:])} does not match model {tower.spec!r}'s resolution "
            f"{tower.image_size} (H, W); preprocess the images with the model's own preprocess"
        )
    return px.to(device=tower.blocks[0].attention.q_weight.device, dtype=torch.float32)


@dataclass
class TowerTrace:
    """The residual stream per layer, the last block's attention, and the pooled output (see the module doc)."""

    tower: ViTTower
    #: ``residual[l]``: the tokens entering block ``l``; ``residual[-1]``: leaving the last block
    residual: list[torch.Tensor]
    last_attention: Attended
    pooled: torch.Tensor
    steps: list[BlockStep] = field(default_factory=list, repr=False)

    @property
    def grid(self) -> tuple[int, int]:
        return self.tower.grid

    def patch_tokens(self, layer: int = -1) -> torch.Tensor:
        """The patch tokens of ``residual[layer]`` ``[B, N, D]`` (class token removed)."""
        return self.residual[layer][:, self.tower.n_prefix :]


def run_tower(tower: ViTTower, pixels: torch.Tensor, *, keep_steps: bool = False) -> TowerTrace:
    """The re-implemented forward of ``tower`` on a pixel batch of its resolution."""
    x = tower.embed(pixels)
    residual = [x]
    steps: list[BlockStep] = []
    step: BlockStep | None = None
    for block in tower.blocks:
        x, step = run_block(block, x)
        residual.append(x)
        if keep_steps:
            steps.append(step)
    assert step is not None
    return TowerTrace(tower, residual, step.attended, pool(tower, x), steps)


def _eval(model: Any) -> Any:
    module = getattr(model, "module", model)
    was = module.training
    module.eval()
    return module, was


def trace(model: Any, images: Sequence[Any] | torch.Tensor, *, every_block: bool = False) -> TowerTrace:
    """Run the image tower of ``model`` on ``images`` (PIL/paths through ``model.preprocess``, or a pixel tensor
    of the model's resolution) and keep its internals; fp32, no gradients. ``every_block`` also keeps each
    block's attention call and writes (``TowerTrace.steps``: attention weights, q/k/v, attention and MLP outputs).

    For gradients through the internals (relevance maps), call ``run_tower(vit_tower(model), pixels)`` under
    ``torch.enable_grad()`` instead."""
    tower = vit_tower(model)
    pixels = pixels_for(model, images, tower)
    module, was = _eval(model)
    try:
        with torch.no_grad():
            return run_tower(tower, pixels, keep_steps=every_block)
    finally:
        module.train(was)


def patch_features(model: Any, images: Sequence[Any] | torch.Tensor, *, layer: int = -1) -> torch.Tensor:
    """Patch tokens projected into the joint space the way the model projects its pooled token ``[B, N, E]``.

    Class-token towers: ``ln_post(x_t) @ proj``. Attention-pooling heads (SigLIP): the head applied to each token
    alone, ``head(ln_post(x_t))`` — with a single key the probe's attention weight is 1, so this is the head's
    value path (``W_O·v_t``) plus its MLP, the head's analogue of MaskCLIP's value embeddings. Not normalised.
    """
    t = trace(model, images)
    tokens = t.patch_tokens(layer)
    with torch.no_grad():
        if t.tower.pooling == "class-token":
            return project(t.tower, t.tower.ln_post(tokens))
        assert t.tower.head is not None
        b, n, d = tokens.shape
        alone = t.tower.head(t.tower.ln_post(tokens).reshape(b * n, 1, d))
        return project(t.tower, alone).reshape(b, n, -1)


__all__ = [
    "Attended",
    "BlockStep",
    "TowerTrace",
    "UnsupportedTowerError",
    "attend",
    "patch_features",
    "pixels_for",
    "pool",
    "project",
    "run_block",
    "run_tower",
    "trace",
]
