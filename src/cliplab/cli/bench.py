"""``cliplab bench``: the main job — every assessment of a model on a dataset, one results file; or a suite of
models × datasets (repeated ``--model`` / ``--data``, or ``--suite FILE``) with one leaderboard."""

from __future__ import annotations

import argparse
import pkgutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cliplab.cli import preflight
from cliplab.cli.common import (
    UsageError,
    add_common,
    cache_dir,
    default_output_dir,
    int_list,
    positive_int,
    print_json,
    print_table,
)

DEFAULT_MODEL, DEFAULT_DATA, DEFAULT_N, DEFAULT_SEEDS = "builtin:shapes", "shapes", 1000, "1,2,3"
DEFAULT_OUTPUT = "cliplab-bench"

if TYPE_CHECKING:
    from cliplab.data.spec import DataSpec


def stage_names() -> list[str]:
    """The built-in bench stages, without importing them: one module per stage in ``cliplab/bench/stages``, named
    like the stage (a test checks this against the registered ``cliplab.bench.stage.STAGES``)."""
    folder = Path(__file__).resolve().parent.parent / "bench" / "stages"
    return sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if not m.name.startswith("_"))


def add_bench(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab bench`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser("bench", help="run the benchmark suite (default: builtin:shapes on the built-in world)")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="SPEC",
        help=f"model spec (default {DEFAULT_MODEL}); repeat for a suite of models",
    )
    p.add_argument(
        "--data",
        action="append",
        default=None,
        metavar="SPEC",
        help="dataset spec (default: the built-in shapes world); repeat for a suite of datasets",
    )
    p.add_argument(
        "--suite",
        default=None,
        metavar="FILE",
        help="a suite file (YAML: models, datasets with their task, stages) or a shipped suite's name "
        "(clip_benchmark, coop_fewshot); --model replaces its models",
    )
    p.add_argument(
        "--templates",
        default=None,
        help="class-name templates for every zero-shot classifier: a set name, a .json/.txt file (a dict class → "
        "sentences: CuPL descriptions), or several joined by '+' (default: each dataset's own)",
    )
    p.add_argument(
        "-o",
        "--output",
        default=DEFAULT_OUTPUT,
        help=f"output directory (default ./{DEFAULT_OUTPUT}, with a .gitignore of '*' in it)",
    )
    p.add_argument("--only", default=None, help=f"comma-separated stages to run, of: {', '.join(stage_names())}")
    p.add_argument("--n", type=positive_int, default=None, help=f"test images per built-in set (default {DEFAULT_N})")
    p.add_argument(
        "--seeds", type=int_list(0), default=None, help=f"comma-separated few-shot seeds (default {DEFAULT_SEEDS})"
    )
    p.add_argument(
        "--ood-data",
        action="append",
        default=[],
        metavar="SPEC",
        help="OOD images (folder or dataset spec) for the ood stage on your own data; repeat for several sets",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="RESULTS",
        default=None,
        help="print two or more results.json files (or run directories) side by side instead of running",
    )
    add_common(p, skip_images=True)
    return p


def check(args: argparse.Namespace) -> tuple[list[str] | None, tuple[int, ...], DataSpec, list[DataSpec]]:
    """Every spec, path and list option of a single run, before any work; returns the stages, the seeds and
    the data and OOD specs, each parsed once (``run_bench`` is given these objects)."""
    from cliplab.bench.data_kinds import data_class_attr
    from cliplab.bench.runner import STAGES

    only, seeds, n = _common_options(args, STAGES)
    data = _parsed((args.data or [DEFAULT_DATA])[0], "--data")
    data = preflight.data(data, "--data", **data_class_attr(data, "load_options")(n))
    ood = [preflight.data(spec, "--ood-data") for spec in args.ood_data]
    preflight.model((args.model or [DEFAULT_MODEL])[0], "--model")
    return only, seeds, data, ood


def _parsed(spec: str, option: str) -> DataSpec:
    """``spec`` parsed (a malformed one is a usage error naming ``option``)."""
    from cliplab.data.spec import DataSpec

    with preflight._about(option):
        return DataSpec.parse(spec)


def _common_options(args: argparse.Namespace, stages: Any) -> tuple[list[str] | None, tuple[int, ...], int]:
    only = preflight.names(args.only, "--only", stages)
    seeds = tuple(preflight.ints(args.seeds if args.seeds is not None else DEFAULT_SEEDS, "--seeds"))
    if not seeds:
        raise UsageError("--seeds needs at least one seed")
    n = args.n if args.n is not None else DEFAULT_N
    if n <= 0:
        raise UsageError(f"--n must be a positive number of images, got {n}")
    preflight.common(args)
    preflight.templates(args.templates)
    preflight.output_dir(args.output, "--output")
    return only, seeds, n


def is_suite(args: argparse.Namespace) -> bool:
    return bool(args.suite) or len(args.model or []) > 1 or len(args.data or []) > 1


def build_suite(args: argparse.Namespace) -> Any:
    """The suite of a run from ``--suite`` and/or repeated ``--model`` / ``--data``, checked before any work."""
    from cliplab.bench.data_kinds import data_class_attr
    from cliplab.bench.runner import STAGES
    from cliplab.bench.suite import Suite, datasets_from_specs, load_suite, models_from_specs

    only, seeds, n = _common_options(args, STAGES)
    if args.suite:
        if args.data:
            raise UsageError("--data: the datasets come from --suite; give one or the other")
        try:
            suite = load_suite(args.suite)
        except (ValueError, FileNotFoundError) as err:
            raise UsageError(f"--suite: {err}") from err
        if args.model:
            suite.models = models_from_specs(args.model)
        if not suite.models:
            raise UsageError(f"--model: the suite {args.suite} names no model; pass --model SPEC (repeatable)")
        if only:
            suite.stages = tuple(only)
        if args.n is not None:
            suite.n = n
        if args.seeds is not None:
            suite.seeds = seeds
    else:
        try:
            models = models_from_specs(args.model or [DEFAULT_MODEL])
            datasets = datasets_from_specs(args.data or [DEFAULT_DATA])
        except ValueError as err:
            raise UsageError(str(err)) from err
        suite = Suite("suite", models, datasets, stages=tuple(only) if only else None, n=n, seeds=seeds)
    if args.templates:  # for every dataset without its own
        from dataclasses import replace

        from cliplab.cli.common import load_templates

        templates = load_templates(args.templates)
        suite.datasets = [d if d.templates is not None else replace(d, templates=templates) for d in suite.datasets]
    in_file = f" of suite {suite.path}" if args.suite else ""
    for d in suite.datasets:
        option = f"dataset {d.name!r}{in_file}" if args.suite else "--data"
        spec = _parsed(d.spec, option)
        preflight.data(spec, option, **data_class_attr(spec, "load_options")(suite.n))
    for spec in args.ood_data:
        preflight.data(spec, "--ood-data")
    for m in suite.models:
        preflight.model(m.spec, "--model" if args.model else f"model {m.name!r}{in_file}")
    return suite


def run(args: argparse.Namespace) -> int:
    if args.compare:
        if len(args.compare) < 2:
            raise UsageError("--compare needs at least two results files")
        for path in args.compare:
            _check_results_path(path)
        return run_compare(args)
    if is_suite(args):
        return run_suite_command(args)
    return run_single(args)


def _check_results_path(path: str) -> None:
    from pathlib import Path

    if Path(path).is_dir():
        preflight.existing_file(str(Path(path) / "results.json"), "--compare", "results file")
    else:
        preflight.existing_file(path, "--compare", "results file")


def _log(args: argparse.Namespace) -> Any:
    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    return log


def run_single(args: argparse.Namespace) -> int:
    from cliplab.bench import run_bench
    from cliplab.cli.common import load_templates
    from cliplab.models import load_model

    only, seeds, data, ood = check(args)
    default_output_dir(args.output, DEFAULT_OUTPUT)
    log = _log(args)
    model_spec = (args.model or [DEFAULT_MODEL])[0]
    log(f"[bench] loading model {model_spec}")
    t0 = time.perf_counter()
    model = load_model(model_spec, device=args.device)
    load_seconds = time.perf_counter() - t0
    results = run_bench(
        model,
        data,
        args.output,
        only=only,
        n=args.n if args.n is not None else DEFAULT_N,
        batch_size=args.batch_size,
        cache_dir=cache_dir(args),
        progress=not args.quiet,
        log=log,
        seeds=seeds,
        ood_data=ood,
        load_seconds=load_seconds,
        templates=load_templates(args.templates),
    )
    if args.json:
        print_json(results)
        return 0
    zs = results["stages"].get("zeroshot")
    if zs:
        rows = [
            [task, r["acc1"], r["acc5"], r["mean_per_class_recall"], r["n"]] for task, r in zs.items() if "acc1" in r
        ]
        print_table(rows, ["task", "acc1", "acc5", "mean_per_class_recall", "n"], title=f"zero-shot: {model_spec}")
        print()
    print_summary(results)
    print(
        f"\nresults: {args.output}/results.json, report: {args.output}/report.html "
        f"(total {results['timings']['total']:.1f}s)"
    )
    return 0


def print_summary(results: dict[str, Any]) -> None:
    """Every stage's headline numbers (the report's overview cards), one row each, read from ``results`` as
    ``results.json`` holds it (JSON keys: a stage's per-shot results are keyed ``"16"`` there, ``16`` in memory)."""
    import json

    from cliplab._io import to_jsonable
    from cliplab.bench.report import headlines

    saved = json.loads(json.dumps(to_jsonable(results)))
    rows = [[stage, label, value, detail] for stage, label, value, detail in headlines(saved)]
    if rows:
        print_table(rows, ["stage", "headline", "value", "task · data"], title="headline numbers of every stage")


def run_suite_command(args: argparse.Namespace) -> int:
    from cliplab.bench.leaderboard import primary
    from cliplab.bench.suite_runner import run_suite

    suite = build_suite(args)
    default_output_dir(args.output, DEFAULT_OUTPUT)
    summary = run_suite(
        suite,
        args.output,
        batch_size=args.batch_size,
        cache_dir=cache_dir(args),
        device=args.device,
        progress=not args.quiet,
        log=_log(args),
        ood_data=args.ood_data,
    )
    failed = [c for c in summary["cells"] if c["status"] == "failed"]
    if args.json:
        print_json(summary)
        return 1 if failed else 0
    from cliplab.bench.comparison import load_results
    from cliplab.bench.leaderboard import cell_metrics

    rows = []
    for c in summary["cells"]:
        p = None if c["status"] == "failed" else primary(cell_metrics(load_results(f"{args.output}/{c['dir']}")))
        rows.append([c["model"], c["data"], c["status"], p[0] if p else c.get("error", ""), p[1] if p else None])
    print_table(rows, ["model", "data", "status", "metric", "value"], title=f"suite {suite.name}")
    files = summary["files"]
    print(f"\nleaderboard: {args.output}/{files['html']}, table: {args.output}/{files['csv']}, {files['md']}")
    if failed:
        print(f"{len(failed)} cell(s) failed (error.json in each); rerun the same command to retry them only")
    return 1 if failed else 0


def run_compare(args: argparse.Namespace) -> int:
    from cliplab.bench.comparison import compare, compare_runs, load_results

    runs = [load_results(p) for p in args.compare]
    if len(runs) == 2:
        a, b = runs
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
    labels = [chr(ord("A") + i) if i < 26 else f"R{i + 1}" for i in range(len(runs))]
    rows = compare_runs(runs)
    if args.json:
        print_json(
            {
                "runs": [
                    {"label": lab, "path": p, "model": r["model"]["spec"], "data": r["data"]["spec"]}
                    for lab, p, r in zip(labels, args.compare, runs)
                ],
                "rows": [
                    {"metric": r[0], "values": r[1:-1], "best": None if r[-1] is None else labels[r[-1]]} for r in rows
                ],
            }
        )
        return 0
    title = "\n".join(
        f"{lab} = {p} ({r['model']['spec']} on {r['data']['spec']})" for lab, p, r in zip(labels, args.compare, runs)
    )
    print_table(
        [[r[0], *r[1:-1], "" if r[-1] is None else labels[r[-1]]] for r in rows], ["metric", *labels, "best"], title
    )
    return 0
