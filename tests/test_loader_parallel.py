"""The parallel input pipeline: same features for any worker count, order, errors naming the file, CLI flag."""

import os
import threading

import numpy as np
import pytest
import torch

from cliplab.data import ImageFolder, make_loader, shapes
from cliplab.data.loader import default_workers, ordered_map
from cliplab.features import embed, embed_images
from cliplab.imaging.preprocess import Preprocess
from helpers import write_random_images, write_shapes_folder

PRE = Preprocess(resize=24, crop=(24, 24))


def test_default_workers_are_the_available_cores():
    import os

    assert default_workers() == len(os.sched_getaffinity(0))
    assert make_loader(shapes("test", n=4), PRE, 2).num_workers == default_workers()
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(shapes("test", n=4), PRE, 2, num_workers=-1)


def test_ordered_map_keeps_order_and_runs_in_parallel():
    started, release = threading.Barrier(2, timeout=10), threading.Event()

    def slow_first(i):
        if i < 2:
            started.wait()  # both of the first two calls run at once, or this times out
        if i == 0:
            release.wait(5)
        return i * i

    it = ordered_map(slow_first, 7, 2)
    threading.Timer(0.2, release.set).start()
    assert list(it) == [i * i for i in range(7)]
    assert list(ordered_map(lambda i: -i, 3, 0)) == [0, -1, -2]


@pytest.mark.parametrize("parallel", ["thread", "process"])
def test_batches_are_identical_and_in_order_for_any_worker_count(parallel):
    ds = shapes("test", n=11, task="shape")
    runs = {w: list(make_loader(ds, PRE, 3, num_workers=w, parallel=parallel)) for w in (0, 1, 2)}
    for w in (1, 2):
        assert [b["index"].tolist() for b in runs[w]] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
        for a, b in zip(runs[0], runs[w]):
            assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["label"], b["label"])


def test_embedded_features_do_not_depend_on_the_worker_count(tiny_model, tmp_path):
    root = write_shapes_folder(tmp_path / "imgs", 13, seed=3)
    ds = ImageFolder(root)
    feats = {w: embed_images(tiny_model, ds, batch_size=4, num_workers=w, progress=False) for w in (0, 1, 2)}
    assert torch.equal(feats[0], feats[1]) and torch.equal(feats[0], feats[2])  # fp32, same batches: bitwise
    cached = {w: embed(tiny_model, ds, batch_size=4, num_workers=w, cache_dir=False, progress=False) for w in (0, 2)}
    assert torch.equal(cached[0].images, cached[2].images)
    # the same key whatever the worker count: one cache entry serves every count
    embed(tiny_model, ds, batch_size=4, num_workers=2, cache_dir=tmp_path / "c", progress=False)
    embed(tiny_model, ds, batch_size=4, num_workers=0, cache_dir=tmp_path / "c", progress=False)
    assert len(list((tmp_path / "c").glob("*.safetensors"))) == 1
    assert torch.equal(tiny_model.encode_images(list(ds.paths), batch_size=4, num_workers=2), feats[0])


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_image_names_its_file_with_workers(tmp_path, workers):
    write_random_images(tmp_path, [f"a/{i}.png" for i in range(5)])
    (tmp_path / "a" / "3.png").write_bytes(b"not a png")
    ds = ImageFolder(tmp_path)
    with pytest.raises(ValueError, match=r"a[/\\]3\.png"):
        list(make_loader(ds, PRE, 2, num_workers=workers))
    loader = make_loader(ds, PRE, 2, num_workers=workers, on_error="skip")
    assert [b["index"].tolist() for b in loader] == [[0, 1], [2], [4]]
    assert [s["path"] for s in loader.skipped] == [str(tmp_path / "a" / "3.png")]


def test_a_dataset_error_without_a_file_name_gets_one():
    class Broken(type(shapes("test", n=2))):
        paths = ["/data/x.jpg", "/data/y.jpg"]

        def image(self, index):
            if index == 1:
                raise KeyError("decoder exploded")
            return super().image(index)

        def images(self, indices):
            return [self.image(i) for i in indices]

    ds = Broken("test", n=2)
    with pytest.raises(ValueError, match=r"image 1 .*/data/y\.jpg.*decoder exploded"):
        list(make_loader(ds, PRE, 2, num_workers=1))


def test_trainer_batch_loader_pixels_do_not_depend_on_workers(tiny_model):
    from cliplab.train.batches import BatchLoader

    ds = shapes("train", n=9, image_size=32)
    idx = np.array([5, 0, 7, 3, 8])
    one = BatchLoader(ds, list(ds.captions), tiny_model, num_workers=1)
    two = BatchLoader(ds, list(ds.captions), tiny_model, num_workers=2)
    try:
        assert torch.equal(one.load(idx, idx)["pixels"], two.load(idx, idx)["pixels"])
    finally:
        one.close()
        two.close()


def test_cli_num_workers_reaches_embed(tmp_path, tiny_model_dir, monkeypatch):
    import cliplab.features.embedding as embedding
    from cliplab.cli.commands import main

    seen = []
    real = embedding.make_loader

    def spy(*args, **kwargs):
        seen.append(kwargs["num_workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(embedding, "make_loader", spy)
    out = tmp_path / "f.safetensors"
    args = ["embed", str(tiny_model_dir), "shapes:n=6,image_size=32", "-o", str(out), "--no-cache", "--quiet"]
    assert main([*args, "--num-workers", "2"]) == 0
    assert main(args) == 0
    assert seen == [2, None] and out.is_file()
    with pytest.raises(SystemExit) as stop:  # refused by argparse, naming --num-workers
        main([*args, "--num-workers", "-1"])
    assert stop.value.code == 2


@pytest.mark.parametrize(
    "pre",
    [PRE, Preprocess(resize=40, crop=(32, 32), mean=(0.5, 0.25, 0.1), std=(0.2, 0.3, 0.9), rescale=1 / 127.5)],
)
def test_normalize_equals_the_torch_formula_bitwise(pre):
    # the loaders normalise in NumPy (no torch kernel on their threads); the values must be torch's, bit for bit
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1) / pre.rescale
    std = torch.tensor(pre.std).view(1, 3, 1, 1) / pre.rescale
    expected = (x - mean) / std
    ours = pre.normalize(batch)
    assert ours.dtype == torch.float32 and ours.is_contiguous()
    assert torch.equal(ours, expected)
    read_only = batch.copy()
    read_only.flags.writeable = False
    assert torch.equal(pre.normalize(read_only), expected)


def _native_threads_started(work) -> set[int]:
    """The OS threads that appeared while ``work`` ran on a new pool thread and are not Python threads (an
    OpenMP team's); threads of other tests that exit meanwhile, or Python threads ``work`` starts (decode
    pools), do not count."""
    from concurrent.futures import ThreadPoolExecutor

    def tids() -> set[int]:
        return {int(t) for t in os.listdir("/proc/self/task")}

    before = tids()
    with ThreadPoolExecutor(1) as pool:
        pool.submit(work).result()
        after = tids()
        python = {t.native_id for t in threading.enumerate()}
    return after - before - python


@pytest.fixture
def two_torch_threads():
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counts threads through /proc")
    if "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("torch is not built with OpenMP here")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.ones(2_000_000).mul_(2.0)  # the calling thread's OpenMP team exists before any count
    yield
    torch.set_num_threads(before)


def test_a_torch_kernel_on_a_background_thread_starts_an_openmp_team(two_torch_threads):
    # the premise of the next test: it can fail
    assert _native_threads_started(lambda: torch.ones(2_000_000).mul_(2.0))


def test_loader_threads_start_no_openmp_team(two_torch_threads, tiny_model, tmp_path):
    # a torch kernel on a loader thread would start an OpenMP team of its own; with more OpenMP threads than
    # cores libgomp stops spinning, and every parallel region of the training thread pays a wake-up
    from cliplab.train.batches import BatchLoader, Prefetcher
    from cliplab.train.streaming import ShardStream, StreamBatchLoader, resolve_shards
    from test_streaming import write_shards

    ds = shapes("train", n=64, image_size=32)
    idx = np.arange(64)
    tiny_model.tokenize(["a red circle", "a blue square"])  # the tokenizer's own thread pool starts here, not below
    for cache in (False, True):
        loader = BatchLoader(ds, list(ds.captions), tiny_model, cache_images=cache, num_workers=2)
        try:
            assert _native_threads_started(lambda loader=loader: loader.load(idx, idx)) == set()
            assert _native_threads_started(lambda loader=loader: loader.load(idx, idx)) == set()  # (the cache)
        finally:
            loader.close()
    assert _native_threads_started(lambda: list(make_loader(ds, tiny_model.preprocess, 32, num_workers=2))) == set()
    shards = resolve_shards(write_shards(tmp_path / "shards", 2, 32))
    stream = ShardStream(shards, 32, 0, rank=0, world_size=1, num_workers=2, buffer_size=16)
    prefetch = Prefetcher(stream, StreamBatchLoader(tiny_model, num_workers=2))
    try:
        got = []
        started = _native_threads_started(lambda: got.append(prefetch.submit(stream.initial_state()).result()))
        assert started == set() and got[0][0]["pixels"].shape == (32, 3, 32, 32)
    finally:
        prefetch.close()
        prefetch.loader.close()
