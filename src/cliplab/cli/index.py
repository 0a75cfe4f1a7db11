"""``cliplab index MODEL IMAGE_DIR -o INDEX``: embed an image collection into a searchable index.

Shard it across processes with ``torchrun --nproc-per-node N -m cliplab index ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cliplab.cli import preflight
from cliplab.cli.common import UsageError, add_common, nonnegative_int, positive_int, print_json, print_table


def add_index(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab index`` parser (its handler is ``run_index``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser(
        "index",
        help="embed an image folder into a search index (resumable, incremental, torchrun-sharded)",
        description=(
            "Embed every image under IMAGE_DIR and build a FAISS (or exact NumPy) index with the file paths as "
            "metadata. Interrupted runs resume; running again on an existing index adds the new images. Under "
            "torchrun each rank embeds a shard and rank 0 merges them. Serve it with `cliplab serve INDEX`."
        ),
    )
    p.add_argument("model", help="model spec (HF directory, hf:<id>, openclip:<arch>/<tag>, builtin:shapes)")
    p.add_argument("image_dir", help="folder of images (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="index directory to create or extend")
    p.add_argument(
        "--kind",
        default="auto",
        choices=("auto", "flat", "ivf", "hnsw"),
        help="index type (default auto: exact below --exact-threshold images, IVF above)",
    )
    p.add_argument(
        "--exact-threshold", type=nonnegative_int, default=100_000, help="auto: exact search below this many images"
    )
    p.add_argument("--rebuild", action="store_true", help="re-index everything instead of adding new images")
    p.add_argument("--chunk-size", type=positive_int, default=1024, help="images per resumable chunk (default 1024)")
    add_common(p)
    return p


def model_spec_for_manifest(spec: str) -> str:
    """A spec that still works from another directory: local model folders become absolute paths."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def check(args: argparse.Namespace) -> None:
    """The model spec, the image folder and the index directory, before any work."""
    from cliplab.index.vector_index import MANIFEST

    preflight.common(args)
    if args.chunk_size <= 0:
        raise UsageError(f"--chunk-size must be positive, got {args.chunk_size}")
    preflight.existing_dir(args.image_dir, "IMAGE_DIR", "image folder")
    preflight.output_dir(args.output, "--output")
    out = Path(args.output).expanduser()
    if out.is_dir() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise UsageError(f"--output: {args.output} exists and is not a cliplab index (no {MANIFEST})")
    preflight.model(args.model)


def run_index(args: argparse.Namespace) -> int:
    from cliplab.index.collection import index_images
    from cliplab.models import load_model
    from cliplab.train.setup import init_distributed

    check(args)
    env, device = init_distributed(args.device)
    try:
        model = load_model(args.model, device=device)
        summary = index_images(
            model,
            args.image_dir,
            args.output,
            model_spec=model_spec_for_manifest(args.model),
            kind=args.kind,
            exact_threshold=args.exact_threshold,
            rebuild=args.rebuild,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            progress=not args.quiet,
        )
    finally:
        if env.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    if not env.is_main:
        return 0
    if args.json:
        print_json(summary.to_dict())
        return 0
    rows = [
        ("index", summary.index),
        ("images in index", summary.total),
        ("added now", summary.added),
        ("skipped (unreadable)", len(summary.skipped)),
        ("changed since indexed", len(summary.changed)),
        ("missing since indexed", len(summary.missing)),
        ("kind / backend", f"{summary.kind} / {summary.backend}"),
        ("processes", summary.world_size),
        ("seconds", round(summary.seconds, 2)),
    ]
    print_table(rows, ("", "value"), title=f"Indexed {summary.root}")
    print(f"\nSearch it in the browser: cliplab serve {args.output}")
    return 0
