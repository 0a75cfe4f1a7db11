"""``load_dataset(spec)``: datasets by spec string, as the CLI takes them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cliplab.data.base import Dataset

DATA_FORMS = (
    "shapes or builtin:shapes[:key=value,...] (the built-in world, e.g. shapes:task=colour,n=2000)",
    "a directory with one sub-folder of images per class (image folder)",
    "a directory of images without class sub-folders (unlabelled, e.g. OOD images)",
    "a .csv/.tsv/.jsonl caption file (image path + caption per row)",
)


def _parse_value(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(v.lower(), v)


def parse_options(text: str) -> dict[str, Any]:
    """``"task=colour,n=200"`` → ``{"task": "colour", "n": 200}``."""
    opts: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"bad dataset option {part!r}: expected key=value")
        opts[key.strip()] = _parse_value(value.strip())
    return opts


def load_dataset(spec: str | os.PathLike | Dataset, *, split: str = "test", **options: Any) -> Dataset:
    """A dataset from a spec (see ``DATA_FORMS``); ``options`` override spec options for ``shapes``."""
    if isinstance(spec, Dataset):
        return spec
    s = str(spec)
    name, _, rest = s.removeprefix("builtin:").partition(":")
    if name == "shapes":
        from cliplab.data.shapes import shapes

        opts = {"split": split, **parse_options(rest), **options}
        return shapes(**opts)
    path = Path(s).expanduser()
    if path.is_dir():
        from cliplab.data.folders import ImageFiles, ImageFolder

        has_classes = any(d.is_dir() and not d.name.startswith(".") for d in path.iterdir())
        if not has_classes and not options:
            return ImageFiles(path)  # images directly in the folder: an unlabelled set (e.g. OOD images)
        return ImageFolder(path, **options)
    if path.is_file():
        from cliplab.data.folders import CaptionDataset

        return CaptionDataset(path, **options)
    forms = "\n  - ".join(DATA_FORMS)
    raise ValueError(f"unknown dataset spec {s!r}: no such file or directory. Accepted forms:\n  - {forms}")


def check_data_spec(spec: str | os.PathLike | Dataset, *, split: str = "test", **options: Any) -> None:
    """Raise what ``load_dataset(spec, split=split, **options)`` would raise for a bad spec, without loading it.

    Cheap: no image is read or rendered and folders are not walked. It checks that the spec parses, that its
    options are known (and, for ``shapes``, valid), that a path exists and has a form ``load_dataset`` reads: a
    folder with class sub-folders or image files, a ``.csv``/``.tsv``/``.jsonl`` caption file.
    """
    import inspect

    if isinstance(spec, Dataset):
        return
    s = str(spec)
    name, _, rest = s.removeprefix("builtin:").partition(":")
    if name == "shapes":
        from cliplab.data.shapes import shapes

        try:
            opts = {"split": split, **parse_options(rest), **options}
        except ValueError as err:
            raise ValueError(f"dataset spec {s!r}: {err}") from err
        known = list(inspect.signature(shapes).parameters)
        unknown = [k for k in opts if k not in known]
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ValueError(f"dataset spec {s!r}: unknown option(s) {names}; shapes takes {', '.join(known)}")
        n = opts.get("n", 1)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            opts["n"] = 1  # only the options matter here; one image's attributes are drawn, none rendered
        try:
            shapes(**opts)
        except (ValueError, TypeError) as err:
            raise ValueError(f"dataset spec {s!r}: {err}") from err
        return
    path = Path(s).expanduser()
    if path.is_dir():
        from cliplab.data.folders import IMAGE_EXTENSIONS, ImageFolder

        has_classes = has_images = False
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    has_classes = True
                    break
                has_images = has_images or os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
        if options:
            if not has_classes:
                raise ValueError(f"dataset {s!r}: {path} has no class sub-folders (expected root/<class>/<images>)")
            _check_keywords(s, options, ImageFolder)
        elif not has_classes and not has_images:
            raise ValueError(
                f"dataset {s!r}: {path} has neither class sub-folders nor image files ({', '.join(IMAGE_EXTENSIONS)})"
            )
        return
    if path.is_file():
        from cliplab.data.folders import CaptionDataset

        if path.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".json"):
            raise ValueError(f"dataset {s!r}: unsupported caption file type {path.suffix!r} (use .csv, .tsv or .jsonl)")
        _check_keywords(s, options, CaptionDataset)
        return
    if path.exists():
        raise ValueError(f"dataset {s!r}: {path} is neither a folder nor a caption file")
    forms = "\n  - ".join(DATA_FORMS)
    raise ValueError(f"unknown dataset spec {s!r}: no such file or directory. Accepted forms:\n  - {forms}")


def _check_keywords(spec: str, options: dict[str, Any], cls: type) -> None:
    import inspect

    known = [p.name for p in inspect.signature(cls).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = [k for k in options if k not in known]
    if unknown:
        raise ValueError(
            f"dataset spec {spec!r}: unknown option(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
            f"it takes {', '.join(known) or 'none'}"
        )
