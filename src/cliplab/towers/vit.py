"""A structural view of a ViT image tower: its embedding, blocks, final norm and projection, as plain weights.

``vit_tower(model)`` finds the tower from the modules the model has (never from its name) and returns a
``ViTTower`` that ``cliplab.towers.internals`` runs block by block. One adapter per architecture *kind*:

- ``hf-clip``: a Hugging Face ``CLIPVisionModel``-like ``vision_model`` (``embeddings``, ``pre_layrnorm``,
  ``encoder.layers[i].self_attn.{q,k,v,out}_proj``, ``layer_norm1/2``, ``mlp``, ``post_layernorm``) with the
  model's ``visual_projection``; the pooled token is the class token.
- ``hf-siglip``: the same encoder without a class token or pre-norm, pooled by an attention-pooling ``head``
  (a learned probe query attending over all tokens).
- ``open_clip-vit``: open_clip's ``VisionTransformer`` (``conv1``, ``class_embedding``, ``positional_embedding``,
  ``ln_pre``, ``transformer.resblocks[i].attn`` as ``nn.MultiheadAttention``, ``ln_1/2``, ``ls_1/2``, ``mlp``,
  ``ln_post``, ``proj``) pooled by the class token (``pool_type="tok"``, no attentional pooler).

Anything else (ResNets, timm towers, attentional poolers) raises ``UnsupportedTowerError`` naming the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: the pooling of each supported kind: "class-token" (token 0 through the final norm and projection) or
#: "attention-head" (SigLIP's probe-query head over all tokens)
POOLINGS = ("class-token", "attention-head")


class UnsupportedTowerError(TypeError):
    """The model's image tower is not a ViT these tools can open (e.g. a ResNet)."""


@dataclass(frozen=True)
class AttentionParams:
    """One block's multi-head self-attention as weights: ``q = h·W_qᵀ + b_q`` (and k, v), per-head
    ``softmax(scale·q kᵀ) v``, heads concatenated, then ``·W_Oᵀ + b_O``."""

    q_weight: torch.Tensor
    q_bias: torch.Tensor | None
    k_weight: torch.Tensor
    k_bias: torch.Tensor | None
    v_weight: torch.Tensor
    v_bias: torch.Tensor | None
    out_weight: torch.Tensor  # [D, D]: input columns grouped by head
    out_bias: torch.Tensor | None
    heads: int
    scale: float


@dataclass(frozen=True)
class Block:
    """A pre-norm residual block: ``x += ls1 ⊙ attn(ln1(x)); x += ls2 ⊙ mlp(ln2(x))`` (ls: layer scale or None)."""

    ln1: nn.Module
    attention: AttentionParams
    ls1: torch.Tensor | None
    ln2: nn.Module
    mlp: nn.Module
    ls2: torch.Tensor | None


@dataclass(frozen=True)
class ViTTower:
    """What the internals need of a ViT image tower (weights are the model's own tensors, not copies)."""

    kind: str
    spec: str
    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    #: tokens before the patch tokens (1: a class token; 0: none, SigLIP)
    n_prefix: int
    pooling: str
    #: pixels ``[B, 3, H, W]`` → the tokens entering the first block ``[B, T, D]`` (after any pre-norm)
    embed: Callable[[torch.Tensor], torch.Tensor]
    blocks: tuple[Block, ...]
    ln_post: nn.LayerNorm
    #: ``[D, E]``, applied as ``x @ proj`` (None: the tower's width is the joint space)
    proj: torch.Tensor | None
    proj_bias: torch.Tensor | None = None
    #: attention pooling of the post-norm tokens ``[B, T, D] → [B, D]`` (``pooling == "attention-head"``)
    head: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def grid(self) -> tuple[int, int]:
        """Patch tokens per column and per row."""
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]

    @property
    def layers(self) -> int:
        return len(self.blocks)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int | float):
        return int(value), int(value)
    a, b = value
    return int(a), int(b)


def _layer_scale(module: nn.Module, where: str) -> torch.Tensor | None:
    if isinstance(module, nn.Identity):
        return None
    gamma = getattr(module, "gamma", None)
    if isinstance(gamma, torch.Tensor):
        return gamma
    raise UnsupportedTowerError(f"{where}: unsupported layer scale {type(module).__name__} (Identity or .gamma)")


def _is_hf_vision(vm: Any) -> bool:
    layers = getattr(getattr(vm, "encoder", None), "layers", None)
    return (
        isinstance(getattr(vm, "embeddings", None), nn.Module)
        and isinstance(layers, nn.ModuleList)
        and len(layers) > 0
        and all(hasattr(getattr(layers[0], "self_attn", None), p) for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
        and isinstance(getattr(vm, "post_layernorm", None), nn.LayerNorm)
    )


def _is_open_clip_vit(visual: Any) -> bool:
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    return all(hasattr(visual, a) for a in ("conv1", "class_embedding", "positional_embedding", "ln_post")) and (
        isinstance(blocks, nn.ModuleList) and len(blocks) > 0
    )


def vit_tower(model: Any) -> ViTTower:
    """The ``ViTTower`` of a cliplab ``Model`` (or of a bare module), found from its modules.

    Raises ``UnsupportedTowerError`` naming the model when the image tower is not a supported ViT.
    """
    module = getattr(model, "module", model)
    spec = str(getattr(model, "spec", type(module).__name__))
    vm = getattr(module, "vision_model", None)
    if vm is not None and _is_hf_vision(vm):
        return _hf_tower(module, vm, spec)
    visual = getattr(module, "visual", None)
    if visual is not None and _is_open_clip_vit(visual):
        return _open_clip_tower(visual, spec)
    found = type(visual if visual is not None else vm if vm is not None else module).__name__
    raise UnsupportedTowerError(
        f"model {spec!r}: its image tower ({found}) is not a ViT with per-token attention that cliplab can open "
        "(supported: Hugging Face CLIP/SigLIP vision transformers and open_clip VisionTransformer; "
        "ResNet and timm towers have no class-token residual stream)"
    )


def _hf_attention(attn: Any, where: str) -> AttentionParams:
    heads = getattr(attn, "num_heads", None)
    if heads is None:
        heads = attn.q_proj.out_features // int(attn.head_dim)
    scale = getattr(attn, "scale", None)
    if scale is None:
        scale = (attn.q_proj.out_features // int(heads)) ** -0.5
    return AttentionParams(
        attn.q_proj.weight, attn.q_proj.bias, attn.k_proj.weight, attn.k_proj.bias,
        attn.v_proj.weight, attn.v_proj.bias, attn.out_proj.weight, attn.out_proj.bias,
        int(heads), float(scale),
    )  # fmt: skip


def _hf_tower(module: nn.Module, vm: Any, spec: str) -> ViTTower:
    cfg = getattr(vm, "config", None) or getattr(getattr(module, "config", None), "vision_config", None)
    emb = vm.embeddings
    patch = getattr(emb, "patch_embedding", None)
    if not isinstance(patch, nn.Conv2d):
        raise UnsupportedTowerError(
            f"model {spec!r}: its vision embeddings ({type(emb).__name__}) have no Conv2d patch_embedding "
            "(packed NaFlex patches are not supported)"
        )
    size = getattr(emb, "image_size", None) or getattr(cfg, "image_size", None)
    if size is None:
        raise UnsupportedTowerError(f"model {spec!r}: its vision embeddings declare no image_size")
    image_size = _pair(size)
    patch_size = _pair(patch.kernel_size)
    has_cls = isinstance(getattr(emb, "class_embedding", None), torch.Tensor)
    head = getattr(vm, "head", None)
    use_head = isinstance(head, nn.Module) and bool(getattr(cfg, "vision_use_head", True))
    if not has_cls and not use_head:
        raise UnsupportedTowerError(f"model {spec!r}: its vision transformer has neither a class token nor a head")
    pre = getattr(vm, "pre_layrnorm", None)

    def embed(pixels: torch.Tensor) -> torch.Tensor:
        x = emb(pixels)
        return pre(x) if isinstance(pre, nn.Module) else x

    blocks = tuple(
        Block(layer.layer_norm1, _hf_attention(layer.self_attn, f"{spec} layer {i}"), None,
              layer.layer_norm2, layer.mlp, None)
        for i, layer in enumerate(vm.encoder.layers)
    )  # fmt: skip
    projection = getattr(module, "visual_projection", None)
    proj = proj_bias = None
    if isinstance(projection, nn.Linear):
        proj, proj_bias = projection.weight.T, projection.bias
    return ViTTower(
        kind="hf-clip" if has_cls else "hf-siglip",
        spec=spec,
        image_size=image_size,
        patch_size=patch_size,
        n_prefix=1 if has_cls else 0,
        pooling="class-token" if has_cls else "attention-head",
        embed=embed,
        blocks=blocks,
        ln_post=vm.post_layernorm,
        proj=proj,
        proj_bias=proj_bias,
        head=None if has_cls else head,
    )


def _open_clip_tower(visual: Any, spec: str) -> ViTTower:
    if getattr(visual, "attn_pool", None) is not None:
        raise UnsupportedTowerError(f"model {spec!r}: its open_clip tower pools with an attentional pooler")
    pool = getattr(visual, "pool_type", "tok")
    if pool != "tok":
        raise UnsupportedTowerError(f"model {spec!r}: open_clip pool_type {pool!r} (only 'tok', the class token)")
    if not isinstance(visual.ln_post, nn.LayerNorm):
        raise UnsupportedTowerError(f"model {spec!r}: its ln_post ({type(visual.ln_post).__name__}) is no LayerNorm")
    blocks = []
    for i, blk in enumerate(visual.transformer.resblocks):
        where = f"model {spec!r} block {i}"
        attn = getattr(blk, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
            raise UnsupportedTowerError(f"{where}: attention {type(attn).__name__} is not a plain MultiheadAttention")
        if not isinstance(getattr(blk, "ln_attn", nn.Identity()), nn.Identity) or hasattr(blk, "ln_1_kv"):
            raise UnsupportedTowerError(f"{where}: scaled/cross attention blocks are not supported")
        w, b = attn.in_proj_weight, attn.in_proj_bias
        q_w, k_w, v_w = w.chunk(3)
        q_b, k_b, v_b = b.chunk(3) if b is not None else (None, None, None)
        params = AttentionParams(
            q_w, q_b, k_w, k_b, v_w, v_b, attn.out_proj.weight, attn.out_proj.bias,
            int(attn.num_heads), float(attn.head_dim) ** -0.5,
        )  # fmt: skip
        blocks.append(Block(blk.ln_1, params, _layer_scale(blk.ls_1, where), blk.ln_2, blk.mlp,
                            _layer_scale(blk.ls_2, where)))  # fmt: skip

    def embed(pixels: torch.Tensor) -> torch.Tensor:
        x = visual.conv1(pixels)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(x)

    image_size = _pair(getattr(visual, "image_size", None))
    patch_size = _pair(getattr(visual, "patch_size", None) or visual.conv1.kernel_size)
    proj = visual.proj if isinstance(getattr(visual, "proj", None), torch.Tensor) else None
    return ViTTower(
        kind="open_clip-vit",
        spec=spec,
        image_size=image_size,
        patch_size=patch_size,
        n_prefix=1,
        pooling="class-token",
        embed=embed,
        blocks=tuple(blocks),
        ln_post=visual.ln_post,
        proj=proj,
    )
