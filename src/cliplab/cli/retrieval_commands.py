"""``cliplab retrieve MODEL CAPTION_DATA`` and ``cliplab score MODEL --images ... --captions ...``."""

from __future__ import annotations

import argparse

from cliplab.cli import preflight
from cliplab.cli.common import (
    SPLIT_HELP,
    UsageError,
    add_common,
    cache_dir,
    int_list,
    positive_float,
    print_json,
    print_table,
)

CLIPSCORE_PREFIX = "A photo depicts "


def add_retrieve(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("retrieve", help="image-text retrieval recall@k on a caption dataset (both directions)")
    p.add_argument("model", help="model spec")
    p.add_argument("data", help="caption dataset: a .csv/.jsonl file, or shapes[:opts]")
    p.add_argument("--ks", type=int_list(1), default="1,5,10", help="comma-separated k of recall@k (default 1,5,10)")
    p.add_argument("--split", default="test", help=SPLIT_HELP)
    p.add_argument(
        "--ties",
        choices=("pessimistic", "index", "topk"),
        default=None,
        help="tie-break of equal scores: pessimistic (ties count against the match), index, or topk "
        "(CLIP_benchmark's torch.topk); default: topk for wds: data, else pessimistic",
    )
    add_common(p, skip_images=True)
    return p


def add_score(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("score", help="CLIPScore (and RefCLIPScore with --references) of image-caption pairs")
    s.add_argument("model", help="model spec")
    s.add_argument("--images", nargs="+", required=True, help="image files")
    s.add_argument("--captions", nargs="+", required=True, help="one caption per image")
    s.add_argument(
        "--references", nargs="*", default=None, help="reference captions, 'ref1|ref2|...' per image (RefCLIPScore)"
    )
    s.add_argument("--prefix", default=CLIPSCORE_PREFIX, help=f"caption prefix (default {CLIPSCORE_PREFIX!r})")
    s.add_argument("--w", type=positive_float, default=2.5, help="CLIPScore weight w (default 2.5)")
    add_common(s)
    return s


def run_retrieve(args: argparse.Namespace) -> int:
    from cliplab.data import load_dataset
    from cliplab.features import embed
    from cliplab.metrics import retrieval
    from cliplab.metrics.retrieval_metrics import default_ties
    from cliplab.models import load_model

    ks = tuple(args.ks)  # checked by argparse (int_list)
    preflight.common(args)
    data = preflight.data(args.data, split=args.split)
    preflight.model(args.model)
    model = load_model(args.model, device=args.device)
    dataset = load_dataset(data, split=args.split)
    if not dataset.captions:
        raise UsageError(f"dataset {dataset.name!r} has no captions; retrieval needs a caption dataset")
    feats = embed(model, dataset, batch_size=args.batch_size, cache_dir=cache_dir(args), progress=not args.quiet)
    assert feats.texts is not None  # a caption dataset's features have texts
    ties = args.ties or default_ties(args.data)
    result = retrieval(feats.images, feats.texts, feats.text_to_image, ks=ks, ties=ties)
    result = {**result, "ties": ties, "n_images": len(feats), "n_captions": int(feats.texts.shape[0])}
    if args.json:
        print_json(result)
    else:
        rows = [[f"R@{k}", result[f"image_retrieval_recall@{k}"], result[f"text_retrieval_recall@{k}"]] for k in ks]
        print_table(
            rows,
            ["k", "text→image", "image→text"],
            title=f"retrieval: {args.model} on {dataset.name} ({len(feats)} images, {result['n_captions']} captions; "
            f"ties: {ties})",
        )
    return 0


def run_score(args: argparse.Namespace) -> int:
    from cliplab.metrics import clipscore, refclipscore
    from cliplab.models import load_model

    if len(args.images) != len(args.captions):
        raise UsageError(f"{len(args.images)} images but {len(args.captions)} captions: give one caption per image")
    if args.references is not None and len(args.references) != len(args.images):
        raise UsageError(f"{len(args.references)} reference groups for {len(args.images)} images")
    preflight.common(args)
    for image in args.images:
        preflight.existing_file(image, "--images", "image file")
    preflight.model(args.model)
    model = load_model(args.model, device=args.device)
    img = model.encode_images(args.images, batch_size=args.batch_size)
    txt = model.encode_texts([args.prefix + c for c in args.captions])
    scores = clipscore(img, txt, w=args.w)
    rows = [{"image": i, "caption": c, "clipscore": float(s)} for i, c, s in zip(args.images, args.captions, scores)]
    if args.references is not None:
        groups = [[r for r in g.split("|") if r.strip()] for g in args.references]
        refs = [model.encode_texts([args.prefix + r for r in g]) for g in groups]
        ref_scores = refclipscore(img, txt, refs, w=args.w)
        for row, s in zip(rows, ref_scores):
            row["refclipscore"] = float(s)
    summary = {"mean_clipscore": float(scores.mean()), "pairs": rows}
    if args.references is not None:
        summary["mean_refclipscore"] = float(sum(r["refclipscore"] for r in rows) / len(rows))
    if args.json:
        print_json(summary)
    else:
        headers = ["image", "caption", "clipscore"] + (["refclipscore"] if args.references is not None else [])
        print_table([[r[h] for h in headers] for r in rows], headers, title=f"CLIPScore (w={args.w})")
        print(f"mean CLIPScore: {summary['mean_clipscore']:.4f}")
    return 0
