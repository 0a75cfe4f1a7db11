"""Tiled (chunked) losses: same values and gradients as the materialised ones, no B×B matrix kept."""

from __future__ import annotations

import pytest
import torch

from cliplab.losses import clip_loss, infoloob_loss, siglip_loss, tiled_logsumexp, tiled_softplus_sum

B = 23  # not divisible by 7
CHUNKS = [1, 7, B, B + 5]


pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(b=B, d=5, seed=0, dtype=torch.float64, scale=3.0, bias=-1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=dtype)
    y = torch.randn(b, d, generator=g, dtype=dtype)
    x, y = x / x.norm(dim=1, keepdim=True), y / y.norm(dim=1, keepdim=True)
    s = torch.tensor(scale, dtype=dtype)
    c = torch.tensor(bias, dtype=dtype)
    return [t.requires_grad_(True) for t in (x, y, s, c)]


def _value_and_grads(fn, inputs):
    loss = fn(*inputs)
    return [loss.detach(), *torch.autograd.grad(loss, inputs, allow_unused=True)]


def _compare(fn_full, fn_chunk, inputs, **tol):
    want, got = _value_and_grads(fn_full, inputs), _value_and_grads(fn_chunk, inputs)
    for name, w, g in zip(["value", "d_image", "d_text", "d_scale", "d_bias"], want, got):
        w = torch.zeros_like(inputs[-1]) if w is None else w
        g = torch.zeros_like(inputs[-1]) if g is None else g
        torch.testing.assert_close(g, w, msg=lambda m, name=name: f"{name}: {m}", **tol)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("geometry", ["cosine", "euclidean"])
def test_clip_chunked_equals_materialised(chunk, geometry):
    _compare(
        lambda x, y, s, b: clip_loss(x, y, s, b, geometry=geometry),
        lambda x, y, s, b: clip_loss(x, y, s, b, geometry=geometry, chunk_size=chunk),
        _inputs(),
    )


@pytest.mark.parametrize("chunk", CHUNKS)
def test_siglip_chunked_equals_materialised(chunk):
    _compare(
        lambda x, y, s, b: siglip_loss(x, y, s, b),
        lambda x, y, s, b: siglip_loss(x, y, s, b, chunk_size=chunk),
        _inputs(scale=10.0, bias=-10.0),
    )


@pytest.mark.parametrize("chunk", CHUNKS)
def test_infoloob_chunked_equals_materialised(chunk):
    _compare(
        lambda x, y, s, b: infoloob_loss(x, y, s),
        lambda x, y, s, b: infoloob_loss(x, y, s, chunk_size=chunk),
        _inputs(scale=14.3),
    )


def test_clip_chunked_float32_large_scale():
    """float32, scale 100 (CLIP's clamp) and unnormalised euclidean features stay accurate."""
    inputs = _inputs(b=200, d=32, seed=1, dtype=torch.float32, scale=100.0)
    _compare(
        lambda x, y, s, b: clip_loss(x, y, s, b),
        lambda x, y, s, b: clip_loss(x, y, s, b, chunk_size=64),
        inputs,
        rtol=1e-4,
        atol=1e-5,
    )
    inputs = _inputs(b=200, d=32, seed=2, dtype=torch.float32, scale=1.0)
    _compare(
        lambda x, y, s, b: siglip_loss(x * 3, y * 3, s, b),
        lambda x, y, s, b: siglip_loss(x * 3, y * 3, s, b, chunk_size=37),
        inputs,
        rtol=1e-4,
        atol=1e-5,
    )


def test_chunked_accepts_python_float_scale_and_no_bias():
    x, y, _, _ = _inputs()
    torch.testing.assert_close(clip_loss(x, y, 2.0, chunk_size=4), clip_loss(x, y, 2.0))
    torch.testing.assert_close(siglip_loss(x, y, 2.0, None, chunk_size=4), siglip_loss(x, y, 2.0, None))


@pytest.mark.parametrize("geometry", ["cosine", "euclidean"])
@pytest.mark.parametrize("mask_offset", [None, 0, 3])
def test_tiled_logsumexp_non_square_matches_torch(geometry, mask_offset):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 4, generator=g, dtype=torch.float64)
    b = torch.randn(11, 4, generator=g, dtype=torch.float64)
    s = torch.tensor(1.7, dtype=torch.float64)
    if geometry == "cosine":
        z = s * a @ b.T
    else:
        z = -s * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    if mask_offset is not None:
        for i in range(6):
            z[i, i + mask_offset] = float("-inf")
    rows, cols = tiled_logsumexp(a, b, s, chunk_size=4, geometry=geometry, mask_offset=mask_offset)
    torch.testing.assert_close(rows, torch.logsumexp(z, 1))
    torch.testing.assert_close(cols, torch.logsumexp(z, 0))
    only_rows, empty = tiled_logsumexp(a, b, s, chunk_size=4, geometry=geometry, cols=False, mask_offset=mask_offset)
    torch.testing.assert_close(only_rows, rows)
    assert empty.numel() == 0


@pytest.mark.parametrize("geometry", ["cosine", "euclidean"])
@pytest.mark.parametrize("rows, cols, mask_offset", [(True, True, None), (True, False, 2), (False, True, 0)])
def test_gradcheck_tiled_logsumexp(geometry, rows, cols, mask_offset):
    g = torch.Generator().manual_seed(4)
    a = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    weights_r, weights_c = (
        torch.randn(5, generator=g, dtype=torch.float64),
        torch.randn(8, generator=g, dtype=torch.float64),
    )

    def fn(a, b, s):
        r, c = tiled_logsumexp(a, b, s, chunk_size=2, geometry=geometry, rows=rows, cols=cols, mask_offset=mask_offset)
        out = a.new_zeros(())
        if rows:
            out = out + (r * weights_r).sum()
        if cols:
            out = out + (c * weights_c).sum()
        return out

    assert torch.autograd.gradcheck(fn, (a, b, s))
    # both outputs with their own upstream gradients
    if rows and cols:
        assert torch.autograd.gradcheck(
            lambda a, b, s: tiled_logsumexp(a, b, s, chunk_size=3, geometry=geometry), (a, b, s)
        )


def test_gradcheck_tiled_softplus_sum():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(-0.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, s, c: tiled_softplus_sum(a, b, s, c, chunk_size=2), (a, b, s, c))
    torch.testing.assert_close(
        tiled_softplus_sum(a, b, s, c, chunk_size=3), torch.nn.functional.softplus(s * a @ b.T + c).sum()
    )


def test_gradcheck_chunked_losses_end_to_end():
    x, y, s, c = _inputs(b=6, d=3, seed=6)
    for fn in (
        lambda x, y, s, c: clip_loss(x, y, s, c, chunk_size=4),
        lambda x, y, s, c: clip_loss(x, y, s, c, geometry="euclidean", chunk_size=4),
        lambda x, y, s, c: siglip_loss(x, y, s, c, chunk_size=4),
        lambda x, y, s, c: infoloob_loss(x, y, s, chunk_size=4) + 0 * c,
    ):
        assert torch.autograd.gradcheck(fn, (x, y, s, c))


def test_chunked_backward_keeps_no_b_by_b_tensor():
    """Nothing of size B×B (or larger than B·chunk) is saved for the backward pass."""
    b, chunk = 256, 16
    x, y, s, c = _inputs(b=b, d=8, dtype=torch.float32, seed=7)
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel())
        return t

    for fn in (
        lambda: clip_loss(x, y, s, c, chunk_size=chunk),
        lambda: clip_loss(x, y, s, c, geometry="euclidean", chunk_size=chunk),
        lambda: siglip_loss(x, y, s, c, chunk_size=chunk),
        lambda: infoloob_loss(x, y, s, chunk_size=chunk),
    ):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = fn()
        assert max(saved) <= b * 8, saved
        loss.backward()
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        clip_loss(x, y, s, c)
    assert max(saved) >= b * b  # the materialised loss does keep the logits
