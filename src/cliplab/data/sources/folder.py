"""``folder:<path>`` (or a bare directory): class sub-folders → ``ImageFolder``, loose images → ``ImageFiles``."""

from __future__ import annotations

import os
from typing import Any

from cliplab.data.base import Dataset
from cliplab.data.folders import IMAGE_EXTENSIONS, ImageFiles, ImageFolder
from cliplab.data.registry import register_data_source


def _has_class_folders(path: str) -> bool:
    with os.scandir(path) as entries:
        return any(e.is_dir() and not e.name.startswith(".") for e in entries)


def load(
    target: str, split: str | None = None, *, classnames: list[str] | None = None, templates: list[str] | None = None
) -> Dataset:
    """An image folder; one without class sub-folders (and no options) is an unlabelled ``ImageFiles``."""
    options = {k: v for k, v in (("classnames", classnames), ("templates", templates)) if v is not None}
    if os.path.isdir(target) and not options and not _has_class_folders(target):
        return ImageFiles(target)  # images directly in the folder: an unlabelled set (e.g. OOD images)
    return ImageFolder(target, **options)


def check(target: str, split: str | None = None, *, spec: str, **options: Any) -> None:
    """A folder that exists, with class sub-folders (needed for options) or image files; not walked."""
    if not os.path.isdir(target):
        raise FileNotFoundError(f"dataset {spec!r}: image folder not found: {target}")
    has_classes = has_images = False
    with os.scandir(target) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                has_classes = True
                break
            has_images = has_images or os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
    if any(v is not None for v in options.values()):
        if not has_classes:
            raise ValueError(f"dataset {spec!r}: {target} has no class sub-folders (expected root/<class>/<images>)")
    elif not has_classes and not has_images:
        raise ValueError(
            f"dataset {spec!r}: {target} has neither class sub-folders nor image files ({', '.join(IMAGE_EXTENSIONS)})"
        )


register_data_source(
    "folder",
    load,
    detect=os.path.isdir,
    check=check,
    description="folder:<path> or a directory: one sub-folder of images per class, or images without sub-folders",
)
