"""Curated webdataset output: the kept samples of a ``wds:`` input as shards in CLIP_benchmark's layout.

``<out>/<split>/{0..n-1}.tar`` (each sample: its original image bytes and a ``txt`` of its kept captions, one per
line), ``<out>/<split>/nshards.txt`` and ``<out>/dataset_type.txt`` (``retrieval``) — what ``wds:<out>`` reads.
Tar headers carry no time or owner, so the same samples give the same bytes (the report's digest).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")


def _member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tf.addfile(info, io.BytesIO(data))


def write_shards(
    directory: Path, dataset: Any, samples: Sequence[tuple[int, list[str]]], split: str, per_shard: int = 10_000
) -> None:
    """Write ``samples`` (image index in ``dataset``, kept captions) as shards under ``directory``."""
    (directory / split).mkdir(parents=True, exist_ok=True)
    chunks = [samples[i : i + per_shard] for i in range(0, len(samples), per_shard)] or [[]]
    for s, chunk in enumerate(chunks):
        with tarfile.open(directory / split / f"{s}.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
            for i, captions in chunk:
                members = dataset.index.read(i)
                ext = next(e for e in IMAGE_EXTENSIONS if e in members)
                key = dataset.keys[i]
                _member(tf, f"{key}.{ext}", members[ext])
                _member(tf, f"{key}.txt", "\n".join(captions).encode("utf-8"))
    (directory / split / "nshards.txt").write_text(f"{len(chunks)}\n", encoding="utf-8")
    (directory / "dataset_type.txt").write_text("retrieval\n", encoding="utf-8")


def shards_digest(directory: Path, split: str) -> str:
    """sha256 over the split's shards in order (empty when there are none)."""
    h = hashlib.sha256()
    nshards = directory / split / "nshards.txt"
    if not nshards.is_file():
        return ""
    for s in range(int(nshards.read_text(encoding="utf-8").strip() or 0)):
        h.update((directory / split / f"{s}.tar").read_bytes())
    return h.hexdigest()
