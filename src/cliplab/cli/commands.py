"""The ``cliplab`` command line.

Start-up is cheap: building the parser imports only the ``cliplab.cli`` modules (argparse and the standard
library); each handler imports torch and the rest of the stack when it runs. So ``--help``, ``X --help`` and
every usage error answer at once, and Ctrl-C at any point exits 130 with one line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cliplab


@dataclass(frozen=True)
class Command:
    """A sub-command: ``builder(sub) -> parser`` and ``handler(args) -> exit status``, both functions of the
    module ``cliplab.cli.<module>``, resolved only when used (``check_commands`` resolves them all)."""

    name: str
    module: str
    builder: str
    handler: str

    def resolve(self, attr: str) -> Callable[..., Any]:
        """The function ``attr`` (``builder`` or ``handler``) names; an error says which entry is wrong."""
        ref = f"cliplab.cli.{self.module}:{getattr(self, attr)}"
        fn = getattr(importlib.import_module(f"cliplab.cli.{self.module}"), getattr(self, attr), None)
        if not callable(fn):
            raise RuntimeError(f"the {self.name!r} command's {attr} {ref} is not a function")
        return fn


#: the sub-commands, in ``--help`` order
COMMANDS: tuple[Command, ...] = (
    Command("bench", "bench", "add_bench", "run"),
    Command("embed", "embed", "add_embed", "run"),
    Command("zeroshot", "zeroshot", "add_zeroshot", "run"),
    Command("adapt", "adapt", "add_adapt", "run"),
    Command("retrieve", "retrieval_commands", "add_retrieve", "run_retrieve"),
    Command("score", "retrieval_commands", "add_score", "run_score"),
    Command("ood", "reliability_commands", "add_ood", "run_ood"),
    Command("calibrate", "reliability_commands", "add_calibrate", "run_calibrate"),
    Command("estimate", "reliability_commands", "add_estimate", "run_estimate"),
    Command("probe", "probe", "add_probe", "run"),
    Command("curate", "curate", "add_curate", "run"),
    Command("train", "train", "add_train", "run"),
    Command("finetune", "finetune", "add_finetune", "run"),
    Command("anomaly", "anomaly", "add_anomaly", "run"),
    Command("index", "index", "add_index", "run_index"),
    Command("serve", "serve", "add_serve", "run_serve"),
    Command("export", "export", "add_export", "run"),
    Command("convert", "convert", "add_convert", "run"),
)


def check_commands() -> None:
    """Resolve every entry of ``COMMANDS``: both functions exist and each builder builds its own command."""
    sub = argparse.ArgumentParser(prog="cliplab").add_subparsers()
    for command in COMMANDS:
        command.resolve("handler")
        _build(command, sub)


def _build(command: Command, sub: Any) -> argparse.ArgumentParser:
    parser = command.resolve("builder")(sub)
    if not isinstance(parser, argparse.ArgumentParser) or parser.prog.split()[-1] != command.name:
        got = getattr(parser, "prog", parser)
        raise RuntimeError(f"cliplab.cli.{command.module}:{command.builder} built {got!r}, not {command.name!r}")
    parser.set_defaults(command_entry=command)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``cliplab`` parser; imports no more than the ``cliplab.cli`` modules (no torch)."""
    parser = argparse.ArgumentParser(
        prog="cliplab",
        description="Train, adapt and assess CLIP-family models. Everything is a logit.",
    )
    parser.add_argument("--version", action="version", version=f"cliplab {cliplab.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        _build(command, sub)
    return parser


def silence_libraries() -> None:
    """--quiet: no progress bars or info logs from transformers / huggingface_hub either."""
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" not in sys.modules:  # the environment variables suffice for a later import
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def interrupted() -> int:
    """Ctrl-C: one line on stderr, exit status 130."""
    print("\ncliplab: interrupted", file=sys.stderr, flush=True)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # anywhere: building the parser, importing the stack, working
        return interrupted()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "command_entry", None)
    if command is None:
        parser.print_help()
        return 2
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs CPU-feature probing at INFO
    if quiet:
        silence_libraries()
    try:
        from cliplab.cli.common import encoding, report_skipped

        handler = command.resolve("handler")
        with encoding(args) as skipped:  # --num-workers / --precision / --skip-bad-images for every encode
            status = int(handler(args) or 0)
            report_skipped(args, skipped)
            return status
    except (ValueError, FileNotFoundError, ImportError) as err:
        if os.environ.get("CLIPLAB_DEBUG"):
            raise
        print(f"cliplab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
