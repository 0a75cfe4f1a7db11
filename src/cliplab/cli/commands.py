"""The ``cliplab`` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import cliplab

#: command -> (parser builder, handler), each ``"module:function"`` under ``cliplab.cli``; the builder adds the
#: sub-parser and returns it, the handler takes the parsed arguments and returns the exit status. Order = ``--help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("bench:add_bench", "bench:run"),
    "embed": ("embed:add_embed", "embed:run"),
    "zeroshot": ("zeroshot:add_zeroshot", "zeroshot:run"),
    "adapt": ("adapt:add_adapt", "adapt:run"),
    "retrieve": ("retrieval_commands:add_retrieve", "retrieval_commands:run_retrieve"),
    "score": ("retrieval_commands:add_score", "retrieval_commands:run_score"),
    "ood": ("reliability_commands:add_ood", "reliability_commands:run_ood"),
    "calibrate": ("reliability_commands:add_calibrate", "reliability_commands:run_calibrate"),
    "estimate": ("reliability_commands:add_estimate", "reliability_commands:run_estimate"),
    "probe": ("probe:add_probe", "probe:run"),
    "curate": ("curate:add_curate", "curate:run"),
    "train": ("train:add_train", "train:run"),
    "finetune": ("finetune:add_finetune", "finetune:run"),
    "index": ("index:add_index", "index:run_index"),
    "serve": ("serve:add_serve", "serve:run_serve"),
    "export": ("export:add_export", "export:run"),
    "convert": ("convert:add_convert", "convert:run"),
}


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(f"cliplab.cli.{module}"), attr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cliplab",
        description="Train, adapt and assess CLIP-family models. Everything is a logit.",
    )
    parser.add_argument("--version", action="version", version=f"cliplab {cliplab.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (builder, handler) in COMMANDS.items():
        command = _resolve(builder)(sub)
        if command.prog.split()[-1] != name:
            raise RuntimeError(f"cliplab.cli.{builder} built {command.prog!r}, not the {name!r} command")
        command.set_defaults(func=_resolve(handler))
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
        from cliplab.cli.common import encoding

        with encoding(args):  # --num-workers / --precision for every encode inside the command
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
