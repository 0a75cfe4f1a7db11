"""Datasets from disk: image folders (one sub-folder per class) and caption files (CSV / JSONL)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cliplab.data.base import Dataset, files_fingerprint, stable_hash
from cliplab.imaging.preprocess import load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageFile:
    """One image of a collection: path relative to the root (POSIX), size in bytes, modification time."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int = 0  # status change time: a rewrite whose mtime was set back (touch -r) still changes it

    def meta(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, "ctime_ns": self.ctime_ns}


def scan_images(root: str | os.PathLike, *, within_root: bool = True) -> list[ImageFile]:
    """Image files under ``root`` (recursively, by extension), sorted by relative path; hidden ones skipped.

    ``within_root`` (the default, for indexes that serve their files): anything that resolves outside
    ``root`` (a symlink) is skipped and linked folders are not entered. ``within_root=False`` follows links,
    for datasets assembled from symlinks.
    """
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise FileNotFoundError(f"image folder not found: {base}")
    files: list[ImageFile] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=not within_root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            p = Path(dirpath) / name
            try:
                real = p.resolve()
                if (within_root and not real.is_relative_to(base)) or not real.is_file():
                    continue
                st = real.stat()
            except OSError:
                continue
            files.append(ImageFile(p.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    files.sort(key=lambda f: f.path)
    return files


def classname_from_folder(name: str) -> str:
    """``golden_retriever`` → ``golden retriever``."""
    return name.replace("_", " ").strip()


class ImageFileDataset(Dataset):
    """A dataset whose images are files: the subclass sets ``paths`` (one per image, in order)."""

    paths: list[Path]

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Image.Image:
        return load_image(self.paths[index])


class CaptionFileDataset(ImageFileDataset):
    """Image files with captions: the subclass sets ``paths``, ``_captions`` and ``_t2i`` (caption → image)."""

    _captions: list[str]
    _t2i: np.ndarray

    @property
    def captions(self) -> list[str]:
        return self._captions

    @property
    def text_to_image(self) -> np.ndarray:
        return self._t2i


class ImageFolder(ImageFileDataset):
    """``root/<class>/<image>``: classes are the sorted sub-folder names (underscores become spaces)."""

    def __init__(self, root: str | os.PathLike, *, classnames: list[str] | None = None, templates=None):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        folders = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not folders:
            raise ValueError(f"{self.root} has no class sub-folders (expected root/<class>/<image files>)")
        self.paths: list[Path] = []
        labels: list[int] = []
        for i, folder in enumerate(folders):
            files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            self.paths.extend(files)
            labels.extend([i] * len(files))
        if not self.paths:
            raise ValueError(f"{self.root} contains no image files ({', '.join(IMAGE_EXTENSIONS)})")
        names = [classname_from_folder(d.name) for d in folders]
        if classnames is not None:
            if len(classnames) != len(folders):
                raise ValueError(f"{len(classnames)} class names given for {len(folders)} class folders in {self.root}")
            names = list(classnames)
        self.classnames = names
        self.folder_names = [d.name for d in folders]
        self.templates = templates
        self._labels = np.asarray(labels, dtype=np.int64)
        self.name = self.root.name

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    def fingerprint(self) -> str:
        return stable_hash(
            {
                "kind": "image_folder",
                "root": str(self.root.resolve()),
                "classes": self.classnames,
                "files": files_fingerprint(self.paths),
            }
        )


class ImageFiles(ImageFileDataset):
    """Every image file under ``root`` (recursively, hidden files skipped), sorted, without labels.

    For unlabelled collections such as OOD sets; ``load_dataset`` returns one for a folder whose images are
    not arranged in class sub-folders.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        self.paths = [self.root / f.path for f in scan_images(self.root, within_root=False)]
        if not self.paths:
            raise ValueError(f"{self.root} contains no image files ({', '.join(IMAGE_EXTENSIONS)})")
        self.name = self.root.name

    def fingerprint(self) -> str:
        return stable_hash(
            {"kind": "image_files", "root": str(self.root.resolve()), "files": files_fingerprint(self.paths)}
        )


class CaptionDataset(CaptionFileDataset):
    """Image–caption pairs from a CSV (header with ``image`` and ``caption`` columns) or JSONL file.

    JSONL rows: ``{"image": path, "caption": str}`` or ``{"image": path, "captions": [str, ...]}``.
    Rows naming the same image are grouped: one image, several captions. Relative image paths are
    resolved against the caption file's folder.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        image_key: str = "image",
        caption_key: str = "caption",
        check_files: bool = True,
    ):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"caption file not found: {self.path}")
        rows = self._read_rows(image_key, caption_key)
        if not rows:
            raise ValueError(f"{self.path} contains no image–caption rows")
        index: dict[str, int] = {}
        self.paths: list[Path] = []
        caps: list[str] = []
        t2i: list[int] = []
        for image, captions in rows:
            p = Path(image).expanduser()
            p = p if p.is_absolute() else (self.path.parent / p)
            key = str(p)
            if key not in index:
                index[key] = len(self.paths)
                self.paths.append(p)
            for c in captions:
                caps.append(c)
                t2i.append(index[key])
        if check_files:
            missing = [str(p) for p in self.paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} image file(s) named in {self.path} do not exist, e.g. {missing[:3]}"
                )
        self._captions = caps
        self._t2i = np.asarray(t2i, dtype=np.int64)
        self.name = self.path.stem

    def _read_rows(self, image_key: str, caption_key: str) -> list[tuple[str, list[str]]]:
        rows: list[tuple[str, list[str]]] = []
        suffix = self.path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            with open(self.path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{self.path}:{lineno}: invalid JSON ({err.msg})") from err
                    if image_key not in obj:
                        raise ValueError(f"{self.path}:{lineno}: missing key {image_key!r}")
                    caps = obj.get(caption_key + "s", obj.get(caption_key))
                    if caps is None:
                        raise ValueError(f"{self.path}:{lineno}: missing key {caption_key!r} (or {caption_key}s)")
                    caps = [caps] if isinstance(caps, str) else list(caps)
                    if not caps or not all(isinstance(c, str) and c.strip() for c in caps):
                        raise ValueError(f"{self.path}:{lineno}: captions must be non-empty strings")
                    rows.append((str(obj[image_key]), caps))
        elif suffix in (".csv", ".tsv"):
            with open(self.path, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
                fields = reader.fieldnames or []
                for key in (image_key, caption_key):
                    if key not in fields:
                        raise ValueError(f"{self.path}: no column {key!r} (columns: {fields})")
                for lineno, row in enumerate(reader, 2):
                    cap = (row.get(caption_key) or "").strip()
                    if not cap or not row.get(image_key):
                        raise ValueError(f"{self.path}:{lineno}: empty image path or caption")
                    rows.append((row[image_key], [cap]))
        else:
            raise ValueError(f"{self.path}: unsupported caption file type {suffix!r} (use .csv, .tsv or .jsonl)")
        return rows

    def fingerprint(self) -> str:
        caps = hashlib.sha256("\n".join(self._captions).encode()).hexdigest()[:16]
        return stable_hash(
            {
                "kind": "captions",
                "file": files_fingerprint([self.path]),
                "images": files_fingerprint(self.paths),
                "captions": caps,
                "t2i": hashlib.sha256(self._t2i.tobytes()).hexdigest()[:16],
            }
        )
