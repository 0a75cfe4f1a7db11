"""Webdataset tar shards read in place: shard-spec expansion, in-order sample iteration, a seekable index.

The webdataset convention: a shard is a plain tar file whose members are grouped into samples by *key*, the
member's path up to the first dot of its base name (``train/0001.jpg`` and ``train/0001.cls`` are the
sample ``train/0001`` with the extensions ``jpg`` and ``cls``); the members of one sample are consecutive.
Extensions are compared in lower case. Nothing is ever unpacked to disk:

- ``expand_shards("data/{000000..000099}.tar")`` lists the shard paths (numeric ranges keep their
  zero-padding; ``{a,b}`` lists alternatives; several brace groups multiply; ``::`` separates specs).
- ``iter_samples(shard)`` streams one shard's samples in order as ``{"__key__", "__shard__", ext: bytes}``
  (also gzip/bz2/xz-compressed tars); ``iter_shards(shards)`` chains several.
- ``ShardIndex.build(shards)`` reads only the tar headers and records, per sample, the shard and each
  member's data offset and size (``TarInfo.offset_data``), so ``index.read(i)`` is one ``pread`` per member:
  map-style random access for a torch ``Dataset``. Order: shards in the given order, then position.

A malformed shard (missing, not a tar, truncated — no end-of-archive marker —, or two members of one sample
with the same extension) raises ``ShardError`` (a ``ValueError``) naming the shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cliplab.data.base import file_stamp

__all__ = [
    "SampleRef",
    "ShardError",
    "ShardIndex",
    "expand_shards",
    "iter_samples",
    "iter_shards",
    "shard_paths",
    "split_key",
]

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


class ShardError(ValueError):
    """A shard that cannot be read as a webdataset tar; the message names the shard."""


def _expand_one(spec: str) -> list[str]:
    m = _BRACE.search(spec)
    if m is None:
        if "{" in spec or "}" in spec:
            raise ValueError(f"shard spec {spec!r}: unbalanced or nested braces")
        return [spec]
    body = m.group(1)
    rng = _RANGE.match(body)
    if rng:
        lo_s, hi_s = rng.groups()
        lo, hi = int(lo_s), int(hi_s)
        if hi < lo:
            raise ValueError(f"shard spec {spec!r}: empty range {{{body}}}")
        width = len(lo_s) if lo_s.startswith("0") and len(lo_s) > 1 else 0
        choices = [str(i).zfill(width) for i in range(lo, hi + 1)]
    else:
        choices = body.split(",")
    head, tail = spec[: m.start()], spec[m.end() :]
    return [head + c + rest for c in choices for rest in _expand_one(tail)]


def expand_shards(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The shard paths a spec names: brace ranges ``{000..009}`` (zero-padding kept), lists ``{a,b}``, ``::``.

    A sequence is expanded item by item and concatenated. Paths are returned as given (``~`` expanded);
    existence is not checked here.
    """
    if isinstance(spec, str | os.PathLike):
        parts = os.fspath(spec).split("::")
    else:
        parts = [os.fspath(s) for s in spec]
    out: list[str] = []
    for part in parts:
        out.extend(os.path.expanduser(p) for p in _expand_one(part))
    return out


def split_key(name: str) -> tuple[str, str]:
    """``"dir/0001.seg.png"`` → ``("dir/0001", "seg.png")``: the key ends at the base name's first dot.

    A name without a dot in its base name has the extension ``""``.
    """
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{directory}/{stem}" if directory else stem
    return key, ext.lower() if dot else ""


def _is_meta(name: str) -> bool:
    """Webdataset's shard-level metadata members (``__index__`` etc.) are not samples."""
    return "/" not in name and name.startswith("__") and name.endswith("__")


def _open_error(shard: str, err: BaseException) -> ShardError:
    if isinstance(err, FileNotFoundError):
        return ShardError(f"webdataset shard not found: {shard}")
    return ShardError(f"webdataset shard {shard} is not a readable tar file ({err}); re-download or rebuild it")


def _group(shard: str, members: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Consecutive ``(name, value)`` members with the same key → ``(key, {ext: value})``."""
    key: str | None = None
    sample: dict[str, Any] = {}
    for name, value in members:
        k, ext = split_key(name)
        if k != key:
            if key is not None:
                yield key, sample
            key, sample = k, {}
        if ext in sample:
            raise ShardError(
                f"webdataset shard {shard}: sample {k!r} has two members with extension {ext!r} ({name}); "
                "each sample's files must have distinct extensions"
            )
        sample[ext] = value
    if key is not None:
        yield key, sample


def iter_samples(shard: str | os.PathLike, *, extensions: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """The samples of one shard in order: ``{"__key__": key, "__shard__": path, ext: bytes, ...}``.

    ``extensions``: keep only these members' data (others are skipped unread). Streams the tar (any
    compression tarfile reads); raises ``ShardError`` naming the shard when it is missing or malformed.
    """
    path = os.fspath(shard)
    keep = None if extensions is None else {e.lower() for e in extensions}
    try:
        tf = tarfile.open(path, mode="r|*")
    except (OSError, tarfile.TarError, EOFError) as err:
        raise _open_error(path, err) from err

    def members() -> Iterator[tuple[str, bytes]]:
        try:
            for info in tf:
                if not info.isfile() or _is_meta(info.name):
                    continue
                if keep is not None and split_key(info.name)[1] not in keep:
                    continue
                fh = tf.extractfile(info)
                data = fh.read() if fh is not None else b""
                if len(data) != info.size:
                    raise ShardError(f"webdataset shard {path} is truncated: member {info.name} is cut short")
                yield info.name, data
        except (OSError, tarfile.TarError, EOFError) as err:
            raise ShardError(f"webdataset shard {path} is truncated or corrupt ({err}); re-download it") from err

    with tf:
        for key, sample in _group(path, members()):
            yield {"__key__": key, "__shard__": path, **sample}
        if not _is_compressed(path):
            _check_end(path, tf.offset)


def iter_shards(
    shards: str | os.PathLike | Sequence[str | os.PathLike], *, extensions: Iterable[str] | None = None
) -> Iterator[dict[str, Any]]:
    """``iter_samples`` over every shard of a spec or list, in order."""
    exts = None if extensions is None else list(extensions)
    for shard in expand_shards(shards):
        yield from iter_samples(shard, extensions=exts)


@dataclass(frozen=True)
class SampleRef:
    """Where one sample lies: its shard (index into ``ShardIndex.shards``), key, ``{ext: (offset, size)}``."""

    shard: int
    key: str
    members: dict[str, tuple[int, int]]


_BLOCK = 512
_ZERO = bytes(_BLOCK)
_REGULAR = (b"0", b"\0", b"7")  # regular file types (contiguous file, ``7``, is a regular file too)
_PLAIN = (*_REGULAR, b"1", b"2", b"3", b"4", b"5", b"6")  # headers a plain USTAR/GNU scan understands


class _NeedsTarfile(Exception):
    """The scan met a header it leaves to ``tarfile`` (PAX/GNU extended names, base-256 sizes, ...)."""


def _scan_headers(path: str, size: int) -> list[tuple[str, tuple[int, int]]]:
    """``(name, (offset_data, size))`` of every regular member, read from the 512-byte headers directly.

    Covers the USTAR/GNU headers webdataset writers emit (~10× faster than ``tarfile``'s per-member
    objects); anything else raises ``_NeedsTarfile`` and the caller falls back to ``tarfile``. Checksums are
    verified, so garbage is not mistaken for members.
    """
    out: list[tuple[str, tuple[int, int]]] = []
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise _open_error(path, err) from err
    try:
        offset = 0
        while True:
            header = os.pread(fd, _BLOCK, offset)
            if len(header) < _BLOCK:
                if offset == 0:
                    raise ShardError(f"webdataset shard {path} is not a readable tar file (empty or too short)")
                raise ShardError(f"webdataset shard {path} is truncated after byte {offset}; re-download it")
            if header == _ZERO:
                if os.pread(fd, _BLOCK, offset + _BLOCK) != _ZERO:
                    raise ShardError(
                        f"webdataset shard {path} is truncated or corrupt after byte {offset} (no end-of-archive "
                        "marker); re-download it"
                    )
                return out
            try:
                stored = int(header[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
            except ValueError:
                stored = -1
            computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
            if stored != computed:
                if offset == 0:
                    raise ShardError(f"webdataset shard {path} is not a readable tar file (invalid header)")
                raise ShardError(f"webdataset shard {path} is corrupt at byte {offset} (bad header checksum)")
            kind = header[156:157]
            if kind not in _PLAIN or header[124] & 0x80:
                raise _NeedsTarfile
            name = header[:100].split(b"\0", 1)[0]
            if header[257:262] == b"ustar":
                prefix = header[345:500].split(b"\0", 1)[0]
                if prefix:
                    name = prefix + b"/" + name
            try:
                length = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            except ValueError:
                raise _NeedsTarfile from None
            data = offset + _BLOCK
            if kind in _REGULAR and not name.endswith(b"/"):
                if data + length > size:
                    text = name.decode("utf-8", "surrogateescape")
                    raise ShardError(f"webdataset shard {path} is truncated: member {text} is cut short")
                out.append((name.decode("utf-8", "surrogateescape"), (data, length)))
            else:
                length = length if kind in _REGULAR else 0  # links, devices, dirs: no data blocks
            offset = data + -(-length // _BLOCK) * _BLOCK
    finally:
        os.close(fd)


def _tarfile_members(path: str, size: int) -> list[tuple[str, tuple[int, int]]]:
    """``_scan_headers`` through ``tarfile`` (every header type it knows)."""
    try:
        tf = tarfile.open(path, mode="r:")
    except (OSError, tarfile.TarError, EOFError) as err:
        if isinstance(err, tarfile.ReadError) and _is_compressed(path):
            raise ShardError(
                f"webdataset shard {path} is compressed; random access needs an uncompressed .tar "
                "(decompress it, or stream it with iter_samples)"
            ) from err
        raise _open_error(path, err) from err
    out = []
    with tf:
        try:
            for info in tf:
                if not info.isfile():
                    continue
                if info.offset_data + info.size > size:
                    raise ShardError(f"webdataset shard {path} is truncated: member {info.name} is cut short")
                out.append((info.name, (info.offset_data, info.size)))
        except (OSError, tarfile.TarError, EOFError) as err:
            raise ShardError(f"webdataset shard {path} is truncated or corrupt ({err}); re-download it") from err
        _check_end(path, tf.offset)
    return out


def _index_shard(path: str) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise _open_error(path, err) from err
    try:
        members = _scan_headers(path, size)
    except _NeedsTarfile:
        members = _tarfile_members(path, size)
    except ShardError:
        if size and _is_compressed(path):
            members = _tarfile_members(path, size)  # raises the "compressed" message
        raise
    return list(_group(path, ((n, v) for n, v in members if not _is_meta(n))))


def _check_end(path: str, offset: int) -> None:
    """A complete tar ends with two zero blocks after its last member; tarfile stops silently without them."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        tail = fh.read(1024)
    if len(tail) < 1024 or tail.count(0) != len(tail):
        raise ShardError(
            f"webdataset shard {path} is truncated or corrupt after byte {offset} (no end-of-archive marker); "
            "re-download it"
        )


def _is_compressed(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(6)
    return head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))


def _shard_stat(path: str) -> list[Any]:
    """``[path, size, mtime_ns, ctime_ns]``: ctime too, since a rewrite can keep the size and set mtime back."""
    return [path, *file_stamp(path)]


@dataclass
class ShardIndex:
    """Random access to the samples of a list of uncompressed tar shards (see the module docstring).

    ``samples[i]`` locates sample ``i``; ``read(i)`` returns ``{ext: bytes}`` for it. File descriptors are
    opened lazily per process (safe to pickle into loader workers; reads use ``os.pread``, safe across
    threads). ``fingerprint()`` hashes the shard paths, sizes, modification and change times: cheap.
    """

    shards: list[str]
    samples: list[SampleRef]
    stats: list[list[Any]] = field(default_factory=list)
    _fds: dict[int, int] = field(default_factory=dict, repr=False, compare=False)
    _pid: int = field(default=-1, repr=False, compare=False)

    @classmethod
    def build(cls, shards: str | os.PathLike | Sequence[str | os.PathLike], *, progress: bool = False) -> ShardIndex:
        """Index every shard (headers only) in order; ``progress`` shows a bar over the shards."""
        paths = expand_shards(shards)
        if not paths:
            raise ValueError("no webdataset shards given")
        it: Iterable[tuple[int, str]] = enumerate(paths)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=len(paths), desc="indexing shards", unit="shard")
        samples: list[SampleRef] = []
        stats = []
        for s, path in it:
            if not os.path.isfile(path):
                raise ShardError(f"webdataset shard not found: {path}")
            stats.append(_shard_stat(path))
            samples.extend(SampleRef(s, key, members) for key, members in _index_shard(path))
        return cls(paths, samples, stats)

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fds"], state["_pid"] = {}, -1
        return state

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            path = self.shards[shard]
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except OSError as err:
                raise _open_error(path, err) from err
            kept = self._fds.setdefault(shard, fd)  # another thread may have opened it meanwhile
            if kept != fd:
                os.close(fd)
            fd = kept
        return fd

    def read(self, index: int, extensions: Iterable[str] | None = None) -> dict[str, bytes]:
        """``{ext: bytes}`` of sample ``index`` (only ``extensions`` when given; missing ones are left out)."""
        ref = self.samples[index]
        wanted = ref.members if extensions is None else {e: ref.members[e] for e in extensions if e in ref.members}
        fd = self._fd(ref.shard)
        out: dict[str, bytes] = {}
        for ext, (offset, size) in wanted.items():
            data = os.pread(fd, size, offset)
            if len(data) != size:
                raise ShardError(f"webdataset shard {self.shards[ref.shard]} changed or was truncated after indexing")
            out[ext] = data
        return out

    def extensions(self) -> set[str]:
        """Every extension any sample has."""
        return {e for ref in self.samples for e in ref.members}

    def fingerprint(self) -> str:
        """SHA-256 (hex, 16) of the shards' paths, sizes, modification and change times, in order."""
        return hashlib.sha256(json.dumps(self.stats).encode()).hexdigest()[:16]

    def close(self) -> None:
        """Close the file descriptors this process opened (reads reopen them)."""
        self._close_fds(self._fds)
        self._fds = {}

    # At interpreter exit this module's globals (os included) may already be None when an index is freed, so
    # __del__ uses only what it bound at definition and the class's own attributes.
    @staticmethod
    def _close_fds(fds: dict[int, int], _close: Any = os.close) -> None:
        for fd in fds.values():
            try:
                _close(fd)
            except OSError:
                pass

    def __del__(self, _getpid: Any = os.getpid) -> None:
        if getattr(self, "_pid", -1) == _getpid():
            self._close_fds(getattr(self, "_fds", {}))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (for caching an index next to its shards)."""
        return {
            "shards": self.shards,
            "stats": self.stats,
            "samples": [[r.shard, r.key, r.members] for r in self.samples],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ShardIndex:
        samples = [
            SampleRef(int(s), str(k), {e: (int(o), int(n)) for e, (o, n) in m.items()}) for s, k, m in obj["samples"]
        ]
        return cls(list(obj["shards"]), samples, [list(x) for x in obj["stats"]])

    def is_current(self) -> bool:
        """Whether every shard still has the size, modification and change time it was indexed with."""
        try:
            return [_shard_stat(p) for p in self.shards] == self.stats
        except OSError:
            return False


def shard_paths(directory: str | os.PathLike, pattern: str = "*.tar") -> list[str]:
    """The shards in ``directory`` sorted numerically where names are numbers (``2.tar`` before ``10.tar``)."""
    found = [str(p) for p in Path(directory).glob(pattern) if p.is_file()]

    def order(p: str) -> tuple[int, Any]:
        stem = Path(p).name.split(".", 1)[0]
        return (0, int(stem)) if stem.isdigit() else (1, stem)

    return sorted(found, key=order)
