"""Reading images from a ``wds:`` dataset (decoded from the tars in place) vs the same images in a class folder.

Writes ``--n`` random JPEG images (``--size`` px, quality 90) twice into a temporary directory: as
CLIP_benchmark webdataset shards (``test/{0..k-1}.tar`` of ``--per-shard`` samples, ``nshards.txt``,
``classnames.txt``) and as a class folder (``<class>/<i>.jpg``) with the same bytes. Then it reads every image
(``dataset.image(i)``: bytes → decoded RGB PIL image) from each, in dataset order and in a random order (what
a shuffling trainer asks for), and prints images/s and the ratio wds / folder (baseline: the class folder,
measured in the same run). The wds numbers exclude opening the dataset (indexing the tar headers); that time
is printed on its own line, with the index cached and not, and the header scan is timed against ``tarfile``
(the baseline) on the same shards.

    python benchmarks/wds_read.py [--n 2000] [--size 160] [--per-shard 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cliplab.data import load_dataset


def write_both(root: Path, n: int, size: int, per_shard: int, classes: int = 10, seed: int = 0) -> tuple[str, str]:
    rng = np.random.default_rng(seed)
    wds, folder = root / "wds", root / "folder"
    (wds / "test").mkdir(parents=True)
    (wds / "classnames.txt").write_text("\n".join(f"class {c}" for c in range(classes)) + "\n")
    shards = (n + per_shard - 1) // per_shard
    for s in range(shards):
        with tarfile.open(wds / "test" / f"{s}.tar", "w") as tf:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                label = i % classes
                # smooth random images compress like photos (pure noise would make JPEG decoding atypically slow)
                small = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
                img = Image.fromarray(small).resize((size, size), Image.BILINEAR)
                buf = io.BytesIO()
                img.save(buf, format="jpeg", quality=90)
                data = buf.getvalue()
                for name, payload in ((f"s{i:07d}.jpg", data), (f"s{i:07d}.cls", str(label).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
                (folder / f"class_{label}").mkdir(parents=True, exist_ok=True)
                (folder / f"class_{label}" / f"{i:07d}.jpg").write_bytes(data)
    (wds / "test" / "nshards.txt").write_text(f"{shards}\n")
    return f"wds:{wds}", f"folder:{folder}"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def read_all(ds, order: np.ndarray) -> float:
    t0 = time.perf_counter()
    for i in order:
        ds.image(int(i))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--per-shard", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many passes per measurement")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wds_read_"))
    os.environ["CLIPLAB_HOME"] = str(tmp / "cliplab_home")  # the index cache of this run only
    try:
        wds_spec, folder_spec = write_both(tmp, args.n, args.size, args.per_shard)
        t0 = time.perf_counter()
        wds = load_dataset(wds_spec)
        t_open = time.perf_counter() - t0
        t0 = time.perf_counter()
        wds = load_dataset(wds_spec)
        t_open_cached = time.perf_counter() - t0
        t0 = time.perf_counter()
        folder = load_dataset(folder_spec)
        t_folder_open = time.perf_counter() - t0
        assert len(wds) == len(folder) == args.n
        print(f"{args.n} JPEG images of {args.size}x{args.size} px, {args.n // args.per_shard} shard(s)")
        print(
            f"open: wds {t_open * 1e3:.0f} ms (index built), {t_open_cached * 1e3:.0f} ms (index cached); "
            f"folder {t_folder_open * 1e3:.0f} ms"
        )
        from cliplab.data.shards import _scan_headers, _tarfile_members

        shards = wds.index.shards
        sizes = [os.path.getsize(p) for p in shards]
        t_scan = min(_timed(lambda: [_scan_headers(p, n) for p, n in zip(shards, sizes)]) for _ in range(args.repeat))
        t_tar = min(_timed(lambda: [_tarfile_members(p, n) for p, n in zip(shards, sizes)]) for _ in range(args.repeat))
        print(
            f"header index: scan {t_scan * 1e3:.0f} ms, tarfile {t_tar * 1e3:.0f} ms "
            f"(ratio scan/tarfile {t_scan / t_tar:.2f})"
        )
        rng = np.random.default_rng(0)
        print(f"{'order':<12}{'wds img/s':>12}{'folder img/s':>14}{'ratio wds/folder':>18}")
        for name, order in (("sequential", np.arange(args.n)), ("random", rng.permutation(args.n))):
            t_wds = min(read_all(wds, order) for _ in range(args.repeat))
            t_folder = min(read_all(folder, order) for _ in range(args.repeat))
            r_wds, r_folder = args.n / t_wds, args.n / t_folder
            print(f"{name:<12}{r_wds:>12.0f}{r_folder:>14.0f}{r_wds / r_folder:>18.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
