"""Check what a command was given before it does any work.

Every command calls these first, so a mistyped spec or a missing path is reported at once, not after a model
has loaded and other datasets have been embedded. They are cheap: no model is loaded, no image read or
rendered, no folder walked. Each raises :class:`~cliplab.cli.common.UsageError` (``cliplab: error: ...``, exit
status 2) naming the option and the spec or path at fault.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from cliplab.cli.common import UsageError

if TYPE_CHECKING:
    from cliplab.data.spec import DataSpec


@contextmanager
def _about(option: str) -> Iterator[None]:
    """Re-raise a spec error as a ``UsageError`` prefixed with the option it came from."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise UsageError(f"{option}: {err}") from err


def model(spec: str | None, option: str = "MODEL") -> None:
    """A model spec of a known form (see ``cliplab.models.registry.SPEC_FORMS``); ``None`` means not given."""
    if spec is None:
        return
    from cliplab.models.registry import check_model_spec

    with _about(option):
        check_model_spec(spec)


@overload
def data(spec: str | DataSpec, option: str = ..., *, split: str | None = ..., **options: Any) -> DataSpec: ...
@overload
def data(spec: None, option: str = ..., *, split: str | None = ..., **options: Any) -> None: ...
def data(
    spec: str | DataSpec | None, option: str = "DATA", *, split: str | None = "test", **options: Any
) -> DataSpec | None:
    """A dataset spec ``load_dataset`` accepts (see ``cliplab.data.registry.DATA_FORMS``), parsed once here.

    Returns the :class:`~cliplab.data.spec.DataSpec` the command passes on to ``load_dataset`` (so the spec is
    not parsed again); ``None``: not given.
    """
    if spec is None:
        return None
    from cliplab.data.registry import check_data_spec
    from cliplab.data.spec import DataSpec

    with _about(option):
        parsed = DataSpec.parse(spec)
        check_data_spec(parsed, split=split, **options)
    return parsed


def existing_file(path: str | os.PathLike | None, option: str, what: str = "file") -> None:
    """An input file that must exist (``what`` it is, for the message)."""
    if path is None:
        return
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{option}: {what} not found: {os.fspath(path)}")
    if not p.is_file():
        raise UsageError(f"{option}: {os.fspath(path)} is not a file")


def existing_dir(path: str | os.PathLike | None, option: str, what: str = "directory") -> None:
    """An input folder that must exist (``what`` it is, for the message)."""
    if path is None:
        return
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{option}: {what} not found: {os.fspath(path)}")
    if not p.is_dir():
        raise UsageError(f"{option}: {os.fspath(path)} is not a directory")


def _no_file_above(p: Path, option: str, path: str | os.PathLike) -> None:
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{option}: cannot write {os.fspath(path)}: {parent} is not a directory")
            return


def output_file(path: str | os.PathLike | None, option: str) -> None:
    """A file the command will write: not an existing directory, not under a file."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{option}: {os.fspath(path)} is a directory; give a file name")
    _no_file_above(p, option, path)


def output_dir(path: str | os.PathLike | None, option: str) -> None:
    """A directory the command will create or write into: not an existing file, not under a file."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option}: {os.fspath(path)} exists and is not a directory")
    _no_file_above(p, option, path)


def ints(text: str | Sequence[int], option: str) -> list[int]:
    """Comma-separated integers (``"1,2,4"``); a list already parsed (by ``common.int_list``) as it is."""
    if not isinstance(text, str):
        return [int(v) for v in text]
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise UsageError(f"{option} must be comma-separated integers, got {text!r}") from err


def names(text: str | None, option: str, known: Iterable[str]) -> list[str] | None:
    """Comma-separated names, each one of ``known``; ``None`` when not given."""
    if text is None:
        return None
    known = list(known)
    given = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in given if v not in known]
    if unknown:
        raise UsageError(f"{option}: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    return given


def templates(value: str | None, option: str = "--templates", *, files: bool = True) -> None:
    """A known template set name or (``files``) a JSON file that exists and parses, as ``load_templates`` reads it."""
    from cliplab.cli.common import load_templates
    from cliplab.zeroshot.templates import get_templates

    with _about(option):
        loaded = load_templates(value) if files else value
        if isinstance(loaded, str):
            get_templates(loaded)


def common(args: argparse.Namespace) -> None:
    """The options of ``add_common``: the feature cache directory, when one is used."""
    if not getattr(args, "no_cache", False):
        output_dir(getattr(args, "cache_dir", None), "--cache-dir")
    batch_size = getattr(args, "batch_size", None)
    if batch_size is not None and batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")


def load_config(cls: Any, args: Any, what: str) -> Any:
    """``cls.from_file(args.config)`` with the command line's ``--output-dir``, ``--steps`` and ``--device``
    applied (``cls``: a config dataclass with ``from_file`` and ``replace``; ``what`` names it in errors)."""
    existing_file(args.config, "CONFIG", what)
    config = cls.from_file(args.config)
    overrides = {
        k: v
        for k, v in (("output_dir", args.output_dir), ("steps", args.steps), ("device", args.device))
        if v is not None
    }
    return config.replace(**overrides) if overrides else config
