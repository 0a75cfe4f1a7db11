"""Shared CLI plumbing: common options, output (table or JSON), errors."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from cliplab._io import to_jsonable


class UsageError(ValueError):
    """A user error reported as ``cliplab: error: ...`` with exit status 2."""


def add_common(parser: argparse.ArgumentParser, *, model: bool = True) -> None:
    """Options every command shares."""
    parser.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log messages")
    if model:
        parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
        parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
        parser.add_argument(
            "--cache-dir", default=None, help="feature cache directory (default $CLIPLAB_HOME/features)"
        )
        parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
        add_encoding(parser)


def add_encoding(parser: argparse.ArgumentParser) -> None:
    """``--num-workers`` and ``--precision`` (``cliplab.features.encoding_options``; ``main`` applies them)."""
    parser.add_argument(
        "--num-workers", type=int, default=None, help="image decode/preprocess threads (default: available cores)"
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default=None,
        help="inference precision (default fp16 on CUDA, fp32 on CPU); part of the feature cache key",
    )


def encoding(args: argparse.Namespace) -> Any:
    """The ``encoding_options`` context of a command's ``--num-workers`` / ``--precision``."""
    from cliplab.features.embedding import encoding_options

    workers = getattr(args, "num_workers", None)
    if workers is not None and workers < 0:
        raise UsageError(f"--num-workers must be >= 0, got {workers}")
    return encoding_options(num_workers=workers, precision=getattr(args, "precision", None))


def cache_dir(args: argparse.Namespace) -> Any:
    return False if getattr(args, "no_cache", False) else args.cache_dir


def print_json(obj: Any) -> None:
    json.dump(to_jsonable(obj), sys.stdout, indent=2)
    sys.stdout.write("\n")


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], title: str | None = None) -> None:
    """A plain aligned text table."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    if title:
        print(title)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def load_config(cls: Any, args: Any, what: str) -> Any:
    """``cls.from_file(args.config)`` with the command line's ``--output-dir``, ``--steps`` and ``--device``
    applied (``cls``: a config dataclass with ``from_file`` and ``replace``; ``what`` names it in errors)."""
    from cliplab.cli import preflight

    preflight.existing_file(args.config, "CONFIG", what)
    config = cls.from_file(args.config)
    overrides = {
        k: v
        for k, v in (("output_dir", args.output_dir), ("steps", args.steps), ("device", args.device))
        if v is not None
    }
    return config.replace(**overrides) if overrides else config
