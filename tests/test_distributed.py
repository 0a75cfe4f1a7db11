"""Distributed contrastive losses on 2 gloo processes == the single-process full-batch computation.

Each rank holds a shard of a fixed batch, runs a tiny replicated "model" (one linear map per tower,
a log-scale and a bias) and back-propagates its loss; gradients are then averaged across ranks as DDP
does. The averaged loss and gradients must equal one process computing the whole batch, and each
rank's local feature gradient must be world_size × the full-batch gradient of its rows.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cliplab.losses import clip_loss, infoloob_loss, siglip_loss
from cliplab.train.distributed import distributed_clip_loss, distributed_siglip_loss, gather_features

WORLD = 2
N, D_IN, D = 8, 5, 4
SPLITS = {"even": [4, 4], "uneven": [5, 3], "uneven_allreduce": [5, 3]}  # last: the all-reduce fallback
# name -> (kind, options)
CASES = {
    "clip": ("clip", {}),
    "clip_bias_chunked": ("clip", {"chunk_size": 3, "bias": True}),
    "clip_euclidean": ("clip", {"geometry": "euclidean"}),
    "clip_euclidean_chunked": ("clip", {"geometry": "euclidean", "chunk_size": 2}),
    "siglip": ("siglip", {"bias": True}),
    "siglip_chunked": ("siglip", {"chunk_size": 3, "bias": True}),
    "infoloob_gathered": ("infoloob", {}),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _data():
    g = torch.Generator().manual_seed(0)
    return {
        "x_img": torch.randn(N, D_IN, generator=g, dtype=torch.float64),
        "x_txt": torch.randn(N, D_IN, generator=g, dtype=torch.float64),
        "w_img": torch.randn(D_IN, D, generator=g, dtype=torch.float64) * 0.5,
        "w_txt": torch.randn(D_IN, D, generator=g, dtype=torch.float64) * 0.5,
    }


def _params():
    data = _data()
    return [
        data["w_img"].clone().requires_grad_(True),
        data["w_txt"].clone().requires_grad_(True),
        torch.tensor(1.2, dtype=torch.float64, requires_grad=True),  # log scale
        torch.tensor(-2.0, dtype=torch.float64, requires_grad=True),  # bias
    ]


def _step(kind, opts, rows, distributed):
    """Loss, parameter gradients and feature gradients for the given rows of the batch."""
    data = _data()
    w_img, w_txt, log_scale, bias = params = _params()
    img = (data["x_img"][rows] @ w_img).requires_grad_(True)
    txt = (data["x_txt"][rows] @ w_txt).requires_grad_(True)
    img.retain_grad()
    txt.retain_grad()
    scale = log_scale.exp()
    b = bias if opts.get("bias") else None
    kw = {k: v for k, v in opts.items() if k in ("chunk_size", "geometry")}
    if kind == "clip":
        fn = distributed_clip_loss if distributed else clip_loss
        loss = fn(img, txt, scale, b, **kw)
    elif kind == "siglip":
        fn = distributed_siglip_loss if distributed else siglip_loss
        loss = fn(img, txt, scale, b, **kw)
    else:  # gather with gradients, then the plain loss on every rank (how the trainer uses InfoLOOB)
        loss = infoloob_loss(gather_features(img), gather_features(txt), scale * 5)
    loss.backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    return loss.detach(), grads, img.grad, txt.grad


def _worker(rank, init_file, out_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {}
        for split_name, sizes in SPLITS.items():
            start = sum(sizes[:rank])
            rows = slice(start, start + sizes[rank])
            for case, (kind, opts) in CASES.items():
                # older torch: no reduce_scatter_single, gloo falls back to all_reduce in the gather backward
                hide = split_name.endswith("_allreduce")
                with mock.patch.object(dist, "reduce_scatter_single", None) if hide else contextlib.nullcontext():
                    loss, grads, g_img, g_txt = _step(kind, opts, rows, distributed=True)
                dist.all_reduce(loss)
                for g in grads:  # DDP: average the gradients of replicated parameters
                    dist.all_reduce(g)
                    g /= WORLD
                results[split_name, case] = (loss / WORLD, grads, g_img, g_txt)
        # gather_features itself: values in rank order, gradients summed back to their owner
        mine = torch.full((rank + 2, 3), float(rank), dtype=torch.float64, requires_grad=True)
        both, single = gather_features(mine, mine * 2), gather_features(mine)
        weights = torch.arange(both[0].numel(), dtype=torch.float64).reshape(both[0].shape)
        ((both[0] + both[1] + single) * weights * (rank + 1)).sum().backward()
        results["gather"] = (both[0].detach(), mine.grad)
        torch.save(results, out_file.format(rank=rank))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    out = str(tmp / "rank{rank}.pt")
    mp.spawn(_worker, args=(str(tmp / "init"), out), nprocs=WORLD, join=True)
    return [torch.load(out.format(rank=r)) for r in range(WORLD)]


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("case", list(CASES))
def test_distributed_loss_equals_full_batch(distributed_results, split, case):
    kind, opts = CASES[case]
    sizes = SPLITS[split]
    if kind == "infoloob":
        loss, grads, g_img, g_txt = _step_full_infoloob()
    else:
        loss, grads, g_img, g_txt = _step(kind, opts, slice(0, N), distributed=False)
    for rank in range(WORLD):
        r_loss, r_grads, r_img, r_txt = distributed_results[rank][split, case]
        torch.testing.assert_close(r_loss, loss, msg=f"loss (rank {rank})")
        for name, got, want in zip(["w_img", "w_txt", "log_scale", "bias"], r_grads, grads):
            torch.testing.assert_close(got, want, msg=lambda m, name=name: f"DDP-averaged d{name}: {m}")
        rows = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
        torch.testing.assert_close(r_img, WORLD * g_img[rows], msg="local image-feature gradient")
        torch.testing.assert_close(r_txt, WORLD * g_txt[rows], msg="local text-feature gradient")


def _step_full_infoloob():
    data = _data()
    w_img, w_txt, log_scale, bias = params = _params()
    img = (data["x_img"] @ w_img).requires_grad_(True)
    txt = (data["x_txt"] @ w_txt).requires_grad_(True)
    img.retain_grad()
    txt.retain_grad()
    loss = infoloob_loss(img, txt, log_scale.exp() * 5)
    loss.backward()
    return loss.detach(), [p.grad if p.grad is not None else torch.zeros_like(p) for p in params], img.grad, txt.grad


def test_gather_features_values_and_gradients(distributed_results):
    rows = [torch.full((r + 2, 3), float(r), dtype=torch.float64) for r in range(WORLD)]
    full = torch.cat(rows)
    weights = torch.arange(full.numel(), dtype=torch.float64).reshape(full.shape)
    # Σ_q (q + 1)·(1 + 2 + 1)·weights, restricted to each rank's rows
    total = 4 * weights * sum(q + 1 for q in range(WORLD))
    for rank in range(WORLD):
        gathered, grad = distributed_results[rank]["gather"]
        torch.testing.assert_close(gathered, full)
        start = sum(r.shape[0] for r in rows[:rank])
        torch.testing.assert_close(grad, total[start : start + rows[rank].shape[0]])


def test_without_process_group_falls_back_to_local_losses():
    assert not dist.is_initialized()
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    torch.testing.assert_close(distributed_clip_loss(img, txt, 2.0), clip_loss(img, txt, 2.0))
    torch.testing.assert_close(
        distributed_siglip_loss(img, txt, 2.0, -1.0, chunk_size=4), siglip_loss(img, txt, 2.0, -1.0)
    )
    assert gather_features(img) is img
    both = gather_features(img, txt)
    assert both[0] is img and both[1] is txt
    with pytest.raises(ValueError, match="rows"):
        distributed_clip_loss(img, txt[:5], 2.0)
    with pytest.raises(ValueError, match="geometry"):
        distributed_clip_loss(img, txt, 2.0, geometry="spherical")
    with pytest.raises(ValueError, match="chunk_size"):
        distributed_siglip_loss(img, txt, 2.0, 0.0, chunk_size=0)
