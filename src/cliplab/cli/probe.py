"""``cliplab probe MODEL [PROBE ...]``: compositional probes (built-in, SugarCrepe, Winoground, ARO)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cliplab.cli import preflight
from cliplab.cli.common import add_common, cache_dir, print_json, print_table

#: the built-in probe spec forms, for ``--help`` without importing the probes (``cliplab.probes.formats``
#: ``PROBE_FORMATS`` is the truth; a test keeps the two equal)
PROBE_FORMS = (
    "shapes[:n=..,seed=..,image_size=..] (generated on the built-in world)",
    "sugarcrepe:<dir>[:images=<val2017 dir>]",
    "winoground:<dir> (examples.jsonl + images/)",
    "aro-relation:<dir>",
    "aro-attribution:<dir>",
    "aro-coco-order:<dir>",
    "aro-flickr-order:<dir>",
)


def add_probe(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab probe`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    forms = "; ".join(PROBE_FORMS)
    p = sub.add_parser(
        "probe",
        help="compositional probes: true caption vs hard negatives (built-in, SugarCrepe, Winoground, ARO)",
        description=f"Probe specs: {forms}. Default: shapes (generated on the built-in world).",
    )
    p.add_argument("model", help="model spec")
    p.add_argument("probes", nargs="*", default=["shapes"], help="probe specs (default: shapes)")
    p.add_argument("-o", "--output", default=None, help="also write the results here (.json)")
    p.add_argument("--compare", nargs="+", default=[], metavar="MODEL", help="more models to probe the same way")
    p.add_argument("--plot", default=None, help="bar chart per probe and model (.png; one file per probe spec)")
    add_common(p)
    return p


def run(args: argparse.Namespace) -> int:
    from cliplab._io import to_jsonable, write_text_atomic
    from cliplab.models import load_model
    from cliplab.probes import evaluate_probe, load_probe

    preflight.common(args)
    preflight.output_file(args.output, "--output")
    preflight.output_file(args.plot, "--plot")
    for spec in (args.model, *args.compare):
        preflight.model(spec)
    probes = [load_probe(spec) for spec in args.probes]  # read every annotation file before loading the model

    def probe_all(spec: str) -> dict[str, Any]:
        model = load_model(spec, device=args.device)
        kw = dict(batch_size=args.batch_size, cache_dir=cache_dir(args), progress=not args.quiet)
        return {name: evaluate_probe(model, probe, **kw) for name, probe in zip(args.probes, probes)}

    results: dict[str, Any] = {"model": args.model, "probes": probe_all(args.model)}
    if args.compare:
        results["compare"] = {spec: probe_all(spec) for spec in args.compare}
    if args.plot:
        _plot(args.plot, results)
    if args.output:
        write_text_atomic(args.output, json.dumps(to_jsonable(results), indent=2) + "\n")
    if args.json:
        print_json(results)
        return 0
    tables = [(args.model, results["probes"])] + list(results.get("compare", {}).items())
    for model_spec, per_probe in tables:
        for spec, r in per_probe.items():
            _print(f"{model_spec} · {spec}", r)
    return 0


def _print(title: str, r: dict[str, Any]) -> None:
    if "group" in r:
        rows = [["all", r["text"], r["image"], r["group"], r["n"]]]
        rows += [[t, v["text"], v["image"], v["group"], v["n"]] for t, v in r.get("by_tag", {}).items()]
        print_table(rows, ["tag", "text", "image", "group", "items"], title=f"{title} ({r['probe']})")
    else:
        rows = [[k, v["accuracy"], v["n"]] for k, v in r["by_type"].items()]
        rows += [["all items", r["accuracy"], r["n"]], ["mean over types", r["macro_accuracy"], None]]
        print_table(rows, ["type", "accuracy", "items"], title=f"{title} ({r['probe']})")
    print()


def _plot(path: str, results: dict[str, Any]) -> None:
    """One bar chart per probe spec (``<stem>-<k>.png`` when there are several), every model side by side."""
    from pathlib import Path

    from cliplab._io import atomic_path
    from cliplab.bench.probe_figures import probe_bar_chart

    models = {results["model"]: results["probes"], **results.get("compare", {})}
    specs = list(results["probes"])
    target = Path(path)
    for k, spec in enumerate(specs):
        by_model = {}
        for model, per_probe in models.items():
            r = per_probe[spec]
            if "by_type" in r:
                by_model[model] = {t: v["accuracy"] for t, v in r["by_type"].items()}
            else:  # Winoground: its three scores as the "types"
                by_model[model] = {"text": r["text"], "image": r["image"], "group": r["group"]}
        chance = 0.5 if all("by_type" in models[m][spec] for m in models) else None
        fig = probe_bar_chart(by_model, spec, chance=chance)
        out = target if len(specs) == 1 else target.with_name(f"{target.stem}-{k}{target.suffix or '.png'}")
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        fig.clf()
