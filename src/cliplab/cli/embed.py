"""``cliplab embed MODEL DATA -o FILE``: embed a dataset once, into a features file."""

from __future__ import annotations

import argparse

from cliplab.cli import preflight
from cliplab.cli.common import SPLIT_HELP, add_common, cache_dir, print_json


def add_embed(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab embed`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser("embed", help="embed a dataset's images (and captions) into a features file")
    p.add_argument("model", help="model spec")
    p.add_argument("data", help="dataset spec")
    p.add_argument("-o", "--output", default=None, help="write the features here (.safetensors)")
    p.add_argument("--split", default="test", help=SPLIT_HELP)
    add_common(p, skip_images=True)
    return p


def run(args: argparse.Namespace) -> int:
    from cliplab.data import load_dataset
    from cliplab.features import embed
    from cliplab.models import load_model

    preflight.common(args)
    preflight.output_file(args.output, "--output")
    data = preflight.data(args.data, split=args.split)
    preflight.model(args.model)
    model = load_model(args.model, device=args.device)
    dataset = load_dataset(data, split=args.split)
    feats = embed(model, dataset, batch_size=args.batch_size, cache_dir=cache_dir(args), progress=not args.quiet)
    if args.output:
        feats.save(args.output)
    info = {
        "output": args.output,
        "images": list(feats.images.shape),
        "texts": None if feats.texts is None else list(feats.texts.shape),
        "classes": len(feats.classnames or []),
        **{k: feats.meta.get(k) for k in ("model", "dataset", "key", "seconds")},
    }
    if feats.meta.get("skipped_images") and not args.json:
        info["skipped"] = len(feats.meta["skipped_images"])
    if args.json:
        print_json(info)
    else:
        for k, v in info.items():
            print(f"{k:>8}: {v}")
    return 0
