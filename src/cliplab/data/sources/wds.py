"""``wds:<dir | hub repo id>[:split=test]``: CLIP_benchmark's webdataset layout, read from the tars in place.

The layout (what ``clip_benchmark.webdataset_builder.convert_dataset`` writes and the Hub's
``clip-benchmark/wds_*`` datasets hold)::

    <root>/<split>/nshards.txt                    number of shards n
    <root>/<split>/0.tar ... <n-1>.tar            samples "s0000000.webp" + "s0000000.cls", ...
    <root>/classnames.txt                         one class name per line (classification)
    <root>/zeroshot_classification_templates.txt  one template per line, written with {c}
    <root>/dataset_type.txt                       optional: "retrieval" (captions in .txt, one per line)

As in CLIP_benchmark, the shards read are exactly ``{0..n-1}.tar`` from ``nshards.txt``, in that order, and
the samples in each shard in order, so features line up with CLIP_benchmark's; the image is the first of
``webp``, ``png``, ``jpg``, ``jpeg`` a sample has. Images are decoded from the tar by seeking
(``cliplab.data.shards.ShardIndex``): nothing is unpacked. The header index is cached under
``<cliplab cache>/wds-index`` keyed by the shards' paths, sizes, modification and change times.

A target that names shards directly (a brace pattern ``/data/{000000..000099}.tar``, a ``::`` list or one
``.tar``, e.g. what ``img2dataset`` writes) is read the same way, in the order given: samples with ``cls`` are
classified (``classnames.txt`` optional, looked up beside the shards or one folder up), samples with ``txt``
and no ``cls`` are image–caption pairs, samples with neither are unlabelled images (``dataset_type.txt``, when
present there, decides instead).

A target that is no directory but reads ``owner/name`` is a Hugging Face Hub dataset: the split's shards and
the metadata files are downloaded (``huggingface_hub.snapshot_download``) into
``<cliplab cache>/datasets/wds/<owner>--<name>`` when a network exists; the split appears there only once it
is complete, so an interrupted download leaves nothing half-written (``cliplab.data.hub_downloads``).

Two modes, one spec and one predicate (:func:`is_shard_pattern`): ``load_dataset`` gives the map-style
:class:`WebDatasetDir` above (random access, for evaluation); :func:`stream` gives the streaming mode of a spec
that names shards (training: a :class:`~cliplab.data.streaming.WebDatasetStream`, whose ``sampler`` reads the
shards in order, resumably), which also takes ``hf://<owner>/<name>/<pattern>`` shards from the Hub.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cliplab._io import cache_home, write_text_atomic
from cliplab.data.base import Dataset, file_stamp, stable_hash
from cliplab.data.hub_downloads import (  # noqa: F401 - download_hub_file and hub_cache_dir are used from here
    _offline,
    _split_complete,
    download_from_hub,
    download_hub_file,
    hub_cache_dir,
)
from cliplab.data.registry import register_data_source
from cliplab.data.shards import ShardError, ShardIndex, expand_shards
from cliplab.data.spec import DataSpec
from cliplab.data.streaming import WebDatasetStream
from cliplab.imaging.decoding import decode_image

IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
SPLITS = ("train", "val", "test")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
INDEX_VERSION = 2  # 2: shard stats carry the change time

log = logging.getLogger(__name__)


def _read_lines(path: Path) -> list[str]:
    """Stripped lines (CLIP_benchmark reads ``line.strip()`` of ``splitlines()``), blank lines dropped."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def resolve_root(target: str, split: str, *, spec: str) -> Path:
    """The local directory of ``target``: itself, or the hub download of an ``owner/name`` id."""
    path = Path(target).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"dataset {spec!r}: {target} is a file; wds: takes a directory in CLIP_benchmark's layout")
    if HUB_ID.match(target):
        return download_from_hub(target, split)
    raise FileNotFoundError(
        f"dataset {spec!r}: {target} is neither a directory nor a Hugging Face Hub dataset id (owner/name)"
    )


def _shard_list(root: Path, split: str, spec: str) -> list[str]:
    nshards_file = root / split / "nshards.txt"
    if not nshards_file.is_file():
        have = sorted(p.name for p in root.iterdir() if (p / "nshards.txt").is_file()) if root.is_dir() else []
        raise FileNotFoundError(
            f"dataset {spec!r}: {nshards_file} not found: CLIP_benchmark's layout has <root>/<split>/nshards.txt "
            f"next to the split's shards (splits here: {', '.join(have) or 'none'})"
        )
    text = nshards_file.read_text(encoding="utf-8").strip()
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise ValueError(f"dataset {spec!r}: {nshards_file} must hold a positive number of shards, got {text!r}")
    return [str(root / split / f"{i}.tar") for i in range(n)]


def _index_cache_path(shards: list[str]) -> Path | None:
    try:
        stats = [[str(Path(p).resolve()), *file_stamp(p)] for p in shards]
    except OSError:
        return None
    key = hashlib.sha256(json.dumps([INDEX_VERSION, stats]).encode()).hexdigest()[:24]
    return cache_home() / "wds-index" / f"{key}.json"


def load_index(shards: list[str], *, progress: bool = False) -> ShardIndex:
    """``ShardIndex.build(shards)``, cached in the cliplab cache while the shards are unchanged."""
    cached = _index_cache_path(shards)
    if cached is not None and cached.is_file():
        try:
            index = ShardIndex.from_json(json.loads(cached.read_text(encoding="utf-8")))
            if index.shards == shards and index.is_current():
                return index
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable cache entry: rebuilt below
    index = ShardIndex.build(shards, progress=progress)
    if cached is not None:
        try:
            write_text_atomic(cached, json.dumps(index.to_json()))
        except OSError:  # a read-only cache only costs the re-indexing
            pass
    return index


class WebDatasetDir(Dataset):
    """One split of a dataset in CLIP_benchmark's webdataset layout (see the module docstring).

    Classification data has ``labels`` (from each sample's ``cls``), ``classnames`` (``classnames.txt``,
    required) and ``templates`` (``zeroshot_classification_templates.txt`` with ``{c}``, when present);
    retrieval data (``dataset_type.txt`` = ``retrieval``) has ``captions`` (each sample's ``txt``, one per
    line) and ``text_to_image``. ``keys`` are the sample keys, ``index`` the shard index.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "test",
        *,
        progress: bool = False,
        spec: str = "",
        shards: list[str] | None = None,
    ):
        self.root = Path(root).expanduser()
        self.split = split
        spec = spec or f"wds:{self.root}:split={split}"
        #: whether the shards were named directly (a pattern) rather than found through nshards.txt
        self.from_pattern = shards is not None
        if shards is None:
            shards = _shard_list(self.root, split, spec)
        type_file = self.root / "dataset_type.txt"
        self.dataset_type = type_file.read_text(encoding="utf-8").strip().lower() if type_file.is_file() else ""
        if self.dataset_type and self.dataset_type not in ("classification", "retrieval"):
            raise ValueError(
                f"dataset {spec!r}: {type_file} says {self.dataset_type!r}; cliplab reads classification and "
                "retrieval webdatasets (multi-label ones are not supported)"
            )
        self.index = load_index(shards, progress=progress)
        if not len(self.index):
            raise ValueError(
                f"dataset {spec!r}: the shards {shards[0]}{' ...' if len(shards) > 1 else ''} hold no samples"
            )
        if not self.dataset_type:
            has_cls = all("cls" in ref.members for ref in self.index.samples)
            has_txt = all("txt" in ref.members for ref in self.index.samples)
            # CLIP_benchmark's default is classification; shards named directly (img2dataset) are often captions
            self.dataset_type = "classification"
            if self.from_pattern and not has_cls:
                self.dataset_type = "retrieval" if has_txt else "images"
        self.keys = [ref.key for ref in self.index.samples]
        self._image_ext = [self._image_extension(i) for i in range(len(self.index))]
        self._labels: np.ndarray | None = None
        self._captions: list[str] | None = None
        self._t2i: np.ndarray | None = None
        self.classnames = None
        self.templates = None
        if self.dataset_type == "retrieval":
            self._read_captions()
        elif self.dataset_type == "classification":
            self._read_labels(spec)
        self.name = f"{self.root.name}/{split}" if not self.from_pattern else Path(shards[0]).parent.name

    def _where(self, i: int) -> str:
        return f"sample {self.keys[i]!r} of shard {self.index.shards[self.index.samples[i].shard]}"

    def _image_extension(self, i: int) -> str:
        members = self.index.samples[i].members
        for ext in IMAGE_EXTENSIONS:
            if ext in members:
                return ext
        raise ShardError(f"{self._where(i)} has no image ({', '.join(IMAGE_EXTENSIONS)}); it has {sorted(members)}")

    def _member(self, i: int, ext: str) -> bytes:
        if ext not in self.index.samples[i].members:
            raise ShardError(f"{self._where(i)} has no .{ext} member; it has {sorted(self.index.samples[i].members)}")
        return self.index.read(i, [ext])[ext]

    def _read_labels(self, spec: str) -> None:
        names_file = self.root / "classnames.txt"
        if not names_file.is_file() and not self.from_pattern:
            raise FileNotFoundError(
                f"dataset {spec!r}: {names_file} not found; a classification webdataset needs its class names, one "
                "per line, in classnames.txt next to the split folders (CLIP_benchmark writes it)"
            )
        self.classnames = _read_lines(names_file) if names_file.is_file() else None
        templates_file = self.root / "zeroshot_classification_templates.txt"
        self.templates = _read_lines(templates_file) if templates_file.is_file() else None
        labels = np.empty(len(self.index), dtype=np.int64)
        for i in range(len(self.index)):
            raw = self._member(i, "cls")
            try:
                labels[i] = int(raw.decode("utf-8").strip())
            except ValueError as err:
                raise ShardError(f"{self._where(i)}: its .cls is not an integer ({raw[:20]!r})") from err
        bad = np.nonzero((labels < 0) | (labels >= (len(self.classnames) if self.classnames else np.inf)))[0]
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"dataset {spec!r}: {self._where(i)} has label {labels[i]} but {names_file} lists "
                f"{len(self.classnames or [])} classes"
            )
        self._labels = labels

    def _read_captions(self) -> None:
        captions: list[str] = []
        t2i: list[int] = []
        for i in range(len(self.index)):
            lines = [c for c in self._member(i, "txt").decode("utf-8").splitlines() if c.strip()]
            captions.extend(lines)
            t2i.extend([i] * len(lines))
        self._captions = captions
        self._t2i = np.asarray(t2i, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def image(self, index: int) -> Image.Image:
        i = self._position(index)
        ext = self._image_ext[i]
        # errors (an undecodable image, a pixel bomb refused from its header) name it <shard>:<key>.<ext>
        shard = self.index.shards[self.index.samples[i].shard]
        return decode_image(self._member(i, ext), name=f"{shard}:{self.keys[i]}.{ext}")

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    @property
    def captions(self) -> list[str] | None:
        return self._captions

    @property
    def text_to_image(self) -> np.ndarray | None:
        return self._t2i

    def fingerprint(self) -> str:
        """Shard names, sizes, modification and change times, every sample's key and member sizes, labels,
        captions, class names, templates.

        Cheap (no image is read; one ``stat`` per shard when indexed). A shard rewritten in place, even with the
        same member sizes and its modification time set back (``os.utime``, ``touch -r``), changes its change
        time (``st_ctime_ns``), so its features are recomputed; a copy of the shards elsewhere is new data too.
        """
        layout = hashlib.sha256()
        for path, stat in zip(self.index.shards, self.index.stats):
            layout.update(f"{Path(path).name}|{'|'.join(map(str, stat[1:]))}\n".encode())
        for ref in self.index.samples:
            members = ",".join(f"{e}:{o}:{n}" for e, (o, n) in sorted(ref.members.items()))
            layout.update(f"{ref.shard}|{ref.key}|{members}\n".encode())
        content = hashlib.sha256()
        if self._labels is not None:
            content.update(self._labels.tobytes())
        if self._captions is not None:
            content.update("\n".join(self._captions).encode())
            content.update(np.asarray(self._t2i).tobytes())
        return stable_hash(
            {
                "kind": "wds",
                "split": self.split,
                "type": self.dataset_type,
                "layout": layout.hexdigest()[:16],
                "content": content.hexdigest()[:16],
                "classnames": self.classnames,
                "templates": self.templates,
            }
        )


def _auto_progress(progress: bool | None) -> bool:
    return bool(progress) if progress is not None else log.isEnabledFor(logging.INFO)


HUB_PREFIX = "hf://"
_HUB_SHARDS = re.compile(r"^hf://([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)/(.+)$")


def is_shard_pattern(target: str) -> bool:
    """Whether a target names shards directly: a brace pattern, a ``::`` list, a ``.tar``/``.tar.gz`` path or
    ``hf://<owner>/<name>/<pattern>`` (shards in a Hub dataset repository)."""
    return target.startswith(HUB_PREFIX) or "{" in target or "::" in target or target.endswith((".tar", ".tar.gz"))


def _names_shards(target: str) -> bool:
    return is_shard_pattern(target) and not Path(target).expanduser().is_dir()


def is_stream(spec: str | DataSpec) -> bool:
    """Whether ``spec`` is a ``wds:`` spec that names shards (see :func:`stream`); a malformed spec is not."""
    try:
        parsed = DataSpec.parse(spec)
    except (ValueError, TypeError):
        return False
    return parsed.scheme == "wds" and _names_shards(parsed.target)


def _stream_target(spec: str | DataSpec) -> tuple[DataSpec, re.Match[str] | None]:
    """The parsed stream spec (checked: names shards, no options) and its ``hf://`` match, if a hub one."""
    parsed = DataSpec.parse(spec)
    text = str(parsed)
    if parsed.scheme != "wds" or not _names_shards(parsed.target):
        raise ValueError(
            f"{text!r} is not a stream spec (wds:<dir>/{{000000..000099}}.tar, a::b.tar or wds:hf://owner/name/...)"
        )
    if parsed.options:
        raise ValueError(f"data spec {text!r}: a stream of shards takes no options (got {sorted(parsed.options)})")
    return parsed, _HUB_SHARDS.match(parsed.target)


def _missing_shards(shards: list[str], text: str) -> FileNotFoundError | None:
    missing = [s for s in shards if not os.path.isfile(s)]
    if not missing:
        return None
    return FileNotFoundError(f"data {text!r}: {len(missing)} of {len(shards)} shards not found (first: {missing[0]})")


def check_stream(spec: str | DataSpec) -> None:
    """Raise what :func:`stream` would for a bad spec, without downloading or reading a shard (the CLI's
    pre-flight): local shards must exist; hub shards must be cached when ``HF_HUB_OFFLINE=1``."""
    parsed, hub = _stream_target(spec)
    if hub is None:
        error = _missing_shards(expand_shards(parsed.target), str(parsed))
    else:
        repo, pattern = hub.groups()
        cached = [str(hub_cache_dir(repo) / n) for n in expand_shards(pattern)]
        error = _missing_shards(cached, str(parsed)) if _offline() else None  # else downloaded when the run starts
        if error is not None:
            error = FileNotFoundError(f"{error} in the cliplab cache, and HF_HUB_OFFLINE=1 forbids downloading them")
    if error is not None:
        raise error


def stream(spec: str | DataSpec) -> WebDatasetStream:
    """The streaming mode of ``wds:<shards>`` (training): its shards, checked, hub ones downloaded.

    Local shards must all exist (``FileNotFoundError`` naming the first missing one); ``hf://<owner>/<name>/
    <pattern>`` shards are downloaded into the cliplab cache (``download_hub_file``). A stream takes no
    options. ``load_dataset`` of the same (local) spec is the map-style :class:`WebDatasetDir`.
    """
    parsed, hub = _stream_target(spec)
    text = str(parsed)
    if hub is None:
        shards = expand_shards(parsed.target)
        error = _missing_shards(shards, text)
        if error is not None:
            raise error
        return WebDatasetStream(parsed, tuple(shards))
    repo, pattern = hub.groups()
    local = []
    for name in expand_shards(pattern):
        try:
            local.append(str(download_hub_file(repo, name)))
        except FileNotFoundError as err:  # offline, missing file, no access: say which spec
            raise FileNotFoundError(f"data {text!r}: {err}") from err
    return WebDatasetStream(parsed, tuple(local))


def _pattern_shards(target: str, spec: str) -> tuple[Path, list[str]]:
    """The shards of a pattern and the folder whose metadata files apply (the shards', else its parent's)."""
    if target.startswith("hf://"):
        raise ValueError(
            f"dataset {spec!r}: hf:// shard patterns are streamed by the trainer only; for evaluation give a local "
            "pattern or a hub dataset id in CLIP_benchmark's layout (wds:<owner>/<name>)"
        )
    shards = expand_shards(target)
    missing = [p for p in shards if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"dataset {spec!r}: {len(missing)} of {len(shards)} shards not found, e.g. {missing[0]}"
        )
    folder = Path(shards[0]).parent
    meta = ("classnames.txt", "dataset_type.txt")
    root = next((d for d in (folder, folder.parent) if any((d / m).is_file() for m in meta)), folder)
    return root, shards


def load(
    target: str, split: str | None = "test", *, progress: bool | None = None, spec: DataSpec | None = None
) -> WebDatasetDir:
    """A split of a webdataset directory or hub dataset, or shards named by a pattern (see the module docstring).

    ``spec``: the parsed spec it came from (``load_dataset`` passes it), for messages.
    """
    split = split or "test"
    text = str(spec) if spec is not None else f"wds:{target}" + (f":split={split}" if split != "test" else "")
    if _names_shards(target):
        root, shards = _pattern_shards(target, text)
        return WebDatasetDir(root, split, progress=_auto_progress(progress), spec=text, shards=shards)
    root = resolve_root(target, split, spec=text)
    return WebDatasetDir(root, split, progress=_auto_progress(progress), spec=text)


def check(target: str, split: str | None = "test", *, spec: str, **options: Any) -> None:
    """The directory has ``<split>/nshards.txt`` (and a classification set ``classnames.txt``); no tar is read.

    A hub id is accepted when it is cached or a download is allowed.
    """
    split = split or "test"
    path = Path(target).expanduser()
    if _names_shards(target):
        _pattern_shards(target, spec)
        return
    if not path.is_dir():
        if path.exists() or not HUB_ID.match(target):
            resolve_root(target, split, spec=spec)  # raises the loader's error
        if not _split_complete(hub_cache_dir(target), split) and _offline():
            resolve_root(target, split, spec=spec)
        return
    _shard_list(path, split, spec)
    type_file = path / "dataset_type.txt"
    kind = type_file.read_text(encoding="utf-8").strip().lower() if type_file.is_file() else ""
    if kind in ("", "classification") and not (path / "classnames.txt").is_file():
        raise FileNotFoundError(
            f"dataset {spec!r}: {path / 'classnames.txt'} not found; a classification webdataset needs its class "
            "names, one per line, in classnames.txt next to the split folders (CLIP_benchmark writes it)"
        )


def detect(path: str) -> bool:
    """A bare directory in CLIP_benchmark's layout (a ``<split>/nshards.txt``) is a ``wds:`` dataset."""
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, s, "nshards.txt")) for s in SPLITS)


register_data_source(
    "wds",
    load,
    detect=detect,
    splits=SPLITS,
    options=("progress",),  # not ``spec``: load_dataset passes the parsed spec itself
    check=check,
    description="wds:<dir | hub id>[:split=test] (CLIP_benchmark webdatasets, e.g. wds:clip-benchmark/wds_cifar10)",
)
