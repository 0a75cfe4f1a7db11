"""The ``cliplab`` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

import cliplab

#: sub-command modules, each with ``register(subparsers)``
COMMANDS = ("bench", "embed", "zeroshot", "adapt", "retrieve", "reliability", "train", "index", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cliplab",
        description="Train, adapt and assess CLIP-family models. Everything is a logit.",
    )
    parser.add_argument("--version", action="version", version=f"cliplab {cliplab.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"cliplab.cli.{name}").register(sub)
    return parser


def silence_libraries() -> None:
    """--quiet: no progress bars or info logs from transformers / huggingface_hub either."""
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO, format="%(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs CPU-feature probing at INFO
    if getattr(args, "quiet", False):
        silence_libraries()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("cliplab: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError) as err:
        if os.environ.get("CLIPLAB_DEBUG"):
            raise
        print(f"cliplab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
