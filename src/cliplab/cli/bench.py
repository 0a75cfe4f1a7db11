"""``cliplab bench``: the main job — every assessment of a model on a dataset, one results file."""

from __future__ import annotations

import argparse
import sys
import time

from cliplab.cli import preflight
from cliplab.cli.common import UsageError, add_common, cache_dir, print_json, print_table


def add_bench(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab bench`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser("bench", help="run the benchmark suite (default: builtin:shapes on the built-in world)")
    p.add_argument("--model", default="builtin:shapes", help="model spec (default builtin:shapes)")
    p.add_argument("--data", default="shapes", help="dataset spec (default: the built-in shapes world)")
    p.add_argument("-o", "--output", default="cliplab-bench", help="output directory (default ./cliplab-bench)")
    p.add_argument("--only", default=None, help="comma-separated stages to run")
    p.add_argument("--n", type=int, default=1000, help="test images per built-in set (default 1000)")
    p.add_argument("--seeds", default="1,2,3", help="few-shot seeds (default 1,2,3)")
    p.add_argument(
        "--ood-data",
        action="append",
        default=[],
        metavar="SPEC",
        help="OOD images (folder or dataset spec) for the ood stage on your own data; repeat for several sets",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.json", "B.json"),
        default=None,
        help="print two results.json side by side instead of running",
    )
    add_common(p)
    return p


def check(args: argparse.Namespace) -> tuple[list[str] | None, tuple[int, ...]]:
    """Every spec, path and list option of a run, before any work; returns the stages and seeds."""
    from cliplab.bench.runner import STAGES
    from cliplab.bench.sources import source_class_attr

    only = preflight.names(args.only, "--only", STAGES)
    seeds = tuple(preflight.ints(args.seeds, "--seeds"))
    if not seeds:
        raise UsageError("--seeds needs at least one seed")
    if args.n <= 0:
        raise UsageError(f"--n must be a positive number of images, got {args.n}")
    preflight.common(args)
    preflight.output_dir(args.output, "--output")
    preflight.data(args.data, "--data", **source_class_attr(args.data, "load_options")(args.n))
    for spec in args.ood_data:
        preflight.data(spec, "--ood-data")
    preflight.model(args.model, "--model")
    return only, seeds


def run(args: argparse.Namespace) -> int:
    from cliplab.bench import run_bench
    from cliplab.models import load_model

    if args.compare:
        for path in args.compare:
            preflight.existing_file(path, "--compare", "results file")
        return run_compare(args)
    only, seeds = check(args)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    log(f"[bench] loading model {args.model}")
    t0 = time.perf_counter()
    model = load_model(args.model, device=args.device)
    load_seconds = time.perf_counter() - t0
    results = run_bench(
        model,
        args.data,
        args.output,
        only=only,
        n=args.n,
        batch_size=args.batch_size,
        cache_dir=cache_dir(args),
        progress=not args.quiet,
        log=log,
        seeds=seeds,
        ood_data=args.ood_data,
        load_seconds=load_seconds,
    )
    if args.json:
        print_json(results)
        return 0
    zs = results["stages"].get("zeroshot")
    if zs:
        rows = [[task, r["acc1"], r["acc5"], r["mean_per_class_recall"], r["n"]] for task, r in zs.items()]
        print_table(rows, ["task", "acc1", "acc5", "mean_per_class_recall", "n"], title=f"zero-shot: {args.model}")
    print(
        f"\nresults: {args.output}/results.json, report: {args.output}/report.html "
        f"(total {results['timings']['total']:.1f}s)"
    )
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from cliplab.bench.comparison import compare, load_results

    a, b = (load_results(p) for p in args.compare)
    rows = compare(a, b)
    if args.json:
        print_json(
            {
                "a": args.compare[0],
                "b": args.compare[1],
                "rows": [dict(zip(["metric", "a", "b", "delta", "direction"], r)) for r in rows],
            }
        )
        return 0
    print_table(
        [[*r[:4], r[4] or ""] for r in rows],
        ["metric", "A", "B", "B − A", "B vs A"],
        title=f"A = {args.compare[0]} ({a['model']['spec']})\nB = {args.compare[1]} ({b['model']['spec']})",
    )
    return 0
