"""``cliplab convert SRC DST --to hf|openclip [--stretch-text 248]``: open_clip ⇄ Hugging Face, Long-CLIP positions."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cliplab.cli import preflight
from cliplab.cli.common import UsageError, print_json

TARGETS = ("hf", "openclip")
STRETCH_MODES = ("knowledge_preserved", "interpolate")


def add_convert(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``cliplab convert`` parser (its handler is ``run``, wired in ``cliplab.cli.commands``)."""
    p = sub.add_parser(
        "convert",
        help="convert a CLIP model between open_clip and Hugging Face, optionally stretching its text positions",
    )
    p.add_argument("source", help="model spec (an open_clip or Hugging Face CLIP model)")
    p.add_argument("destination", help="directory to write (replaced atomically)")
    p.add_argument("--to", required=True, choices=TARGETS, help="the library whose format DST is written in")
    p.add_argument(
        "--stretch-text",
        type=int,
        default=None,
        metavar="LENGTH",
        help="stretch the text positions to LENGTH (Long-CLIP: 248 from CLIP's 77)",
    )
    p.add_argument("--keep", type=int, default=20, help="positions kept exactly when stretching (default 20)")
    p.add_argument(
        "--stretch-mode",
        default="knowledge_preserved",
        choices=STRETCH_MODES,
        help="Long-CLIP's knowledge-preserved stretching (default) or plain interpolation of all positions",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or log messages")
    return p


def run(args: argparse.Namespace) -> int:
    if args.stretch_text is not None and args.stretch_text < 2:
        raise UsageError(f"--stretch-text must be a number of positions (e.g. 248), got {args.stretch_text}")
    if args.keep < 0:
        raise UsageError(f"--keep must be >= 0, got {args.keep}")
    preflight.output_dir(args.destination, "DST")
    src = Path(args.source).expanduser()
    if src.exists() and os.path.realpath(src) == os.path.realpath(Path(args.destination).expanduser()):
        raise UsageError(f"DST {args.destination} is SRC itself; write the converted model elsewhere")
    preflight.model(args.source, "SRC")

    from cliplab.interop import convert_dir

    info = convert_dir(
        args.source,
        args.destination,
        to=args.to,
        stretch_text=args.stretch_text,
        keep=args.keep,
        stretch_mode=args.stretch_mode,
    )
    if args.json:
        print_json(info)
    elif not args.quiet:
        for k, v in info.items():
            print(f"{k:>15}: {v}")
    return 0
