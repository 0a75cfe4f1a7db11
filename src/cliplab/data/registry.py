"""``load_dataset(spec)``: datasets by spec string, as the CLI takes them, through a registry of data sources.

A data source is a scheme (``shapes``, ``folder``, ``captions``, or one registered with
``register_data_source``) with a loader ``loader(target, split=..., **options) -> Dataset``. A spec names its
scheme (``folder:/data/pets``) or is a bare path, which goes to the first source whose ``detect(path)`` is
true (newest registration first, so a new format can claim paths before the built-ins). The registry itself,
``DATA_SOURCES``, is :mod:`cliplab.data.schemes`'s.

Both ``load_dataset`` and ``check_data_spec`` (the CLI's cheap pre-flight) go through ``prepare``: the spec is
parsed once (``DataSpec.parse``), the source resolved, the options checked against those it accepts and the
split against its splits, so the check and the load cannot disagree about a spec.

``split``: a source with splits (``shapes``) reads the one asked for; the ``split=`` keyword of
``load_dataset`` is the caller's default (a CLI's ``--split``), which a ``split`` option in the spec
overrides. Data without splits (a folder, a caption file) ignores the caller's default; an explicit ``split``
option other than ``test`` is refused with a message saying the data has no splits.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from cliplab.data.base import Dataset
from cliplab.data.schemes import (
    DATA_SOURCES,
    SCHEME,
    DataSource,
    data_source,
    data_sources,
    register_data_source,
    unregister_data_source,
)
from cliplab.data.spec import DataSpec, parse_options

__all__ = [
    "DATA_FORMS",
    "DATA_SOURCES",
    "DataSource",
    "DataSpec",
    "check_data_spec",
    "data_forms",
    "data_source",
    "data_sources",
    "load_dataset",
    "parse_options",
    "prepare",
    "register_data_source",
    "unregister_data_source",
]

#: the built-in forms (``data_forms()`` lists every registered one)
DATA_FORMS = (
    "shapes or builtin:shapes[:key=value,...] (the built-in world, e.g. shapes:task=colour,n=2000)",
    "a directory with one sub-folder of images per class (image folder)",
    "a directory of images without class sub-folders (unlabelled, e.g. OOD images)",
    "a .csv/.tsv/.jsonl caption file (image path + caption per row)",
)


def data_forms() -> list[str]:
    """What a dataset spec may be: the built-in forms and every other registered scheme's."""
    builtin = {"shapes", "folder", "captions"}
    return [*DATA_FORMS, *(s.description for s in data_sources().values() if s.scheme not in builtin)]


def _unknown_spec(spec: DataSpec) -> ValueError:
    forms = "\n  - ".join(data_forms())
    head = spec.text.partition(":")[0]
    hint = ""
    if ":" in spec.text and SCHEME.match(head):
        hint = f" (and {DATA_SOURCES.unknown(head)})"  # unknown data source 'wsd'; did you mean 'wds'? ...
    return ValueError(
        f"unknown dataset spec {spec.text!r}: no such file or directory{hint}. Accepted forms:\n  - {forms}"
    )


def _resolve(spec: DataSpec) -> DataSource:
    if spec.scheme is not None:
        return DATA_SOURCES.get(spec.scheme)
    path = os.path.expanduser(spec.target)
    if not os.path.exists(path):
        raise _unknown_spec(spec)
    found = DATA_SOURCES.detect(lambda source: source.detect is not None and source.detect(path))
    if found is not None:
        return found[1]
    raise ValueError(f"dataset {spec.text!r}: {path} is not a form any data source reads (neither a folder nor a file)")


def prepare(
    spec: str | os.PathLike | DataSpec, *, split: str | None = "test", **options: Any
) -> tuple[DataSource, str, str | None, dict[str, Any]]:
    """``(source, target, split, options)`` for ``spec``: parsed, resolved and checked as ``load_dataset`` does.

    ``options`` override the spec's. Raises ValueError naming the spec for an unknown option or split.
    """
    parsed = DataSpec.parse(spec)
    source = _resolve(parsed)
    text = parsed.text or str(parsed)
    opts = {**parsed.options, **options}
    explicit = "split" in opts
    chosen = opts.pop("split") if explicit else split
    if source.options is not None:
        unknown = [k for k in opts if k not in source.options]
        if unknown:
            accepted = [*(["split"] if source.splits else []), *source.options]
            raise ValueError(
                f"dataset spec {text!r}: unknown option(s) {', '.join(map(repr, unknown))} for {source.scheme}; "
                f"accepted options: {', '.join(accepted) or 'none'}"
            )
    if source.splits is None:
        if explicit and chosen not in (None, "test"):
            raise ValueError(
                f"dataset spec {text!r}: {source.scheme} data has no splits, so split={chosen!r} cannot be read "
                "(leave split out; it is all one test set)"
            )
        chosen = None
    elif chosen not in source.splits:
        raise ValueError(
            f"dataset spec {text!r}: unknown split {chosen!r}; {source.scheme} has {', '.join(source.splits)}"
        )
    target = os.path.expanduser(parsed.target) if source.target else parsed.target
    return source, target, chosen, opts


def load_dataset(
    spec: str | os.PathLike | DataSpec | Dataset, *, split: str | None = "test", **options: Any
) -> Dataset:
    """A dataset from a spec (see ``data_forms()``); ``options`` override the spec's options.

    ``split`` is the caller's default for data with splits; see the module docstring.
    """
    if isinstance(spec, Dataset):
        return spec
    parsed = DataSpec.parse(spec)
    source, target, chosen, opts = prepare(parsed, split=split, **options)
    if "spec" in inspect.signature(source.loader).parameters:  # a loader that names the spec in its messages
        opts["spec"] = parsed
    return source.loader(target, split=chosen, **opts)


def check_data_spec(
    spec: str | os.PathLike | DataSpec | Dataset, *, split: str | None = "test", **options: Any
) -> None:
    """Raise what ``load_dataset(spec, split=split, **options)`` would raise for a bad spec, without loading it.

    Cheap: no image is read or rendered and folders are not walked. It checks what ``prepare`` checks (the
    spec parses, its options and split are known, a path exists and some source reads it), then the
    source's own ``check`` (for ``shapes``, that the options are valid; for a folder, that it has class
    sub-folders or image files; for a caption file, its type).
    """
    if isinstance(spec, Dataset):
        return
    parsed = DataSpec.parse(spec)
    source, target, chosen, opts = prepare(parsed, split=split, **options)
    if source.check is not None:
        source.check(target, split=chosen, spec=str(parsed), **opts)
