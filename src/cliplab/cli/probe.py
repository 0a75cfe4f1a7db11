"""``cliplab probe MODEL [PROBE ...]``: compositional probes (built-in, SugarCrepe, Winoground, ARO)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cliplab.cli import preflight
from cliplab.cli.common import add_common, cache_dir, print_json, print_table


def add_probe(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab probe`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    from cliplab.probes.sources import PROBE_SOURCES

    forms = "; ".join(d for _, _, d in PROBE_SOURCES.values())
    p = sub.add_parser(
        "probe",
        help="compositional probes: true caption vs hard negatives (built-in, SugarCrepe, Winoground, ARO)",
        description=f"Probe specs: {forms}. Default: shapes (generated on the built-in world).",
    )
    p.add_argument("model", help="model spec")
    p.add_argument("probes", nargs="*", default=["shapes"], help="probe specs (default: shapes)")
    p.add_argument("-o", "--output", default=None, help="also write the results here (.json)")
    add_common(p)
    return p


def run(args: argparse.Namespace) -> int:
    from cliplab._io import to_jsonable, write_text_atomic
    from cliplab.models import load_model
    from cliplab.probes import evaluate_probe, load_probe

    preflight.common(args)
    preflight.output_file(args.output, "--output")
    preflight.model(args.model)
    probes = [load_probe(spec) for spec in args.probes]  # read every annotation file before loading the model
    model = load_model(args.model, device=args.device)
    results: dict[str, Any] = {"model": args.model, "probes": {}}
    for spec, probe in zip(args.probes, probes):
        results["probes"][spec] = evaluate_probe(
            model, probe, batch_size=args.batch_size, cache_dir=cache_dir(args), progress=not args.quiet
        )
    if args.output:
        write_text_atomic(args.output, json.dumps(to_jsonable(results), indent=2) + "\n")
    if args.json:
        print_json(results)
        return 0
    for spec, r in results["probes"].items():
        if "group" in r:
            rows = [["all", r["text"], r["image"], r["group"], r["n"]]]
            rows += [[t, v["text"], v["image"], v["group"], v["n"]] for t, v in r.get("by_tag", {}).items()]
            print_table(rows, ["tag", "text", "image", "group", "items"], title=f"{spec} ({r['probe']})")
        else:
            rows = [[k, v["accuracy"], v["n"]] for k, v in r["by_type"].items()]
            rows += [["all items", r["accuracy"], r["n"]], ["mean over types", r["macro_accuracy"], None]]
            print_table(rows, ["type", "accuracy", "items"], title=f"{spec} ({r['probe']})")
        print()
    return 0
