"""Streaming training data: webdataset tar shards of image + caption, resumable mid-epoch.

The spec ``wds:<shards>`` names shards in the layout ``img2dataset`` writes (``{000000..000999}.tar``, each
sample a ``jpg``/``jpeg``/``png``/``webp`` image and a ``txt`` caption): a brace pattern, a ``::``-separated
list or one ``.tar`` path (``cliplab.data.shards.expand_shards``), or ``wds:hf://<owner>/<name>/<pattern>``
for shards in a Hugging Face Hub dataset repository (each shard downloaded into the cliplab cache,
``<cache>/datasets/wds/<owner>--<name>/<path>``, when the run starts and a network exists; kept for later
runs). ``wds:<dir>`` without a pattern stays CLIP_benchmark's map-style layout
(``cliplab.data.sources.wds``), trained with the exact ``PairSampler``.

Order (all of it a function of the seed, the world size and ``num_workers``):

- epoch ``e`` permutes the shards with a generator seeded by ``(seed, e)``; rank ``r`` of ``W`` takes the
  permuted shards ``r, r+W, ...`` (split by shard, as open_clip does), and its reader ``k`` of ``K``
  (``data.num_workers``) takes that rank's shards ``k, k+K, ...``; readers go through their shards in order
  and are interleaved round-robin, so every sample is read once per epoch by exactly one rank;
- the samples pass a shuffle buffer of ``data.shuffle_buffer`` samples (webdataset's: fill, then emit a
  random slot and refill it) drawn by a per-rank generator;
- when a rank's readers run out, its next epoch starts at once (the buffer carries over): every rank always
  has a full batch, so no rank waits for another.

The stream's whole position is a ``StreamState``: the epoch, each reader's shard and offset, the buffer's
samples as ``(shard, offset)`` references and the generator's state. A checkpoint stores every rank's, and a
resumed run re-reads the buffered samples and continues with exactly the next sample.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from cliplab.data.shards import ShardError, expand_shards, iter_samples
from cliplab.imaging.decoding import decode_image
from cliplab.models.base import Model

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSIONS = ("txt",)
HUB_PREFIX = "hf://"
_HUB = re.compile(r"^hf://([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)/(.+)$")


def is_stream_spec(spec: str) -> bool:
    """Whether a ``data.train`` spec names tar shards to stream (``wds:`` + a pattern, list, ``.tar`` or hub)."""
    if not isinstance(spec, str) or not spec.startswith("wds:"):
        return False
    target = spec[4:]
    return target.startswith(HUB_PREFIX) or "{" in target or "::" in target or target.endswith((".tar", ".tar.gz"))


def resolve_shards(spec: str) -> list[str]:
    """The local shard paths of a stream spec (hub shards are downloaded into the cliplab cache first)."""
    if not is_stream_spec(spec):
        raise ValueError(f"{spec!r} is not a stream spec (wds:<dir>/{{000000..000099}}.tar or wds:hf://owner/name/...)")
    target = spec[4:]
    m = _HUB.match(target)
    if m is None:
        shards = expand_shards(target)
        missing = [s for s in shards if not os.path.isfile(s)]
        if missing:
            raise FileNotFoundError(
                f"data.train {spec!r}: {len(missing)} of {len(shards)} shards not found (first: {missing[0]})"
            )
        return shards
    repo, pattern = m.groups()
    from cliplab.data.sources.wds import download_hub_file

    out = []
    for name in expand_shards(pattern):
        try:
            out.append(str(download_hub_file(repo, name)))
        except FileNotFoundError as err:  # offline, missing file, no access: say which spec
            raise FileNotFoundError(f"data.train {spec!r}: {err}") from err
    return out


def stream_captions(shards: list[str]) -> list[str]:
    """Every caption of the shards (only the ``txt`` members are read): a new model's vocabulary."""
    return [
        sample["txt"].decode("utf-8").strip()
        for shard in shards
        for sample in iter_samples(shard, extensions=CAPTION_EXTENSIONS)
        if "txt" in sample
    ]


@dataclass
class StreamState:
    """Where a rank's stream is (see the module docstring); ``position`` counts its samples this epoch."""

    epoch: int = 0
    position: int = 0
    readers: list[list[int]] = field(default_factory=list)  # per reader: [shard number in its list, offset]
    turn: int = 0  # the reader whose sample comes next
    buffer: list[list[Any]] = field(default_factory=list)  # [shard path, offset] of each buffered sample
    rng: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Reader:
    """One reader's walk through its shards: ``(shard, offset, sample)``; ``done`` once they are exhausted."""

    def __init__(self, shards: list[str], shard_pos: int = 0, offset: int = 0):
        self.shards, self.shard_pos, self.offset = shards, shard_pos, offset
        self._it: Iterator[dict[str, Any]] | None = None

    @property
    def done(self) -> bool:
        return self.shard_pos >= len(self.shards)

    def next(self) -> tuple[str, int, dict[str, Any]] | None:
        while not self.done:
            if self._it is None:
                self._it = _samples_from(self.shards[self.shard_pos], self.offset)
            sample = next(self._it, None)
            if sample is not None:
                out = (self.shards[self.shard_pos], self.offset, sample)
                self.offset += 1
                return out
            self._it, self.shard_pos, self.offset = None, self.shard_pos + 1, 0
        return None


def _usable(sample: dict[str, Any]) -> bool:
    return any(e in sample for e in IMAGE_EXTENSIONS) and "txt" in sample


def _samples_from(shard: str, offset: int) -> Iterator[dict[str, Any]]:
    """The usable (image + caption) samples of ``shard`` from the ``offset``-th on."""
    keep = (*IMAGE_EXTENSIONS, *CAPTION_EXTENSIONS)
    n = 0
    for sample in iter_samples(shard, extensions=keep):
        if not _usable(sample):
            continue
        if n >= offset:
            yield sample
        n += 1


def _read_refs(refs: list[list[Any]]) -> list[dict[str, Any]]:
    """The samples at ``[shard, offset]`` references (each shard streamed once)."""
    wanted: dict[str, set[int]] = {}
    for shard, offset in refs:
        wanted.setdefault(shard, set()).add(int(offset))
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for shard, offsets in wanted.items():
        last = max(offsets)
        for i, sample in enumerate(_samples_from(shard, 0)):
            if i in offsets:
                found[(shard, i)] = sample
            if i >= last:
                break
    missing = [r for r in refs if (r[0], int(r[1])) not in found]
    if missing:
        shard, offset = missing[0]
        raise ShardError(f"webdataset shard {shard} changed since the checkpoint: its sample {offset} is gone")
    return [found[(shard, int(offset))] for shard, offset in refs]


class ShardStream:
    """Batches of raw samples from tar shards for one rank; see the module docstring.

    ``batch(state) -> (samples, None, next_state)`` has ``PairSampler.batch``'s form: called with the state
    it returned last it simply continues; any other state (a resumed checkpoint) is sought first.
    """

    def __init__(
        self,
        shards: list[str],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        *,
        num_workers: int = 1,
        buffer_size: int = 1000,
    ):
        if len(shards) < world_size:
            raise ValueError(
                f"{len(shards)} shards for {world_size} processes: streaming splits the data by shard, so every "
                "process needs at least one; write more (smaller) shards"
            )
        self.shards, self.batch_size, self.seed = list(shards), batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.num_workers, self.buffer_size = max(1, int(num_workers)), max(0, int(buffer_size))
        self._state: StreamState | None = None
        self._samples: list[dict[str, Any]] = []  # the buffer's samples, parallel to state.buffer

    def rank_shards(self, epoch: int) -> list[str]:
        """This rank's shards in epoch ``epoch``."""
        order = np.random.default_rng([self.seed, epoch, 5501]).permutation(len(self.shards))
        return [self.shards[i] for i in order[self.rank :: self.world_size]]

    def _open_epoch(self, epoch: int, cursors: list[list[int]] | None = None) -> None:
        mine = self.rank_shards(epoch)
        parts = [mine[k :: self.num_workers] for k in range(self.num_workers)]
        cursors = cursors or [[0, 0] for _ in parts]
        self._readers = [_Reader(p, int(c[0]), int(c[1])) for p, c in zip(parts, cursors)]

    #: every rank has its own state (a checkpoint stores them all)
    per_rank = True

    def initial_state(self) -> StreamState:
        rng = np.random.default_rng([self.seed, self.rank, 7703])
        return StreamState(readers=[[0, 0] for _ in range(self.num_workers)], rng=rng.bit_generator.state)

    def state_from_dict(self, data: dict[str, Any]) -> StreamState:
        state = StreamState(**data)
        if len(state.readers) != self.num_workers:
            raise ValueError(
                f"the checkpoint's stream has {len(state.readers)} readers (data.num_workers) but this run has "
                f"{self.num_workers}: the sample order depends on it; resume with data.num_workers: "
                f"{len(state.readers)}"
            )
        return state

    def _seek(self, state: StreamState) -> None:
        self._open_epoch(state.epoch, state.readers)
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state.rng or self.initial_state().rng
        self._epoch, self._position, self._turn = state.epoch, state.position, state.turn
        self._refs = [list(r) for r in state.buffer]
        self._samples = _read_refs(self._refs) if self._refs else []
        self._state = state

    def _read_one(self) -> tuple[str, int, dict[str, Any]]:
        """The next sample of the round-robin over this rank's readers (a new epoch when all are done)."""
        for _ in range(2):
            for _ in range(len(self._readers)):
                reader = self._readers[self._turn]
                self._turn = (self._turn + 1) % len(self._readers)
                got = reader.next()
                if got is not None:
                    return got
            self._epoch, self._position, self._turn = self._epoch + 1, 0, 0
            self._open_epoch(self._epoch)
        raise ValueError(f"rank {self.rank}'s shards hold no image + txt samples: {self.rank_shards(self._epoch)}")

    def _next(self) -> dict[str, Any]:
        while len(self._samples) < max(1, self.buffer_size):
            shard, offset, sample = self._read_one()
            self._refs.append([shard, offset])
            self._samples.append({**sample, "__epoch__": self._epoch})
            if self.buffer_size == 0:
                break
        j = int(self._rng.integers(len(self._samples)))
        sample = self._samples[j]
        self._samples[j], self._refs[j] = self._samples[-1], self._refs[-1]
        self._samples.pop()
        self._refs.pop()
        self._position += 1
        return sample

    def batch(self, state: StreamState) -> tuple[list[dict[str, Any]], None, StreamState]:
        """This rank's next ``batch_size`` samples after ``state``, and the state after them."""
        if state is not self._state:
            self._seek(state)
        samples = [self._next() for _ in range(self.batch_size)]
        self._state = StreamState(
            epoch=self._epoch,
            position=self._position,
            readers=[[r.shard_pos, r.offset] for r in self._readers],
            turn=self._turn,
            buffer=[list(r) for r in self._refs],
            rng=self._rng.bit_generator.state,
        )
        return samples, None, self._state


def decode_sample(sample: dict[str, Any]) -> Image.Image:
    """The sample's image (its first of ``jpg``, ``jpeg``, ``png``, ``webp``) as RGB.

    Errors name it ``<shard>:<key>.<ext>``; an image declaring more than ``CLIPLAB_MAX_IMAGE_PIXELS`` is
    refused from its header (``cliplab.imaging.decoding.decode_image``).
    """
    ext = next(e for e in IMAGE_EXTENSIONS if e in sample)
    return decode_image(sample[ext], name=f"{sample['__shard__']}:{sample['__key__']}.{ext}")


class StreamBatchLoader:
    """Decode and preprocess a stream's batches ahead (``BatchLoader``'s interface for ``ShardStream``).

    Images are decoded by ``num_workers`` threads (a batch split into contiguous parts, so the pixels do not
    depend on the count); captions are tokenised per batch, and so are their hard negatives (``negatives``).
    """

    def __init__(self, model: Model, *, teacher: Model | None = None, negatives: Any = None, num_workers: int = 1):
        self.model, self.teacher = model, teacher
        self.negatives = negatives  # a HardNegativeSampler (no caption cache), keyed by sample_index
        self.num_workers = max(1, int(num_workers))
        self._decode = ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="cliplab-decode")

    def _pixels(self, model: Model, images: list[Image.Image]) -> torch.Tensor:
        parts = np.array_split(np.arange(len(images)), min(self.num_workers, len(images)))
        chunks = self._decode.map(lambda p: model.preprocess.batch_array([images[i] for i in p]), parts)
        return torch.from_numpy(np.concatenate(list(chunks)))  # NumPy on these threads: normalize_array says why

    def load(self, samples: list[dict[str, Any]], _captions: Any = None) -> dict[str, Any]:
        images = list(self._decode.map(decode_sample, samples))
        texts = [s["txt"].decode("utf-8").strip() for s in samples]
        batch: dict[str, Any] = {"pixels": self._pixels(self.model, images), "tokens": self.model.tokenize(texts)}
        if self.teacher is not None:
            same = self.teacher.preprocess.fingerprint() == self.model.preprocess.fingerprint()
            batch["teacher_pixels"] = batch["pixels"] if same else self._pixels(self.teacher, images)
            batch["teacher_tokens"] = self.teacher.tokenize(texts)
        if self.negatives is not None:
            from cliplab.train.hard_negatives import sample_index

            negatives = self.negatives(texts, [sample_index(s) for s in samples])
            if negatives:
                batch["negative_tokens"] = self.model.tokenize(negatives)
        return batch

    def close(self) -> None:
        self._decode.shutdown(wait=True, cancel_futures=True)


__all__ = [
    "ShardStream",
    "StreamBatchLoader",
    "StreamState",
    "decode_sample",
    "is_stream_spec",
    "resolve_shards",
    "stream_captions",
]
