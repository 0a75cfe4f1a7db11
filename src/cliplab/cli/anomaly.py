"""``cliplab anomaly MODEL DATA``: zero-/few-shot anomaly detection (WinCLIP, WinCLIP+, PatchCore on CLIP
patches) per category, image- and pixel-level metrics; ``-o DIR`` adds ``results.json`` and heat-map overlays."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cliplab.cli import preflight
from cliplab.cli.common import (
    UsageError,
    add_common,
    fraction,
    int_list,
    name_list,
    positive_int,
    print_json,
    print_table,
)

#: ``cliplab.anomaly.METHODS`` (repeated so that the parser imports no torch; a test checks they agree)
METHOD_NAMES = ("winclip", "patchcore")
WINDOW_FEATURES = ("tokens", "mean")

if TYPE_CHECKING:
    from cliplab.data.spec import DataSpec


def add_anomaly(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab anomaly`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser("anomaly", help="zero-/few-shot anomaly detection (WinCLIP, WinCLIP+, PatchCore)")
    p.add_argument("model", help="model spec with a ViT image tower: builtin:shapes, hf:<id>, openclip:<arch>/<tag>")
    p.add_argument(
        "data",
        help="anomaly data: mvtec:<root>[:category=], visa:<root>[:category=], shapes-defects[:opts], or a folder "
        "(read as anomaly-folder:<dir>: good/ + one folder per defect type)",
    )
    p.add_argument("--shots", type=int_list(0), default=[0, 1, 2, 4], help="normal reference images per category, "
                   "comma-separated (0: zero-shot; default 0,1,2,4)")  # fmt: skip
    p.add_argument("--seeds", type=int_list(0), default=[0], help="draws of the references (default 0)")
    p.add_argument("--methods", type=name_list(METHOD_NAMES), default=list(METHOD_NAMES),
                   help=f"comma-separated methods among {', '.join(METHOD_NAMES)} (default: all)")  # fmt: skip
    p.add_argument("--scales", type=int_list(1), default=[2, 3], help="WinCLIP window sizes in patches (default 2,3)")
    p.add_argument("--window-features", choices=WINDOW_FEATURES, default="tokens",
                   help="window embeddings: the tower on the window's tokens (tokens, as the paper) or the mean of "
                   "its projected patch tokens (mean, cheaper)")  # fmt: skip
    p.add_argument("--coreset", type=fraction, default=None, help="PatchCore: fraction of normal patches kept")
    p.add_argument("-o", "--output", default=None, help="write results.json and heat-map overlays (PNG) here")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    add_common(p, model=False)
    return p


def data_spec(data: str) -> str:
    """A bare directory is the plain layout, ``anomaly-folder:<dir>``; anything else as given."""
    return f"anomaly-folder:{data}" if ":" not in os.path.basename(data) and os.path.isdir(data) else data


def _check(args: argparse.Namespace) -> None:
    if "patchcore" in args.methods and args.methods == ["patchcore"] and max(args.shots) == 0:
        raise UsageError("--methods patchcore needs --shots with at least one value >= 1 (it has no zero-shot mode)")
    if any(s > 16 for s in args.scales):
        raise UsageError(f"--scales: window sizes are counted in patches; {max(args.scales)} is too large")


def _load_data(spec: str | DataSpec, shots: list[int]) -> tuple[Any, Any]:
    from cliplab.data import load_dataset

    text = str(spec)
    test: Any
    train: Any
    try:
        test = load_dataset(spec, split="test")
        train = load_dataset(spec, split="train") if max(shots) > 0 else None
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(f"DATA: {err}") from err
    for attr in ("mask", "categories"):
        if not hasattr(test, attr):
            raise UsageError(f"DATA: {text!r} is not anomaly-detection data (no {attr}); see docs/datasets.md")
    labels = list(test.labels)
    if not labels or 0 not in labels:
        raise UsageError(f"DATA: {text!r} has no normal test images")
    if 1 not in labels:
        raise UsageError(f"DATA: {text!r} has no anomalous test images")
    if train is not None and len(train) == 0:
        raise UsageError(f"DATA: {text!r} has no normal reference images (train split) for --shots {max(shots)}")
    if train is not None:
        per: dict[str, int] = {}
        for c in train.categories:
            per[c] = per.get(c, 0) + 1
        for c in sorted(set(test.categories)):
            if per.get(c, 0) < max(shots):
                raise UsageError(
                    f"--shots {max(shots)}: category {c!r} of {text!r} has {per.get(c, 0)} normal reference image(s)"
                )
    return test, train


def run(args: argparse.Namespace) -> int:
    _check(args)
    spec = data_spec(args.data)
    preflight.common(args)
    preflight.output_dir(args.output, "--output")
    parsed = preflight.data(spec, split="test")
    preflight.model(args.model)
    test, train = _load_data(parsed, args.shots)
    from cliplab.anomaly import anomaly_evaluate
    from cliplab.models import load_model

    model = load_model(args.model, device=args.device)
    start = time.perf_counter()
    result = anomaly_evaluate(
        model, test, train, methods=args.methods, shots=args.shots, seeds=args.seeds, scales=args.scales,
        window_features=args.window_features, coreset=args.coreset, batch_size=args.batch_size,
        progress=None if args.quiet or args.json else print,
    )  # fmt: skip
    cases = result.pop("cases")
    result.update(model=args.model, data=spec, seconds=time.perf_counter() - start)
    if args.output:
        result["overlays"] = write_outputs(Path(args.output), result, cases, test)
    if args.json:
        print_json(result)
        return 0
    keys = ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pro"]
    rows = [[r["category"], r.get("method"), r.get("shots"), *(r.get(k) for k in keys)] for r in result["rows"]]
    print_table(rows, ["category", "method", "shots", *keys], title=f"anomaly detection: {args.model} on {spec}")
    print()
    mean = [[r["method"], r["shots"], *(r.get(k) for k in keys)] for r in result["mean"]]
    print_table(mean, ["method", "shots", *keys], title="mean over categories")
    per = ", ".join(f"{m} {s * 1000:.1f} ms" for m, s in result["seconds_per_image"].items())
    print(f"\ntime per test image: {per}")
    if args.output:
        print(f"wrote {Path(args.output) / 'results.json'} and {len(result['overlays'])} overlays")
    return 0


def write_outputs(folder: Path, result: dict[str, Any], cases: list[dict[str, Any]], test: Any) -> list[str]:
    """``results.json`` and one overlay PNG per kept case (written atomically); returns the PNGs' names."""
    import json

    from cliplab._io import atomic_path, to_jsonable, write_text_atomic
    from cliplab.anomaly.overlays import heatmap_overlay

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for c in cases:
        if c["map"] is None:
            continue
        name = f"{c['kind']}-{c['method']}-{c['shots']}shot-{c['category']}-{c['index']}.png".replace("/", "_")
        mask = test.mask(c["index"]) if getattr(test, "has_masks", True) else None
        img = heatmap_overlay(test.image(c["index"]).resize(c["map"].shape[::-1]), c["map"], mask, scale=2)
        with atomic_path(folder / name) as tmp:
            img.save(tmp, format="PNG")
        names.append(name)
    out = {**result, "overlays": names}
    write_text_atomic(folder / "results.json", json.dumps(to_jsonable(out), indent=2) + "\n")
    return names
