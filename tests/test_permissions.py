"""What cliplab writes gets ordinary permissions (``0o666 & ~umask`` / ``0o777 & ~umask``), not the temp file's 0600."""

import os
import stat

import numpy as np
import pytest
import torch

from cliplab._io import atomic_dir, atomic_path, write_text_atomic
from helpers import make_tiny_model

# (umask, file mode, directory mode)
UMASKS = [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]


@pytest.fixture(params=UMASKS, ids=["umask022", "umask077"])
def modes(request):
    mask, file_mode, dir_mode = request.param
    before = os.umask(mask)
    try:
        yield file_mode, dir_mode
    finally:
        os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_path_and_write_text_atomic(tmp_path, modes):
    file_mode, _ = modes
    write_text_atomic(tmp_path / "a.txt", "hello")
    assert mode(tmp_path / "a.txt") == file_mode
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")
    assert mode(tmp_path / "b.bin") == file_mode
    # a writer that replaces the temporary file (some libraries write their own file) still gets the usual mode
    with atomic_path(tmp_path / "c.bin") as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    assert mode(tmp_path / "c.bin") == file_mode
    # replacing an existing file
    write_text_atomic(tmp_path / "a.txt", "again")
    assert mode(tmp_path / "a.txt") == file_mode and (tmp_path / "a.txt").read_text() == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.bin"]


def test_atomic_dir(tmp_path, modes):
    file_mode, dir_mode = modes
    for _ in range(2):  # create, then replace an existing directory
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f.txt").write_text("x")
            (tmp / "sub").mkdir()
            # writers that leave private modes (safetensors does) or executables
            os.close(os.open(tmp / "sub" / "private.bin", os.O_WRONLY | os.O_CREAT, 0o600))
            os.close(os.open(tmp / "run.sh", os.O_WRONLY | os.O_CREAT, 0o700))
            (tmp / "sub" / "inner").mkdir(mode=0o700)
        d = tmp_path / "d"
        assert mode(d) == dir_mode
        assert mode(d / "f.txt") == mode(d / "sub" / "private.bin") == file_mode
        assert mode(d / "sub") == mode(d / "sub" / "inner") == dir_mode
        assert mode(d / "run.sh") == dir_mode  # executable stays executable (0755 / 0700)
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_failed_writes_leave_nothing(tmp_path, modes):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "f") as tmp:
        tmp.write_text("partial")
        raise RuntimeError
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d"):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_feature_cache(tmp_path, modes):
    from cliplab.data import shapes
    from cliplab.features import embed

    file_mode, dir_mode = modes
    cache = tmp_path / "cache" / "features"
    embed(make_tiny_model(), shapes("test", n=4, image_size=32), cache_dir=cache, progress=False)
    (entry,) = cache.iterdir()
    assert entry.suffix == ".safetensors" and mode(entry) == file_mode
    assert mode(cache) == dir_mode and mode(cache.parent) == dir_mode


def test_training_checkpoint(tmp_path, modes):
    from cliplab.train.checkpoint import checkpoint_root, save_checkpoint

    file_mode, dir_mode = modes
    target = save_checkpoint(tmp_path / "run", 3, {"w": torch.zeros(2)}, {"note": 1})
    root = checkpoint_root(tmp_path / "run")
    assert mode(target) == dir_mode and mode(root) == dir_mode
    written = {p.name: mode(p) for p in target.iterdir()}
    assert written == {"model.safetensors": file_mode, "state.pt": file_mode}
    assert mode(root / "latest") == file_mode


def test_bench_results_and_report(tmp_path, modes):
    pytest.importorskip("matplotlib")
    from cliplab.bench import run_bench

    file_mode, dir_mode = modes
    out = tmp_path / "out"
    run_bench(make_tiny_model(), "shapes:image_size=32", out, only=["zeroshot"], n=16, cache_dir=False, progress=False)
    assert mode(out) == dir_mode
    assert mode(out / "results.json") == file_mode
    assert mode(out / "report.html") == file_mode


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_index_directory(tmp_path, modes, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    from cliplab.index import VectorIndex

    file_mode, dir_mode = modes
    vectors = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    index = VectorIndex.build(vectors, metadata=[f"{i}.png" for i in range(20)], backend=backend, kind="flat")
    for _ in range(2):  # a new index, then one replacing it
        index.save(tmp_path / "idx")
        assert mode(tmp_path / "idx") == dir_mode
        files = list((tmp_path / "idx").iterdir())
        assert len(files) == 3
        for f in files:
            assert mode(f) == file_mode, f.name


def test_saved_model_directory(tmp_path, modes):
    file_mode, dir_mode = modes
    make_tiny_model().save(tmp_path / "model")
    for parent, _dirs, files in os.walk(tmp_path / "model"):
        assert mode(parent) == dir_mode, parent
        for name in files:
            assert mode(os.path.join(parent, name)) == file_mode, name
