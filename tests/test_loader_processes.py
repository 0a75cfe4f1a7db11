"""Process workers of ``make_loader``: the same bits as threads, errors, ``parallel="auto"``, clean shutdown."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

import cliplab.data.loader as loader_mod
from cliplab.data import ImageFolder, load_dataset, make_loader, shapes
from cliplab.data import worker_processes as wp
from cliplab.imaging.preprocess import Preprocess
from test_wds import write_wds

PRE = Preprocess(resize=24, crop=(24, 24))
KINDS = [("none", 0), ("thread", 1), ("thread", 2), ("process", 1), ("process", 2)]


@pytest.fixture
def pools(monkeypatch):
    """Every ``ProcessPool`` started during the test (to check that none outlives its pass)."""
    started = []
    real = wp.ProcessPool.__init__

    def spy(self, *args, **kwargs):
        started.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(wp.ProcessPool, "__init__", spy)
    return started


def assert_all_closed(started):
    assert started, "no worker process was started"
    for pool in started:
        assert pool.procs == [] and pool.slots == []
    names = {n for pool in started for n in pool.names}
    assert names and not names & set(os.listdir("/dev/shm"))


def mixed_folder(root, n=9):
    rng = np.random.default_rng(1)
    for i in range(n):
        h, w = rng.integers(20, 50, size=2)
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        im.save(root / f"c{i % 2}" / f"{i}.{'png' if i % 3 else 'jpg'}")
    return ImageFolder(root)


def run_all(ds, batch_size=2, **kw):
    out = {}
    for kind, w in KINDS:
        loader = make_loader(ds, PRE, batch_size, num_workers=w, parallel="thread" if kind == "none" else kind, **kw)
        out[kind, w] = (list(loader), list(loader.skipped))
    return out


def assert_identical(runs):
    ref, ref_skipped = runs["none", 0]
    for key, (batches, skipped) in runs.items():
        assert skipped == ref_skipped, key
        assert len(batches) == len(ref), key
        for a, b in zip(ref, batches):
            assert torch.equal(a["index"], b["index"]), key
            assert torch.equal(a["pixel_values"], b["pixel_values"]), key  # bitwise
            assert ("label" in a) == ("label" in b) and (("label" not in a) or torch.equal(a["label"], b["label"]))


def test_threads_processes_and_no_workers_give_the_same_bits(tmp_path, pools):
    ds = mixed_folder(tmp_path / "imgs")
    runs = run_all(ds)
    assert [b["index"].tolist() for b in runs["process", 2][0]] == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    assert_identical(runs)
    root = tmp_path / "wds_toy"
    write_wds(root, formats=("webp", "png", "jpg"))
    assert_identical(run_all(load_dataset(f"wds:{root}"), batch_size=3))
    assert_all_closed(pools)


def test_skip_lists_unreadable_files_and_raise_names_them(tmp_path, pools):
    ds = mixed_folder(tmp_path / "imgs", n=7)
    bad = tmp_path / "imgs" / "c1" / "3.jpg"
    bad.write_bytes(b"not a jpeg")
    runs = run_all(ds, on_error="skip")
    assert_identical(runs)
    assert [s["path"] for s in runs["process", 2][1]] == [str(bad)]
    k = [str(p) for p in ds.paths].index(str(bad))
    expected = [[i for i in range(b, min(b + 2, 7)) if i != k] for b in range(0, 7, 2)]
    assert [b["index"].tolist() for b in runs["process", 2][0]] == [e for e in expected if e]
    with pytest.raises(ValueError, match=r"c1[/\\]3\.jpg"):
        list(make_loader(ds, PRE, 2, num_workers=2, parallel="process"))
    assert_all_closed(pools)


def test_leaving_early_or_an_error_leaves_no_process_or_shared_memory(tmp_path, pools):
    ds = shapes("test", n=40)
    it = iter(make_loader(ds, PRE, 2, num_workers=2, parallel="process"))
    next(it)
    procs = list(pools[0].procs)
    assert len(procs) == 2 and all(p.is_alive() for p in procs)
    it.close()  # a generator closed mid-way
    assert not any(p.is_alive() for p in procs)
    folder = mixed_folder(tmp_path / "imgs", n=9)
    (tmp_path / "imgs" / "c0" / "6.jpg").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match=r"6\.jpg"):
        for _ in make_loader(folder, PRE, 2, num_workers=2, parallel="process"):
            pass
    assert_all_closed(pools)


def test_a_worker_that_dies_is_an_error_not_a_hang(pools):
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        list(make_loader(Dying("test", n=6), PRE, 2, num_workers=2, parallel="process"))
    assert_all_closed(pools)


class Dying(type(shapes("test", n=1))):
    def images(self, indices):
        if 4 in indices and wp.mp.parent_process() is not None:
            os._exit(3)
        return super().images(indices)


class Unpicklable(type(shapes("test", n=1))):
    def __reduce__(self):
        raise TypeError("holds a live handle")


def test_auto_picks_processes_only_where_they_pay(monkeypatch):
    ds = shapes("test", n=24)
    monkeypatch.setattr(loader_mod, "AUTO_MIN_IMAGES", {"cold": 20, "warm": 10})
    monkeypatch.setattr(wp, "started", False)
    assert make_loader(ds, PRE, 4, num_workers=2).resolved_parallel() == "thread"  # threads unless asked
    assert make_loader(ds, PRE, 4, num_workers=2, parallel="auto").resolved_parallel() == "process"
    assert make_loader(ds, PRE, 4, num_workers=1, parallel="auto").resolved_parallel() == "thread"  # one worker
    few = {"indices": range(12), "parallel": "auto"}
    assert make_loader(ds, PRE, 4, num_workers=2, **few).resolved_parallel() == "thread"  # too few
    monkeypatch.setattr(wp, "started", True)  # the fork server is up: smaller passes pay back
    assert make_loader(ds, PRE, 4, num_workers=2, **few).resolved_parallel() == "process"
    bad = Unpicklable("test", n=24)
    assert make_loader(bad, PRE, 4, num_workers=2, parallel="auto").resolved_parallel() == "thread"  # falls back
    with pytest.raises(ValueError, match="parallel='process' needs a picklable dataset"):
        list(make_loader(bad, PRE, 4, num_workers=2, parallel="process"))
    big = Preprocess(resize=224, crop=(224, 224))  # big batches: threads (no copy through shared memory)
    assert make_loader(ds, big, 4, num_workers=2, parallel="auto").resolved_parallel() == "thread"
    monkeypatch.setattr(wp, "main_is_importable", lambda: False)  # a script without a __main__ guard
    assert make_loader(ds, PRE, 4, num_workers=2, parallel="auto").resolved_parallel() == "thread"
    with pytest.raises(ValueError, match="parallel must be one of"):
        make_loader(ds, PRE, 4, parallel="fibres")


def test_start_method_is_cuda_safe():
    assert wp.start_method() in ("forkserver", "spawn")
