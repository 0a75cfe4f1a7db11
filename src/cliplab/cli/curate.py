"""``cliplab curate DATA -o OUT.csv``: filter a caption dataset (or ``wds:`` shards into ``-o DIR``); writes the
curated data and its JSON report."""

from __future__ import annotations

import argparse
from pathlib import Path

from cliplab.cli import preflight
from cliplab.cli.common import (
    UsageError,
    add_common,
    bounded_float,
    fraction,
    nonnegative_int,
    positive_int,
    print_json,
    print_table,
)


def _words(value: str | None) -> list[str] | None:
    """A comma-separated list, or ``@file`` with one entry per line."""
    if not value:
        return None
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"word list not found: {path}")
        return [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()]
    return [w.strip() for w in value.split(",") if w.strip()]


def add_curate(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab curate`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser(
        "curate",
        help="filter image-caption data: CLIP score, near-duplicates, MetaCLIP balancing, length/language rules",
    )
    p.add_argument("data", help="caption data: a .csv/.tsv/.jsonl caption file, or wds:<dir> retrieval shards")
    p.add_argument(
        "-o", "--output", required=True, help="curated caption file (.csv, .tsv or .jsonl); a directory for wds: input"
    )
    p.add_argument("--model", default=None, help="model spec for CLIP-score filtering and deduplication")
    p.add_argument("--min-words", type=nonnegative_int, default=0, help="drop captions with fewer words")
    p.add_argument("--max-words", type=positive_int, default=None, help="drop captions with more words")
    p.add_argument("--min-latin", type=fraction, default=0.0, help="minimum share of Latin letters (e.g. 0.9)")
    p.add_argument("--vocabulary", default=None, help="word list (comma-separated or @file) for --min-known")
    p.add_argument("--min-known", type=fraction, default=0.0, help="minimum share of words in --vocabulary")
    clip = p.add_mutually_exclusive_group()
    clip.add_argument(
        "--clip-threshold",
        type=bounded_float(-1.0, 1.0),
        default=None,
        help="keep pairs with image-caption cosine >= T",
    )
    clip.add_argument(
        "--clip-top",
        type=bounded_float(0.0, 1.0, open_low=True),
        default=None,
        help="keep the top fraction by CLIP score (DataComp: 0.3)",
    )
    p.add_argument("--dedup", choices=("images", "captions", "pairs"), default=None, help="remove near-duplicates")
    p.add_argument(
        "--dedup-threshold",
        type=bounded_float(-1.0, 1.0),
        default=0.95,
        help="cosine of a near-duplicate (default 0.95)",
    )
    p.add_argument("--concepts", default=None, help="MetaCLIP concept list (comma-separated or @file)")
    p.add_argument("--balance-t", type=positive_int, default=None, help="MetaCLIP t: at most about t pairs per concept")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the balancing draws")
    add_common(p)
    return p


def run(args: argparse.Namespace) -> int:
    from cliplab.curate import CurateConfig, curate_dataset, report_path

    preflight.common(args)
    if Path(args.data).suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        preflight.existing_file(args.data, "DATA", "caption file")
    else:
        preflight.data(args.data)
    suffix = Path(args.output).suffix.lower()
    if suffix and suffix not in (".csv", ".tsv", ".jsonl"):
        raise UsageError(f"--output {args.output}: the curated file must be .csv, .tsv or .jsonl (a directory: shards)")
    (preflight.output_file if suffix else preflight.output_dir)(args.output, "--output")
    config = CurateConfig(
        min_words=args.min_words,
        max_words=args.max_words,
        min_latin=args.min_latin,
        vocabulary=_words(args.vocabulary),
        min_known=args.min_known,
        clip_threshold=args.clip_threshold,
        clip_top_fraction=args.clip_top,
        dedup=args.dedup,
        dedup_threshold=args.dedup_threshold,
        concepts=_words(args.concepts),
        balance_t=args.balance_t,
        seed=args.seed,
        model=args.model,
    )
    if config.needs_model and not args.model:
        raise UsageError("--clip-threshold, --clip-top and --dedup need --model")
    model = None
    if config.needs_model:
        from cliplab.models import load_model

        preflight.model(args.model, "--model")
        model = load_model(args.model, device=args.device)
    report = curate_dataset(
        args.data, args.output, config, model=model, batch_size=args.batch_size, progress=not args.quiet
    )
    summary = {**report["counts"], "output": report["output"], "report": str(report_path(args.output))}
    if args.json:
        print_json({**summary, "resolved": report["resolved"]})
        return 0
    rows = [[name, n] for name, n in report["counts"]["by_filter"].items()]
    print_table(rows, ["filter", "removed pairs"], title=f"{args.data} -> {args.output}")
    c = report["counts"]
    print(f"kept {c['kept_pairs']} of {c['input_pairs']} pairs ({c['kept_images']} of {c['input_images']} images)")
    print(f"report: {summary['report']}")
    return 0
