"""Data rewritten in place invalidates the feature cache, even with the same sizes and its mtime set back."""

import io
import os
import tarfile

import numpy as np
import torch
from PIL import Image

from cliplab import embed
from cliplab.data import load_dataset


def _png(seed: int, side: int = 16) -> bytes:
    """An uncompressed PNG: its size depends on ``side`` only, not on the pixels."""
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="png", compress_level=0)
    return buf.getvalue()


def _write_shard(path, seed: int, n: int = 4) -> None:
    with tarfile.open(path, "w") as tf:
        for i in range(n):
            for name, data in ((f"s{i:07d}.png", _png(seed * 100 + i)), (f"s{i:07d}.cls", str(i % 2).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o444, 0
                tf.addfile(info, io.BytesIO(data))


def _rewrite_keeping_size_and_mtime(path, write) -> None:
    """``write()`` new content to ``path``, then set its times back as ``touch -r`` / ``rsync -t`` would."""
    before = os.stat(path)
    write()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _assert_fresh(model, spec: str, cache, stale: torch.Tensor) -> None:
    ds = load_dataset(spec)
    feats = embed(model, ds, cache_dir=cache, progress=False)
    direct = model.encode_images([ds.image(i) for i in range(len(ds))])
    assert not torch.allclose(direct, stale, atol=1e-4)  # the pixels did change
    assert torch.allclose(feats.images, direct, atol=1e-5), "the feature cache returned the old data's features"


def test_a_wds_shard_rewritten_with_the_same_layout_and_mtime_gets_new_features(tiny_model, tmp_path):
    root = tmp_path / "wds"
    (root / "test").mkdir(parents=True)
    (root / "test" / "nshards.txt").write_text("1\n")
    (root / "classnames.txt").write_text("red circle\nblue square\n")
    shard = root / "test" / "0.tar"
    _write_shard(shard, seed=1)
    cache = tmp_path / "cache"
    old = embed(tiny_model, load_dataset(f"wds:{root}"), cache_dir=cache, progress=False).images

    _rewrite_keeping_size_and_mtime(shard, lambda: _write_shard(shard, seed=2))
    _assert_fresh(tiny_model, f"wds:{root}", cache, old)


def test_a_folder_image_rewritten_under_touch_r_gets_new_features(tiny_model, tmp_path):
    root = tmp_path / "folder"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            (root / c / f"{i}.png").write_bytes(_png(ord(c) * 10 + i))
    cache = tmp_path / "cache"
    old = embed(tiny_model, load_dataset(f"folder:{root}"), cache_dir=cache, progress=False).images

    for c in ("a", "b"):
        path = root / c / "0.png"
        _rewrite_keeping_size_and_mtime(path, lambda p=path, c=c: p.write_bytes(_png(999 + ord(c))))
    _assert_fresh(tiny_model, f"folder:{root}", cache, old)
