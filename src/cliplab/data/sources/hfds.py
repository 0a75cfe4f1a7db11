"""``hfds:<name | dir | file.parquet>[:split=...,image=...,label=...,caption=...]``: Hugging Face ``datasets``.

The target is, in this order:

- a directory written by ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict`` whose ``split`` is read),
  opened with ``datasets.load_from_disk`` (memory-mapped, nothing copied);
- a ``.parquet`` file, or a directory of them (the Hub's ``<split>-00000-of-00001.parquet`` /
  ``data/<split>-*.parquet`` names pick the split; files without a split in their names are one set),
  read with ``datasets.load_dataset("parquet", ...)`` into ``<cliplab cache>/hf-datasets``;
- otherwise a Hub dataset name (``uoft-cs/cifar10``), ``datasets.load_dataset(name, split=split)``, which
  needs a network the first time (its downloads go to the ``datasets`` cache as usual).

Columns: ``image`` is the ``Image`` feature, ``label`` the ``ClassLabel`` feature (class names from its
``names``), ``caption`` a string or list-of-strings column. Left out, each is guessed when unambiguous (the one
``Image`` column, the one ``ClassLabel`` column, the one column named caption/captions/text/sentences); an
ambiguous guess, or a named column that does not exist or has the wrong type, is a ValueError naming the
dataset and its columns. ``split=val`` also finds a ``validation`` split.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cliplab._io import cache_home
from cliplab.data.base import Dataset, files_fingerprint, stable_hash
from cliplab.data.registry import register_data_source
from cliplab.imaging.decoding import decode_image

SPLITS = ("train", "val", "validation", "test")
CAPTION_NAMES = ("caption", "captions", "text", "sentences")

log = logging.getLogger(__name__)


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - an extra
        raise ImportError("hfds: specs need the datasets package: pip install 'cliplab[datasets]'") from err
    return datasets


@contextlib.contextmanager
def _bars(show: bool) -> Iterator[None]:
    """``datasets``' own progress bars on or off for the duration."""
    import datasets as hf

    was = hf.are_progress_bars_disabled()
    if not show:
        hf.disable_progress_bars()
    try:
        yield
    finally:
        if not show and not was:
            hf.enable_progress_bars()


def _is_saved(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def parquet_files(target: str) -> list[str]:
    """The parquet files a target names (a file, a glob, or a directory searched recursively), sorted."""
    if any(c in target for c in "*?["):
        return sorted(glob.glob(os.path.expanduser(target), recursive=True))
    path = Path(target).expanduser()
    if path.is_file():
        return [str(path)] if path.suffix == ".parquet" else []
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*.parquet") if not any(s.startswith(".") for s in p.parts))
    return []


def _split_of(path: str) -> str | None:
    """``test-00000-of-00001.parquet`` / ``data/test/x.parquet`` → ``test``; None when no split is named."""
    name = Path(path).name
    m = re.match(r"^(train|validation|valid|val|test)[-_.]", name)
    if m:
        return m.group(1)
    parent = Path(path).parent.name
    return parent if parent in ("train", "validation", "valid", "val", "test") else None


def _split_aliases(split: str) -> tuple[str, ...]:
    return ("validation", "val", "valid") if split in ("val", "validation") else (split,)


def _pick_parquet(files: list[str], split: str, target: str) -> list[str]:
    splits = {f: _split_of(f) for f in files}
    if all(s is None for s in splits.values()):
        return files  # one set, whatever the split asked for
    chosen = [f for f, s in splits.items() if s in _split_aliases(split)]
    if not chosen:
        found = sorted({s for s in splits.values() if s})
        raise ValueError(f"hfds:{target}: no parquet files of split {split!r} (splits found: {', '.join(found)})")
    return chosen


def _offline() -> bool:
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(v.strip().lower() in ("1", "true", "yes", "on") for v in flags)


def open_hf(target: str, split: str, *, progress: bool = False) -> tuple[Any, dict[str, Any]]:
    """``(datasets.Dataset, provenance)`` for a target (see the module docstring)."""
    datasets = _datasets()
    path = Path(target).expanduser()
    with _bars(progress):
        if path.is_dir() and _is_saved(path):
            obj = datasets.load_from_disk(str(path))
            if isinstance(obj, datasets.DatasetDict):
                names = [s for s in _split_aliases(split) if s in obj]
                if not names:
                    raise ValueError(f"hfds:{target}: no split {split!r} in {path} (splits: {', '.join(obj)})")
                return obj[names[0]], {"kind": "saved", "path": str(path.resolve()), "split": names[0]}
            return obj, {"kind": "saved", "path": str(path.resolve())}
        files = parquet_files(target)
        if files:
            files = _pick_parquet(files, split, target)
            hf = datasets.load_dataset(
                "parquet", data_files=files, split="train", cache_dir=str(cache_home() / "hf-datasets")
            )
            return hf, {"kind": "parquet", "files": files_fingerprint([Path(f) for f in files])}
        if path.exists():
            raise ValueError(
                f"hfds:{target}: {path} is neither a save_to_disk directory (dataset_dict.json / state.json) "
                "nor parquet files"
            )
        if _offline():
            raise FileNotFoundError(
                f"hfds:{target}: no such directory or parquet file, and HF_HUB_OFFLINE/HF_DATASETS_OFFLINE forbid "
                f"downloading {target!r} from the Hugging Face Hub; unset them on a machine with a network"
            )
        hf_split = split
        try:
            builder = datasets.load_dataset_builder(target)
            available = list((builder.info.splits or {}).keys())
            hf_split = next((s for s in _split_aliases(split) if s in available), split)
            hf = datasets.load_dataset(target, split=hf_split)
        except Exception as err:  # network, auth, unknown name: one clear message
            raise FileNotFoundError(
                f"hfds:{target}: could not load the Hugging Face dataset {target!r} (split {hf_split!r}): "
                f"{type(err).__name__}: {err}"
            ) from err
        return hf, {"kind": "hub", "name": target, "split": hf_split}


def _columns(hf: Any) -> str:
    return ", ".join(f"{k} ({type(v).__name__})" for k, v in hf.features.items())


def choose_columns(
    hf: Any, *, image: str | None, label: str | None, caption: str | None, where: str
) -> tuple[str, str | None, str | None]:
    """``(image, label, caption)`` column names: the given ones checked, the others guessed (see the module)."""
    datasets = _datasets()
    feats = hf.features

    def kind(column: str) -> str:
        f = feats[column]
        if isinstance(f, datasets.Image):
            return "image"
        if isinstance(f, datasets.ClassLabel):
            return "classlabel"
        if isinstance(f, datasets.Value):
            return (
                "int"
                if f.dtype.startswith(("int", "uint"))
                else ("string" if f.dtype in ("string", "large_string") else f.dtype)
            )
        inner = getattr(f, "feature", None) if not isinstance(f, list) else f[0]
        if isinstance(inner, datasets.Value) and inner.dtype in ("string", "large_string"):
            return "strings"
        return type(f).__name__

    def named(column: str, role: str, ok: tuple[str, ...]) -> str:
        if column not in feats:
            raise ValueError(f"{where}: no column {column!r} for {role}=; columns: {_columns(hf)}")
        if kind(column) not in ok:
            raise ValueError(
                f"{where}: column {column!r} ({kind(column)}) cannot be the {role}; columns: {_columns(hf)}"
            )
        return column

    def guess(role: str, candidates: list[str], required: bool) -> str | None:
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise ValueError(
                f"{where}: several columns could be the {role} ({', '.join(candidates)}); pass {role}=<column>"
            )
        if required:
            raise ValueError(f"{where}: no Image column to read images from; columns: {_columns(hf)}")
        return None

    cols = list(feats)
    image_col = (
        named(image, "image", ("image",)) if image else guess("image", [c for c in cols if kind(c) == "image"], True)
    )
    label_col = (
        named(label, "label", ("classlabel", "int"))
        if label
        else guess("label", [c for c in cols if kind(c) == "classlabel"], False)
    )
    caption_col = (
        named(caption, "caption", ("string", "strings"))
        if caption
        else guess(
            "caption", [c for c in cols if c.lower() in CAPTION_NAMES and kind(c) in ("string", "strings")], False
        )
    )
    assert image_col is not None  # guess(..., required=True) raises instead
    return image_col, label_col, caption_col


class HFDataset(Dataset):
    """A Hugging Face ``datasets.Dataset`` seen as a cliplab dataset (images decoded on access)."""

    def __init__(
        self,
        hf: Any,
        *,
        image: str | None = None,
        label: str | None = None,
        caption: str | None = None,
        name: str = "hfds",
        provenance: dict[str, Any] | None = None,
    ):
        self.hf = hf
        self.provenance = dict(provenance or {})
        self.image_column, self.label_column, self.caption_column = choose_columns(
            hf, image=image, label=label, caption=caption, where=name
        )
        self.name = name
        # undecoded ({"bytes", "path"}): cliplab decodes, naming the row and refusing pixel bombs from the header
        self._images = hf.select_columns([self.image_column]).cast_column(
            self.image_column, _datasets().Image(decode=False)
        )
        self._labels: np.ndarray | None = None
        self.classnames = None
        self.templates = None
        if self.label_column is not None:
            self._labels = np.asarray(hf.select_columns([self.label_column])[self.label_column], dtype=np.int64)
            names = getattr(hf.features[self.label_column], "names", None)
            self.classnames = [str(n).replace("_", " ") for n in names] if names else None
            if self.classnames is not None and self._labels.size:
                bad = (self._labels < 0) | (self._labels >= len(self.classnames))
                if bad.any():
                    raise ValueError(f"{name}: labels outside the {len(self.classnames)} classes (e.g. -1 = no label)")
        self._captions: list[str] | None = None
        self._t2i: np.ndarray | None = None
        if self.caption_column is not None:
            caps, t2i = [], []
            for i, value in enumerate(hf.select_columns([self.caption_column])[self.caption_column]):
                for c in [value] if isinstance(value, str) else list(value or []):
                    if c and c.strip():
                        caps.append(c.strip())
                        t2i.append(i)
            self._captions, self._t2i = caps, np.asarray(t2i, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.hf)

    @staticmethod
    def _rgb(value: Any, where: str) -> Image.Image:
        """An undecoded ``datasets.Image`` value (``{"bytes", "path"}``) decoded by ``decode_image``."""
        if isinstance(value, Image.Image):
            return decode_image(value)
        if isinstance(value, dict) and (value.get("bytes") is not None or value.get("path")):
            data: bytes | None = value.get("bytes")
            path: str = value.get("path") or ""
            name = f"{where} ({path})" if path else where
            if data is not None:
                return decode_image(data, name=name)
            if not os.path.isfile(path):  # a remote or archived file: datasets opens it
                return decode_image(_datasets().Image().decode_example(value))
            return decode_image(path, name=name)
        raise ValueError(f"{where}: the image column holds {type(value).__name__}, not an image")

    def image(self, index: int) -> Image.Image:
        i = self._position(index)
        return self._rgb(self._images[i][self.image_column], f"{self.name}[{i}]")

    def images(self, indices: Sequence[int]) -> list[Image.Image]:
        idx = [self._position(i) for i in indices]
        batch = self._images[idx][self.image_column] if idx else []
        return [self._rgb(v, f"{self.name}[{i}]") for i, v in zip(idx, batch)]

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    @property
    def captions(self) -> list[str] | None:
        return self._captions

    @property
    def text_to_image(self) -> np.ndarray | None:
        return self._t2i

    @cached_property
    def _fingerprint(self) -> str:
        content = hashlib.sha256()
        if self._labels is not None:
            content.update(self._labels.tobytes())
        if self._captions is not None:
            content.update("\n".join(self._captions).encode())
        source = (
            self.provenance
            if self.provenance.get("kind") == "parquet"
            else {**self.provenance, "hf": getattr(self.hf, "_fingerprint", None)}
        )
        # the Arrow files behind it (a save_to_disk folder's, the hub or parquet cache's): rewritten data moves them
        arrow = [f["filename"] for f in getattr(self.hf, "cache_files", None) or [] if "filename" in f]
        return stable_hash(
            {
                "kind": "hfds",
                "source": source,
                "arrow_files": files_fingerprint(arrow),
                "n": len(self.hf),
                "columns": [self.image_column, self.label_column, self.caption_column],
                "classnames": self.classnames,
                "content": content.hexdigest()[:16],
            }
        )

    def fingerprint(self) -> str:
        return self._fingerprint


def load(
    target: str,
    split: str | None = "test",
    *,
    image: str | None = None,
    label: str | None = None,
    caption: str | None = None,
    progress: bool | None = None,
) -> HFDataset:
    """A Hugging Face dataset by name, ``save_to_disk`` directory or parquet files (see the module docstring)."""
    split = split or "test"
    show = bool(progress) if progress is not None else log.isEnabledFor(logging.INFO)
    hf, provenance = open_hf(target, split, progress=show)
    return HFDataset(
        hf, image=image, label=label, caption=caption, name=f"hfds:{target}", provenance={**provenance, "split": split}
    )


def check(target: str, split: str | None = "test", *, spec: str, **options: Any) -> None:
    """A local target exists in a readable form; a hub name needs a network (nothing is loaded)."""
    path = Path(target).expanduser()
    if (path.is_dir() and _is_saved(path)) or parquet_files(target):
        return
    if path.exists():
        raise ValueError(f"dataset {spec!r}: {path} is neither a save_to_disk directory nor parquet files")
    if _offline():
        raise FileNotFoundError(
            f"dataset {spec!r}: no such directory or parquet file, and HF_HUB_OFFLINE/HF_DATASETS_OFFLINE forbid "
            f"downloading {target!r} from the Hugging Face Hub"
        )


def detect(path: str) -> bool:
    """A bare ``save_to_disk`` directory or ``.parquet`` file is an ``hfds:`` dataset."""
    p = Path(path)
    return (p.is_dir() and _is_saved(p)) or (p.is_file() and p.suffix == ".parquet")


register_data_source(
    "hfds",
    load,
    detect=detect,
    splits=SPLITS,
    check=check,
    description="hfds:<hub name | save_to_disk dir | parquet>[:split=...,image=...,label=...,caption=...]",
)
