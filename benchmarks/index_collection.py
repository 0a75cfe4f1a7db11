"""``cliplab index`` on a folder of image files vs plain embedding of the same files.

Baseline (named): ``embed-only`` = ``embed_images(model, ImageFolder(root))``: the same files decoded,
preprocessed and encoded in the same batches, kept in memory, nothing saved. ``index_images`` adds the
directory scan, resumable chunk files, the merge, the FAISS build and the atomic save; the ratio shows
what that costs. Also timed: a second run on an unchanged folder (scan only), and a resumed run that
finds every chunk done (interrupted just before the merge).

    python benchmarks/index_collection.py [--n 2000] [--arch shapes|vit-b32] [--chunk-size 1024]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from cliplab.data import shapes
from cliplab.data.folders import ImageFolder
from cliplab.data.shapes_world import VOCABULARY
from cliplab.features import embed_images
from cliplab.index.collection import index_images
from cliplab.models.factory import build_tokenizer, create_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed import ARCHS  # noqa: E402  (the same architectures as the embedding benchmark)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="shapes")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = ARCHS[args.arch]
    model = create_model(cfg, build_tokenizer(VOCABULARY, context_length=cfg.context_length), seed=0)
    data = shapes("test", n=args.n, image_size=cfg.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        for i in range(args.n):
            folder = root / data.classnames[int(data.labels[i])].replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            data.image(i).save(folder / f"{i:06d}.png")
        folder_ds = ImageFolder(root)
        embed_images(model, folder_ds, range(min(64, args.n)), batch_size=args.batch_size, progress=False)  # warm-up

        t0 = time.perf_counter()
        base = embed_images(model, folder_ds, batch_size=args.batch_size, progress=False)
        t_base = time.perf_counter() - t0

        out = Path(tmp) / "idx"
        t0 = time.perf_counter()
        summary = index_images(model, root, out, batch_size=args.batch_size, chunk_size=args.chunk_size, progress=False)
        t_index = time.perf_counter() - t0
        assert summary.total == args.n == base.shape[0]

        t0 = time.perf_counter()
        again = index_images(model, root, out, batch_size=args.batch_size, progress=False)
        t_again = time.perf_counter() - t0
        assert again.added == 0

        # every chunk finished, merge not yet done: the resumed run only merges
        import cliplab.index.collection as coll

        real_merge = coll._merge

        def crash(*a, **k):
            raise KeyboardInterrupt

        shutil.rmtree(out)
        coll._merge = crash
        try:
            index_images(model, root, out, batch_size=args.batch_size, chunk_size=args.chunk_size, progress=False)
        except KeyboardInterrupt:
            pass
        coll._merge = real_merge
        t0 = time.perf_counter()
        resumed = index_images(model, root, out, batch_size=args.batch_size, chunk_size=args.chunk_size, progress=False)
        t_resumed = time.perf_counter() - t0
        assert resumed.embedded_here == 0

    print(
        f"{args.n} PNG files, arch {args.arch} ({cfg.image_size} px), batch {args.batch_size}, chunk {args.chunk_size}"
    )
    print(f"  embed-only (baseline)         {t_base:7.2f} s  {args.n / t_base:8.0f} img/s")
    print(
        f"  index_images, first build     {t_index:7.2f} s  {args.n / t_index:8.0f} img/s  "
        f"= {t_base / t_index:.2f}x baseline throughput"
    )
    print(f"  second run, nothing new       {t_again:7.2f} s  ({t_index / t_again:.0f}x faster than the build)")
    print(f"  resumed run, all chunks done  {t_resumed:7.2f} s  ({t_index / t_resumed:.0f}x faster than the build)")


if __name__ == "__main__":
    main()
