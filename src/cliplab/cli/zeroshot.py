"""``cliplab zeroshot MODEL DATA``: zero-shot classification metrics."""

from __future__ import annotations

import argparse

from cliplab.cli import preflight
from cliplab.cli.common import (
    SPLIT_HELP,
    TEMPLATES_HELP,
    add_common,
    cache_dir,
    load_classnames,
    load_templates,
    print_json,
    print_table,
)


def add_zeroshot(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab zeroshot`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser("zeroshot", help="zero-shot classification of a labelled dataset")
    p.add_argument("model", help="model spec: a HF directory, hf:<id>, openclip:<arch>/<tag>, builtin:shapes")
    p.add_argument("data", help="dataset spec: shapes[:opts], an image folder, ...")
    p.add_argument("--templates", default=None, help=TEMPLATES_HELP)
    p.add_argument("--classnames", default=None, help="text file with one class name per line")
    p.add_argument("--split", default="test", help=SPLIT_HELP)
    add_common(p, skip_images=True)
    return p


def run(args: argparse.Namespace) -> int:
    from cliplab.data import load_dataset
    from cliplab.models import load_model
    from cliplab.zeroshot import zeroshot_evaluate

    preflight.common(args)
    preflight.templates(args.templates)
    classnames, templates = load_classnames(args.classnames), load_templates(args.templates)
    data = preflight.data(args.data, split=args.split)
    preflight.model(args.model)
    model = load_model(args.model, device=args.device)
    dataset = load_dataset(data, split=args.split)
    report = zeroshot_evaluate(
        model,
        dataset,
        classnames=classnames,
        templates=templates,
        batch_size=args.batch_size,
        cache_dir=cache_dir(args),
        progress=not args.quiet,
    )
    if args.json:
        print_json(report)
    else:
        print_table(
            [[report["acc1"], report["acc5"], report["mean_per_class_recall"], report["n"]]],
            ["acc1", "acc5", "mean_per_class_recall", "n"],
            title=f"zero-shot {args.model} on {dataset.name}",
        )
    return 0
