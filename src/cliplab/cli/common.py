"""Shared CLI plumbing: common options, argument types, output (table or JSON), errors.

Nothing here imports torch or numpy at module level: the parsers are built from these alone (``cliplab --help``
answers at once); the ``type=`` functions (``positive_int``, ``int_list``, ...) reject a bad number while the
command line is parsed, as ``cliplab CMD: error: argument --shots: ...`` (exit status 2), before any work.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class UsageError(ValueError):
    """A user error reported as ``cliplab: error: ...`` with exit status 2."""


# -- argument types: argparse reports their errors as "argument --option: message" --------------------------------


def _number(text: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def bounded_int(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]`` (None: unbounded)."""

    def parse(text: str) -> int:
        value = _number(text, int, "an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high)}, got {value}")
        return int(value)

    parse.__name__ = "int"
    return parse


def bounded_float(
    low: float | None = None, high: float | None = None, *, open_low: bool = False
) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[low, high]`` (``open_low``: ``low`` itself excluded)."""

    def parse(text: str) -> float:
        value = _number(text, float, "a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if (low is not None and (value < low or (open_low and value == low))) or (high is not None and value > high):
            lo = f"> {low:g}" if open_low else f">= {low:g}"
            bound = (
                f"{lo} and <= {high:g}"
                if low is not None and high is not None
                else (lo if low is not None else f"<= {high:g}")
            )
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def _range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f">= {low}" if low is not None else f"<= {high}"


positive_int = bounded_int(1)
nonnegative_int = bounded_int(0)
positive_float = bounded_float(0.0, open_low=True)
fraction = bounded_float(0.0, 1.0)


def int_list(low: int | None = None, high: int | None = None) -> Callable[[str], list[int]]:
    """An argparse ``type``: comma-separated integers (``"1,2,4"``), at least one, each in ``[low, high]``."""

    def parse(text: str) -> list[int]:
        items = [v.strip() for v in text.split(",") if v.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
        try:
            values = [int(v) for v in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        bad = [v for v in values if (low is not None and v < low) or (high is not None and v > high)]
        if bad:
            raise argparse.ArgumentTypeError(f"each value must be {_range(low, high)}, got {bad[0]} in {text!r}")
        return values

    parse.__name__ = "int_list"
    return parse


def name_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type``: comma-separated names (``"a,b"``), at least one, each one of ``choices``."""

    def parse(text: str) -> list[str]:
        items = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
        unknown = [v for v in items if v not in choices]
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise argparse.ArgumentTypeError(f"unknown {names}; choose from {', '.join(choices)}")
        return items

    parse.__name__ = "name_list"
    return parse


# -- common options -------------------------------------------------------------------------------------------------

SPLIT_HELP = "split of the dataset (train, val or test; default %(default)s); a folder or file has no splits"
TEMPLATES_HELP = (
    "class-name templates: a set name (imagenet80, cifar18, simple), a .json/.txt file (a dict class → sentences "
    "gives CuPL descriptions), or several joined by '+' (e.g. imagenet80+cupl.json; default: the dataset's own)"
)


def add_common(parser: argparse.ArgumentParser, *, model: bool = True, skip_images: bool = False) -> None:
    """Options every command shares (``skip_images``: it reads images, so it has ``--skip-bad-images``)."""
    parser.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log messages")
    if model:
        parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
        parser.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)")
        parser.add_argument(
            "--cache-dir", default=None, help="feature cache directory (default $CLIPLAB_HOME/features)"
        )
        parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
        add_encoding(parser, skip_images=skip_images)


def add_encoding(parser: argparse.ArgumentParser, *, skip_images: bool = False) -> None:
    """``--num-workers``, ``--precision`` and (``skip_images``) ``--skip-bad-images``
    (``cliplab.features.encoding_options``; ``main`` applies them)."""
    parser.add_argument(
        "--num-workers",
        type=nonnegative_int,
        default=None,
        help="image decode/preprocess threads (default: available cores)",
    )
    if skip_images:
        parser.add_argument(
            "--skip-bad-images",
            action="store_true",
            help="leave unreadable images out (each listed in the output, under skipped_images with --json) "
            "instead of stopping at the first",
        )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default=None,
        help="inference precision (default fp16 on CUDA, fp32 on CPU); part of the feature cache key",
    )


@contextmanager
def encoding(args: argparse.Namespace) -> Iterator[list[dict[str, Any]]]:
    """The ``encoding_options`` context of a command's ``--num-workers`` / ``--precision`` /
    ``--skip-bad-images``; yields the list of images skipped inside it (an empty list, importing nothing, when
    none of them is given)."""
    options = {
        "num_workers": getattr(args, "num_workers", None),
        "precision": getattr(args, "precision", None),
        "skip_bad_images": getattr(args, "skip_bad_images", None) or None,
    }
    if all(v is None for v in options.values()):  # nothing to set: the built-in defaults, no import here
        yield []
        return
    from cliplab.features.embedding import encoding_options

    with encoding_options(**options) as skipped:
        yield skipped


def skipped_for_output() -> list[dict[str, Any]] | None:
    """``[{"file", "error"}, ...]``: the images skipped so far in this command under ``--skip-bad-images``
    (None when the option is not on)."""
    embedding = sys.modules.get("cliplab.features.embedding")  # not imported: nothing was encoded
    if embedding is None or not embedding.encoding_option("skip_bad_images", None):
        return None
    return [{"file": s["file"], "error": s["error"]} for s in embedding.skipped_images()]


def report_skipped(args: argparse.Namespace, skipped: Sequence[dict[str, Any]]) -> None:
    """After a text-mode command: the images ``--skip-bad-images`` left out (``--json`` has them in its object)."""
    if not getattr(args, "skip_bad_images", False) or getattr(args, "json", False) or not skipped:
        return
    print(f"\nskipped {len(skipped)} unreadable image(s):")
    for s in skipped:
        print(f"  {s['file'] or '(no file)'}: {s['error']}")


def default_output_dir(path: str | Path, default: str | Path) -> None:
    """Create ``path`` with a ``.gitignore`` of ``*`` in it when it is cliplab's ``default`` output folder (as
    pytest does for its cache), so a run inside a git checkout leaves nothing to commit by accident."""
    if Path(path) != Path(default):
        return
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# created by cliplab: this output folder is not meant to be committed\n*\n")


def cache_dir(args: argparse.Namespace) -> Any:
    return False if getattr(args, "no_cache", False) else args.cache_dir


def print_json(obj: Any) -> None:
    """``obj`` as JSON on stdout; under ``--skip-bad-images`` a dict gets the ``skipped_images`` list too."""
    from cliplab._io import to_jsonable

    skipped = skipped_for_output()
    if isinstance(obj, dict) and skipped is not None:
        obj = {**obj, "skipped_images": skipped}
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


def load_templates(value: str | None) -> Any:
    """A template set name, a ``.json``/``.txt`` file, or several joined by ``+`` (see ``read_templates``)."""
    if value is None:
        return None
    from cliplab.zeroshot.templates import read_templates

    try:
        return read_templates(value)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err


def load_classnames(value: str | None) -> list[str] | None:
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"class-names file not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise UsageError(f"class-names file {path} is empty")
    return names
