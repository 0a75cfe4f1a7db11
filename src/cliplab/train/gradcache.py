"""Gradient accumulation that keeps every contrastive negative: GradCache (Gao et al. 2021).

Plain accumulation computes the loss per micro-batch, so each sample only sees the negatives of its own
micro-batch. GradCache instead

1. runs every micro-batch forward **without** gradients and caches the features (and the RNG state
   each micro-batch started from);
2. computes the loss on the whole accumulated batch from the cached features, made leaves, and
   back-propagates it to get the gradient of the loss with respect to every feature;
3. runs each micro-batch forward again **with** gradients (same RNG state, so dropout and patch
   dropout drop the same units) and back-propagates ``Σ features · cached_gradient``, which gives the
   parameters exactly the full-batch gradient.

The cost is one extra forward pass; memory is that of one micro-batch plus the ``[B, D]`` features.

``forward(chunk)`` returns ``(per_sample, shared)``: tensors with one row per sample (image and text
features) that are concatenated over micro-batches, and tensors that are the same for every
micro-batch (the logit scale and bias, as computed from their parameters). The shared tensors' cached
gradients are back-propagated with the last micro-batch, so under DDP every trainable parameter gets
its gradient in the one synchronised backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Outputs = tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor | None, ...]]
ForwardFn = Callable[[Any], Outputs]
LossFn = Callable[[tuple[torch.Tensor, ...], tuple[torch.Tensor | None, ...]], torch.Tensor]


@dataclass
class RNGState:
    """The torch CPU generator state and, when training on CUDA, the device generator's."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None = None
    device: torch.device | None = None


def capture_rng(device: torch.device | str | None = None) -> RNGState:
    """Snapshot the torch generators that ``device`` uses (CPU always)."""
    dev = torch.device(device) if device is not None else None
    cuda = torch.cuda.get_rng_state(dev) if dev is not None and dev.type == "cuda" else None
    return RNGState(torch.get_rng_state(), cuda, dev)


def restore_rng(state: RNGState) -> None:
    """Restore a snapshot taken by ``capture_rng``."""
    torch.set_rng_state(state.cpu)
    if state.cuda is not None and state.device is not None:
        torch.cuda.set_rng_state(state.cuda, state.device)


def _leaf(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None:
        return None
    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.requires_grad_(True)


def _surrogate(outputs: Sequence[torch.Tensor | None], grads: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
    terms = []
    for out, grad in zip(outputs, grads):
        if out is not None and grad is not None and out.requires_grad:
            terms.append((out.to(grad.dtype) * grad).sum())
    return terms


def direct_backward(
    forward: ForwardFn, loss_fn: LossFn, batch: Any, *, backward: Callable[[torch.Tensor], None] | None = None
) -> torch.Tensor:
    """One forward/backward without accumulation; returns the (detached) loss."""
    per_sample, shared = forward(batch)
    loss = loss_fn(per_sample, shared)
    (backward or torch.Tensor.backward)(loss)
    return loss.detach()


def gradcache_backward(
    forward: ForwardFn,
    loss_fn: LossFn,
    chunks: Sequence[Any],
    *,
    first_pass: ForwardFn | None = None,
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Accumulate into ``.grad`` the gradient of ``loss_fn`` on all ``chunks`` together.

    Args:
        forward: ``chunk → (per_sample, shared)`` with gradients (the DDP-wrapped module under DDP).
        loss_fn: ``(per_sample, shared) → loss`` on the concatenated batch.
        chunks: the micro-batches.
        first_pass: the forward used without gradients in pass 1 (default ``forward``; under DDP the
            unwrapped module).
        backward: how to back-propagate the loss (e.g. ``lambda l: scaler.scale(l).backward()``).
        no_sync: a context manager factory (``ddp.no_sync``) used for all but the last micro-batch.
        device: the training device (whose RNG is replayed besides the CPU's).

    Returns:
        The loss on the whole batch (detached).
    """
    if not chunks:
        raise ValueError("gradcache_backward needs at least one micro-batch")
    first_pass = first_pass or forward
    states: list[RNGState] = []
    per_chunks: list[tuple[torch.Tensor, ...]] = []
    shared: tuple[torch.Tensor | None, ...] = ()
    with torch.no_grad():
        for i, chunk in enumerate(chunks):
            states.append(capture_rng(device))
            per, sh = first_pass(chunk)
            per_chunks.append(tuple(per))
            if i == 0:
                shared = tuple(sh)
    sizes = [int(p[0].shape[0]) for p in per_chunks]
    full = tuple(_leaf(torch.cat([p[j] for p in per_chunks])) for j in range(len(per_chunks[0])))
    shared_leaves = tuple(_leaf(s) for s in shared)
    with torch.enable_grad():
        loss = loss_fn(full, shared_leaves)  # type: ignore[arg-type]
    (backward or torch.Tensor.backward)(loss)
    per_grads = [
        torch.split(leaf.grad, sizes) if leaf is not None and leaf.grad is not None else [None] * len(sizes)
        for leaf in full
    ]
    shared_grads = [leaf.grad if leaf is not None else None for leaf in shared_leaves]

    for i, chunk in enumerate(chunks):
        restore_rng(states[i])
        last = i == len(chunks) - 1
        ctx = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
        with ctx:
            per, sh = forward(chunk)
            terms = _surrogate(per, [g[i] for g in per_grads])
            if last:
                terms += _surrogate(sh, shared_grads)
            if terms:
                torch.stack(terms).sum().backward()
    return loss.detach()


def split_batch(batch: dict[str, Any], n_chunks: int) -> list[dict[str, Any]]:
    """Split every tensor (and nested dict of tensors) of ``batch`` into ``n_chunks`` equal row blocks."""

    def split(value: Any) -> list[Any]:
        if isinstance(value, torch.Tensor):
            if value.shape[0] % n_chunks:
                raise ValueError(f"a batch of {value.shape[0]} rows does not split into {n_chunks} micro-batches")
            return list(value.chunk(n_chunks))
        if isinstance(value, dict):
            parts = {k: split(v) for k, v in value.items()}
            return [{k: v[i] for k, v in parts.items()} for i in range(n_chunks)]
        if value is None:
            return [None] * n_chunks
        raise TypeError(f"cannot split a batch entry of type {type(value).__name__}")

    pieces = {k: split(v) for k, v in batch.items()}
    return [{k: v[i] for k, v in pieces.items()} for i in range(n_chunks)]


__all__ = ["RNGState", "capture_rng", "direct_backward", "gradcache_backward", "restore_rng", "split_batch"]
