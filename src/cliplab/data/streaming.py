"""The ``wds:`` source's streaming mode: tar shards read in order, resumable mid-epoch (for training).

``cliplab.data.sources.wds.stream(spec)`` resolves a ``wds:`` spec that names shards (a brace pattern
``{000000..000999}.tar``, a ``::`` list, one ``.tar``, or ``hf://<owner>/<name>/<pattern>`` on the Hugging Face
Hub) into a :class:`WebDatasetStream`; its :meth:`WebDatasetStream.sampler` is a :class:`ShardStream`. The same
spec given to ``load_dataset`` is the map-style ``WebDatasetDir`` (random access by index, for evaluation);
one spec, one parser (``DataSpec``), one predicate (``cliplab.data.sources.wds.is_shard_pattern``).

Samples are the layout ``img2dataset`` writes: a ``jpg``/``jpeg``/``png``/``webp`` image and a ``txt`` caption.

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

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cliplab.data.shards import ShardError, iter_samples
from cliplab.data.spec import DataSpec

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSIONS = ("txt",)


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
        return StreamState(readers=[[0, 0] for _ in range(self.num_workers)], rng=dict(rng.bit_generator.state))

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
        self._rng.bit_generator.state = state.rng or self.initial_state().rng or {}
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
            rng=dict(self._rng.bit_generator.state),
        )
        return samples, None, self._state


@dataclass(frozen=True)
class WebDatasetStream:
    """A ``wds:`` spec naming shards, read as a stream: the source's training mode (see the module docstring).

    ``spec``: the parsed spec; ``shards``: the local shard paths, in the order given (hub shards downloaded).
    """

    spec: DataSpec
    shards: tuple[str, ...]

    def __len__(self) -> int:
        """The number of shards (samples are only known by reading them)."""
        return len(self.shards)

    def captions(self) -> list[str]:
        """Every caption of the shards (only the ``txt`` members are read): a new model's vocabulary."""
        return stream_captions(list(self.shards))

    def sampler(
        self,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        *,
        num_workers: int = 1,
        buffer_size: int = 1000,
    ) -> ShardStream:
        """Rank ``rank``'s :class:`ShardStream` of raw samples (``batch_size`` per draw)."""
        return ShardStream(
            list(self.shards),
            batch_size,
            seed,
            rank,
            world_size,
            num_workers=num_workers,
            buffer_size=buffer_size,
        )


__all__ = [
    "CAPTION_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "ShardStream",
    "StreamState",
    "WebDatasetStream",
    "stream_captions",
]
