"""Contrastive losses across ``torch.distributed`` ranks (open_clip ``--local-loss --gather-with-grad``).

Each rank holds ``B_r`` pairs of a global batch of ``B = Σ_r B_r``. Features are all-gathered **with
gradients** (the backward pass sums, over all ranks, the gradient each rank's loss sends to every
slot and returns to each rank the sum for its own rows), and each rank scores only its own rows
against the global batch: a ``B_r × B`` block, labels offset by ``o_r = Σ_{q<r} B_q``.

Scaling, so that DDP's gradient **averaging** gives exactly the single-process full-batch gradient:
rank ``r`` returns ``L_r = (W/B)·S_r`` where ``W`` is the world size and ``S_r`` the sum over its rows
of the per-row loss terms (for equal shards, ``L_r`` is the mean over the local rows, as in open_clip).
Then ``mean_r L_r = L`` (the full-batch loss value), and since every rank's parameters receive the
gradient of ``Σ_q L_q`` restricted to its own samples (via the gather backward) plus the local
gradient for replicated parameters (scale, bias), DDP's ``(1/W)·Σ_r`` yields ``∂L/∂θ`` exactly. In
particular the gradient a rank sees on its **local features** is ``W·∂L/∂x_r``. If you sum gradients
across ranks instead of averaging them, divide the loss by ``W``. Every rank must call the loss and its
backward (they are collective operations).

Works with any backend (gloo on CPU, NCCL on GPU) and with unequal shard sizes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from cliplab._validation import ArrayLike
from cliplab.losses._common import Scalar, as_feature_matrix, as_pair, as_scalar, check_chunk_size, check_geometry
from cliplab.losses.clip import clip_loss, clip_row_loss_sum
from cliplab.losses.siglip import siglip_loss, siglip_row_loss_sum


def _world(group) -> tuple[int, int]:
    """``(world size, rank)``; ``(1, 0)`` when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def _gather_sizes(n: int, device: torch.device, group) -> list[int]:
    world, _ = _world(group)
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(sizes, mine, group=group)
    return [int(s) for s in sizes]


class _AllGather(torch.autograd.Function):
    """Concatenate every rank's ``[B_r, ...]`` tensor; backward: sum over ranks, keep this rank's rows."""

    @staticmethod
    def forward(ctx, x, group, sizes):
        world, rank = _world(group)
        ctx.group, ctx.sizes, ctx.rank = group, sizes, rank
        x = x.contiguous()
        longest = max(sizes)
        if x.shape[0] < longest:
            x = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x, group=group)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        sizes, rank = ctx.sizes, ctx.rank
        grad = grad.contiguous()
        reduce_scatter = getattr(dist, "reduce_scatter_single", None)  # torch >= 2.13 (gloo and NCCL)
        if reduce_scatter is None and dist.get_backend(ctx.group) == "nccl":
            reduce_scatter = dist.reduce_scatter_tensor
        if reduce_scatter is None:  # older gloo: sum everything, keep this rank's rows
            total = grad.clone()
            dist.all_reduce(total, group=ctx.group)
            start = sum(sizes[:rank])
            return total[start : start + sizes[rank]], None, None
        longest = max(sizes)
        if len(set(sizes)) > 1:  # pad every rank's block to the longest one
            blocks = grad.split(sizes)
            grad = torch.cat([torch.cat([b, b.new_zeros((longest - b.shape[0], *b.shape[1:]))]) for b in blocks])
        out = grad.new_empty((longest, *grad.shape[1:]))
        reduce_scatter(out, grad, group=ctx.group)
        return out[: sizes[rank]], None, None


def _gather(x: torch.Tensor, sizes: list[int], group) -> torch.Tensor:
    return _AllGather.apply(x, group, sizes)


def gather_features(
    image_features: ArrayLike,
    text_features: ArrayLike | None = None,
    *,
    group=None,
) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
    """All-gather features across ranks **with gradients**, in rank order.

    Returns ``(all_image_features, all_text_features)``, or only the gathered image features when
    ``text_features`` is None. Each rank's own slot keeps its autograd graph; in the backward pass every
    rank receives the sum over ranks of the gradients for its rows. Shards may differ in size. Without
    an initialised process group (or with one rank) the inputs are returned unchanged.
    """
    image = as_feature_matrix(image_features, "image_features")
    if text_features is not None:
        image, text = as_pair(image, text_features, "image_features", "text_features")
    world, _ = _world(group)
    if world == 1:
        return (image, text) if text_features is not None else image
    sizes = _gather_sizes(image.shape[0], image.device, group)
    if text_features is None:
        return _gather(image, sizes, group)
    return _gather(image, sizes, group), _gather(text, sizes, group)


def distributed_clip_loss(
    image_features: ArrayLike,
    text_features: ArrayLike,
    logit_scale: Scalar,
    logit_bias: Scalar | None = None,
    *,
    geometry: str = "cosine",
    chunk_size: int | None = None,
    group=None,
) -> torch.Tensor:
    """This rank's share of ``cliplab.losses.clip_loss`` on the global batch.

    ``L_r = (W/B)·½·Σ_{i ∈ rank r} [CE(z^{IT}_i·, o_r + i) + CE(z^{TI}_i·, o_r + i)]`` with
    ``z^{IT} = logits(I_local, T_all)`` and ``z^{TI} = logits(T_local, I_all)`` (``B_r × B`` each;
    ``chunk_size`` tiles them as in ``clip_loss``). ``mean_r L_r`` equals ``clip_loss`` on the whole
    batch, and with DDP gradient averaging the parameter gradients equal the full-batch ones (see the
    module docstring). Falls back to ``clip_loss`` when not distributed.
    """
    image, text = as_pair(image_features, text_features, "image_features", "text_features")
    geometry = check_geometry(geometry)
    chunk = check_chunk_size(chunk_size)
    world, rank = _world(group)
    if world == 1:
        return clip_loss(image, text, logit_scale, logit_bias, geometry=geometry, chunk_size=chunk)
    scale = as_scalar(logit_scale, "logit_scale", image)
    bias = as_scalar(logit_bias, "logit_bias", image) if logit_bias is not None else None
    sizes = _gather_sizes(image.shape[0], image.device, group)
    all_image, all_text = _gather(image, sizes, group), _gather(text, sizes, group)
    offset, total = sum(sizes[:rank]), sum(sizes)
    kw: dict[str, Any] = {"offset": offset, "geometry": geometry, "chunk_size": chunk}
    rows = clip_row_loss_sum(image, all_text, scale, bias, **kw) + clip_row_loss_sum(text, all_image, scale, bias, **kw)
    return rows * (0.5 * world / total)


def distributed_siglip_loss(
    image_features: ArrayLike,
    text_features: ArrayLike,
    logit_scale: Scalar,
    logit_bias: Scalar | None,
    *,
    chunk_size: int | None = None,
    group=None,
) -> torch.Tensor:
    """This rank's share of ``cliplab.losses.siglip_loss`` on the global batch.

    Texts are all-gathered with gradients (rather than passed around a ring as open_clip does; the
    value and gradients are the same, the ``[B, D]`` gathered texts are the extra memory) and
    ``L_r = −(W/B)·Σ_{i ∈ rank r} Σ_j log σ(ℓ_ij·(s·x_i·y_j + b))`` with the positive of local row
    ``i`` at column ``o_r + i``. ``mean_r L_r`` equals ``siglip_loss`` on the whole batch and DDP's
    gradient averaging gives the full-batch gradients (module docstring). Falls back to
    ``siglip_loss`` when not distributed.
    """
    image, text = as_pair(image_features, text_features, "image_features", "text_features")
    chunk = check_chunk_size(chunk_size)
    world, rank = _world(group)
    if world == 1:
        return siglip_loss(image, text, logit_scale, logit_bias, chunk_size=chunk)
    scale = as_scalar(logit_scale, "logit_scale", image)
    bias = as_scalar(logit_bias, "logit_bias", image, default=0.0)
    sizes = _gather_sizes(image.shape[0], image.device, group)
    all_text = _gather(text, sizes, group)
    offset, total = sum(sizes[:rank]), sum(sizes)
    return siglip_row_loss_sum(image, all_text, scale, bias, offset=offset, chunk_size=chunk) * (world / total)


__all__ = ["distributed_clip_loss", "distributed_siglip_loss", "gather_features"]
