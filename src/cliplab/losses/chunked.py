"""Memory-efficient contrastive reductions that never hold the full logit matrix.

The logits ``z_ij = s·a_i·b_j`` ("cosine") or ``z_ij = −s·‖a_i − b_j‖²`` ("euclidean") of an
``[N, D]`` and an ``[M, D]`` matrix are produced in row tiles of ``chunk`` rows (a ``chunk × M`` block
at a time), so the working memory is O(chunk·M) instead of O(N·M):

* ``tiled_logsumexp`` returns the row-wise ``LSE_j z_ij`` and the column-wise ``LSE_i z_ij``. Row
  values are complete within a tile; column values are merged across tiles online
  (``lse ← logaddexp(lse, LSE_tile)``, the Inf-CL merge ``lse − logsigmoid(lse − block_lse)``).
  Only the two LSE vectors are stored; the backward pass recomputes each tile and uses
  ``∂LSE_i/∂z_ij = exp(z_ij − lse_i)`` (the softmax), so
  ``∂L/∂z_ij = g^row_i·exp(z_ij − lse^row_i) + g^col_j·exp(z_ij − lse^col_j)``.
  With ``mask_offset=k`` the entries ``(i, i + k)`` are left out (−∞), as the leave-one-out
  InfoLOOB bound needs.
* ``tiled_softplus_sum`` returns ``Σ_ij softplus(z_ij + b)`` (the negative-pair part of the SigLIP
  loss); its backward recomputes tiles with ``∂/∂z_ij = σ(z_ij + b)``.

Gradients flow to both feature matrices, the scale and the bias (custom ``torch.autograd.Function``
objects, checked with ``torch.autograd.gradcheck``). Reference: Chen et al., "Breaking the Memory
Barrier: Near Infinite Batch Size Scaling for Contrastive Loss" (Inf-CL, 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_NEG_INF = float("-inf")


def _tile(a_blk: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, euclid: bool, b_sq: torch.Tensor | None):
    """The ``[chunk, M]`` logits of a row block (no bias)."""
    if not euclid:
        return torch.mm(a_blk * scale, b.T)
    if b_sq is None:
        raise ValueError("a Euclidean tile needs the squared norms of b (b_sq)")
    # −s·(‖a‖² + ‖b‖² − 2a·b) = (2s·a)·bᵀ − s‖a‖² − s‖b‖²
    z = torch.addmm(-(scale * a_blk.pow(2).sum(1))[:, None], a_blk * (2.0 * scale), b.T)
    return z.sub_((scale * b_sq)[None, :])


def _mask(z: torch.Tensor, start: int, mask_offset: int | None) -> None:
    if mask_offset is not None:
        z.diagonal(offset=mask_offset + start).fill_(_NEG_INF)


def _accumulate(dz, a_blk, b, euclid, b_sq, grads, start, stop):
    """Add the contribution of one tile's ``∂L/∂z`` to the (unscaled) gradients."""
    ga, gb, gs = grads
    g_rows = dz @ b  # Σ_j dz_ij b_j
    if euclid:
        r, c = dz.sum(1), dz.sum(0)
        if ga is not None:
            ga[start:stop] = a_blk * r[:, None] - g_rows
        if gb is not None:
            gb.add_(b * c[:, None]).sub_(dz.T @ a_blk)
        if gs is not None:
            gs += -(a_blk.pow(2).sum(1) * r).sum() - (b_sq * c).sum() + 2.0 * (a_blk * g_rows).sum()
    else:
        if ga is not None:
            ga[start:stop] = g_rows
        if gb is not None:
            gb.addmm_(dz.T, a_blk)
        if gs is not None:
            gs += (a_blk * g_rows).sum()


def _finish(grads, scale, euclid):
    """Apply the chain-rule factor of ``z`` w.r.t. the features: ``s`` (cosine) or ``−2s`` (euclidean)."""
    ga, gb, gs = grads
    factor = -2.0 * scale if euclid else scale
    return (
        ga * factor if ga is not None else None,
        gb * factor if gb is not None else None,
        gs,
    )


class _TiledLSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, scale, chunk, euclid, rows, cols, mask_offset):
        with torch.autocast(a.device.type, enabled=False):
            b_sq = b.pow(2).sum(1) if euclid else None
            n, m = a.shape[0], b.shape[0]
            row_lse = a.new_empty(n if rows else 0)
            col_lse = a.new_full((m if cols else 0,), _NEG_INF)
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                z = _tile(a[start:stop], b, scale, euclid, b_sq)
                _mask(z, start, mask_offset)
                if rows:
                    row_lse[start:stop] = torch.logsumexp(z, dim=1)
                if cols:
                    col_lse = torch.logaddexp(col_lse, torch.logsumexp(z, dim=0))
        ctx.save_for_backward(a, b, scale, row_lse, col_lse)
        ctx.opts = (chunk, euclid, rows, cols, mask_offset)
        if not rows:
            ctx.mark_non_differentiable(row_lse)
        if not cols:
            ctx.mark_non_differentiable(col_lse)
        return row_lse, col_lse

    @staticmethod
    def backward(ctx, g_row, g_col):
        a, b, scale, row_lse, col_lse = ctx.saved_tensors
        chunk, euclid, rows, cols, mask_offset = ctx.opts
        need_a, need_b, need_s = ctx.needs_input_grad[:3]
        grads = [
            torch.zeros_like(a) if need_a else None,
            torch.zeros_like(b) if need_b else None,
            torch.zeros((), dtype=a.dtype, device=a.device) if need_s else None,
        ]
        with torch.autocast(a.device.type, enabled=False):
            b_sq = b.pow(2).sum(1) if euclid else None
            for start in range(0, a.shape[0], chunk):
                stop = min(start + chunk, a.shape[0])
                a_blk = a[start:stop]
                z = _tile(a_blk, b, scale, euclid, b_sq)
                _mask(z, start, mask_offset)
                dz = None
                if rows and g_row is not None:
                    dz = torch.sub(z, row_lse[start:stop, None]).exp_().mul_(g_row[start:stop, None])
                if cols and g_col is not None:
                    p = z.sub_(col_lse[None, :]).exp_().mul_(g_col[None, :])
                    dz = p if dz is None else dz.add_(p)
                if dz is not None:
                    _accumulate(dz, a_blk, b, euclid, b_sq, grads, start, stop)
        ga, gb, gs = _finish(grads, scale, euclid)
        return ga, gb, gs, None, None, None, None, None


def tiled_logsumexp(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    *,
    chunk_size: int,
    geometry: str = "cosine",
    rows: bool = True,
    cols: bool = True,
    mask_offset: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise ``[N]`` and column-wise ``[M]`` log-sum-exp of the logits, without the ``[N, M]`` matrix.

    Args:
        a, b: ``[N, D]`` and ``[M, D]`` features (validated by the caller).
        scale: 0-d tensor ``s`` (may require grad).
        chunk_size: rows per tile; the working memory is about three ``chunk_size × M`` blocks.
        geometry: ``"cosine"`` (``z = s·a·bᵀ``) or ``"euclidean"`` (``z = −s·‖a_i − b_j‖²``).
        rows, cols: which reductions to compute; a skipped one is returned as an empty tensor.
        mask_offset: leave out the entries ``(i, i + mask_offset)`` (leave-one-out); None keeps all.
    """
    return _TiledLSE.apply(a, b, scale, int(chunk_size), geometry == "euclidean", rows, cols, mask_offset)


class _TiledSoftplusSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, scale, bias, chunk):
        total = torch.zeros((), dtype=torch.float64, device=a.device)
        with torch.autocast(a.device.type, enabled=False):
            for start in range(0, a.shape[0], chunk):
                z = _tile(a[start : start + chunk], b, scale, False, None).add_(bias)
                # softplus(z) = −log σ(−z), written with logsigmoid: exact for large |z|
                total += F.logsigmoid(z.neg_()).sum(dtype=torch.float64)
        ctx.save_for_backward(a, b, scale, bias)
        ctx.chunk = chunk
        return (-total).to(a.dtype)

    @staticmethod
    def backward(ctx, g):
        a, b, scale, bias = ctx.saved_tensors
        need_a, need_b, need_s, need_bias = ctx.needs_input_grad[:4]
        grads = [
            torch.zeros_like(a) if need_a else None,
            torch.zeros_like(b) if need_b else None,
            torch.zeros((), dtype=a.dtype, device=a.device) if need_s else None,
        ]
        g_bias = torch.zeros((), dtype=a.dtype, device=a.device)
        with torch.autocast(a.device.type, enabled=False):
            for start in range(0, a.shape[0], ctx.chunk):
                stop = min(start + ctx.chunk, a.shape[0])
                a_blk = a[start:stop]
                dz = _tile(a_blk, b, scale, False, None).add_(bias).sigmoid_().mul_(g)
                if need_bias:
                    g_bias += dz.sum()
                _accumulate(dz, a_blk, b, False, None, grads, start, stop)
        ga, gb, gs = _finish(grads, scale, False)
        return ga, gb, gs, (g_bias if need_bias else None), None


def tiled_softplus_sum(
    a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, *, chunk_size: int
) -> torch.Tensor:
    """``Σ_ij softplus(s·a_i·b_j + b)`` over an ``[N, D]`` × ``[M, D]`` pair, computed in row tiles.

    ``scale`` and ``bias`` are 0-d tensors (may require grad). Summation is in float64.
    """
    return _TiledSoftplusSum.apply(a, b, scale, bias, int(chunk_size))


__all__ = ["tiled_logsumexp", "tiled_softplus_sum"]
