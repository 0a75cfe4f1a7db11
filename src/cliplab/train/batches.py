"""Training batches: a deterministic, resumable sampler and a loader that preprocesses ahead.

``PairSampler`` walks a seeded permutation of the captioned images, epoch after epoch; its whole state
is ``(epoch, position)``, so a checkpoint that stores it continues with exactly the next batch. Each
image of a batch is paired with one of its captions, drawn from a generator seeded by
``(seed, epoch, position)``. Under ``torchrun`` every rank computes the same global batch and takes its
own slice.

``BatchLoader`` turns indices into tensors (pixels, tokens; and the teacher's when distilling),
optionally keeping preprocessed images in memory. Its pixels are read as every other path reads them
(``cliplab.data.loader.load_pixels``), each batch split into ``num_workers`` contiguous parts decoded in
parallel threads (the pixels do not depend on the count); the order stays the sampler's, which
``make_loader``'s fixed index order cannot express. ``Prefetcher`` runs the sampler and the loader on a
background thread while the model trains on the previous batch. Loader threads use NumPy and PIL only,
never torch kernels (``Preprocess.normalize_array`` says why).

``build_batches`` picks the pair: ``PairSampler`` + ``BatchLoader`` for map-style data, or
the ``wds:`` source's stream (``WebDatasetStream.sampler``, a ``ShardStream``) + ``StreamBatchLoader`` for ``wds:``
specs that name tar shards.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from cliplab.data.base import Dataset
from cliplab.data.loader import check_workers, load_pixels
from cliplab.data.spec import DataSpec
from cliplab.data.streaming import WebDatasetStream
from cliplab.models.base import Model

#: captions tokenised up front when there are at most this many; else each on its first use
PREFILL_LIMIT = 50_000
#: no token cache (per-batch tokenisation) above this many captions
TOKEN_CACHE_LIMIT = 500_000


@dataclass(frozen=True)
class SamplerState:
    """Where the sampler is: the ``epoch`` and the ``position`` of the next batch in its permutation."""

    epoch: int = 0
    position: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_captions(dataset: Dataset) -> tuple[list[str], np.ndarray]:
    """The dataset's captions and caption → image map, or a clear error when it has none."""
    captions, t2i = dataset.captions, dataset.text_to_image
    if not captions or t2i is None:
        raise ValueError(
            f"dataset {dataset.name!r} has no captions: training needs image–caption pairs "
            "(a .csv/.jsonl caption file, or shapes)"
        )
    t2i = np.asarray(t2i, dtype=np.int64)
    if t2i.shape != (len(captions),):
        raise ValueError(f"dataset {dataset.name!r}: {len(captions)} captions but {t2i.size} text_to_image entries")
    if t2i.size and (t2i.min() < 0 or t2i.max() >= len(dataset)):
        raise ValueError(f"dataset {dataset.name!r}: text_to_image points outside its {len(dataset)} images")
    return list(captions), t2i


class PairSampler:
    """Deterministic (image, caption) batches; see the module docstring.

    Args:
        text_to_image: image index of every caption.
        n_images: number of images in the dataset.
        batch_size: images per rank per optimizer step (micro-batch × accumulation steps).
        seed: the run's seed.
        rank, world_size: this process's share of the global batch (``batch_size · world_size``).
    """

    def __init__(
        self, text_to_image: np.ndarray, n_images: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ):
        t2i = np.asarray(text_to_image, dtype=np.int64)
        self.order = np.argsort(t2i, kind="stable")
        self.counts = np.bincount(t2i, minlength=n_images)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.images = np.nonzero(self.counts > 0)[0]
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.global_batch = batch_size * world_size
        if self.images.size < self.global_batch:
            raise ValueError(
                f"the training data has {self.images.size} captioned images but one optimizer step needs "
                f"{self.global_batch} (batch_size × accum_steps × processes); use more data or a smaller batch"
            )
        self._perm_epoch: int | None = None
        self._perm = self.images

    #: the state is the same on every rank (a checkpoint stores one)
    per_rank = False

    def initial_state(self) -> SamplerState:
        return SamplerState()

    def state_from_dict(self, data: dict[str, Any]) -> SamplerState:
        return SamplerState(**data)

    @property
    def steps_per_epoch(self) -> int:
        return self.images.size // self.global_batch

    def permutation(self, epoch: int) -> np.ndarray:
        """The image order of ``epoch`` (cached for the current epoch)."""
        if self._perm_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch, 7411])
            self._perm = self.images[rng.permutation(self.images.size)]
            self._perm_epoch = epoch
        return self._perm

    def batch(self, state: SamplerState) -> tuple[np.ndarray, np.ndarray, SamplerState]:
        """This rank's ``(image indices, caption indices)`` at ``state``, and the state after it."""
        if state.position + self.global_batch > self.images.size:  # a partial batch is dropped
            state = SamplerState(state.epoch + 1, 0)
        perm = self.permutation(state.epoch)
        images = perm[state.position : state.position + self.global_batch]
        rng = np.random.default_rng([self.seed, state.epoch, state.position, 9901])
        captions = self.order[self.starts[images] + rng.integers(0, self.counts[images])]
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        return images[lo:hi], captions[lo:hi], SamplerState(state.epoch, state.position + self.global_batch)


class ImageCache:
    """Preprocessed images kept in one preallocated float32 array, filled on first use (NumPy: it is read and
    written on the loader's threads, where torch kernels must not run; see ``Preprocess.normalize_array``)."""

    def __init__(self, n: int, shape: tuple[int, ...]):
        self.pixels = np.empty((n, *shape), dtype=np.float32)
        self.filled = np.zeros(n, dtype=bool)


def image_cache_size(model: Model, n_images: int) -> int | None:
    """Bytes a full image cache would take, or None when the preprocessed size is not fixed."""
    size = model.preprocess.output_size
    return None if size is None else n_images * 3 * int(size[0]) * int(size[1]) * 4


class TokenCache:
    """Each caption tokenised once into a table; batches padded exactly as ``model.tokenize`` pads them.

    Tokenising is the costliest per-step data work once images are cached (and pure Python for some
    tokenizers, holding the GIL the training thread needs); a batch is then a few array gathers. Two kinds:
    a Hugging Face tokenizer with ``padding`` ``"longest"``/``"max_length"`` (token ids per caption,
    padded per batch), or any model whose ``tokenize`` returns fixed-width rows whatever the texts
    (open_clip's tokenizers: ``FixedTokenCache``, for up to ``PREFILL_LIMIT`` captions). At most
    ``TOKEN_CACHE_LIMIT`` captions; ``for_model`` returns None otherwise, or when a check against
    ``model.tokenize`` on sample captions finds any difference. NumPy tables: they are read on the loader's
    thread (see ``Preprocess.normalize_array``).
    """

    def __init__(self, model: Model, captions: list[str]):
        self.captions = captions
        if model.max_length is None:  # for_model checks it first
            raise ValueError(f"{type(model).__name__} has no max_length: its captions cannot be cached as token ids")
        self.tokenizer = model.tokenizer
        self.padding, self.max_length = model.padding, int(model.max_length)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.left = getattr(self.tokenizer, "padding_side", "right") == "left"
        self.table = np.full((len(captions), self.max_length), self.pad_id, dtype=np.int32)
        self.lengths = np.full((len(captions),), -1, dtype=np.int64)  # -1: not tokenised yet
        self._lock = threading.Lock()  # a HF tokenizer must not encode on two threads at once

    @classmethod
    def for_model(cls, model: Model, captions: list[str]) -> TokenCache | FixedTokenCache | None:
        if len(captions) > TOKEN_CACHE_LIMIT:
            return None
        tok = getattr(model, "tokenizer", None)
        cache: TokenCache | FixedTokenCache | None = None
        if getattr(model, "padding", None) in ("longest", "max_length"):
            if getattr(tok, "pad_token_id", None) is not None and isinstance(getattr(model, "max_length", None), int):
                cache = cls(model, captions)
        if cache is None and len(captions) <= PREFILL_LIMIT:  # it tokenises everything up front
            cache = FixedTokenCache.for_model(model, captions)
        if cache is None:
            return None
        sample = np.arange(min(len(captions), 16))
        try:
            ours, theirs = cache(sample), model.tokenize([captions[i] for i in sample])
        except (TypeError, ValueError, AttributeError, RuntimeError):
            return None
        return cache if same_tokens(ours, theirs) else None

    def _encode(self, indices: np.ndarray) -> None:
        with self._lock:
            todo = [int(c) for c in indices if self.lengths[int(c)] < 0]
            if todo:
                enc = self.tokenizer(
                    [self.captions[c] for c in todo], padding=False, truncation=True, max_length=self.max_length
                )
                for c, ids in zip(todo, enc["input_ids"]):
                    self.table[c, : len(ids)] = ids
                    self.lengths[c] = len(ids)

    def prefill(self, chunk: int = 8192) -> None:
        """Tokenise every caption now (the loader does it up front for up to ``PREFILL_LIMIT`` captions)."""
        for start in range(0, len(self.captions), chunk):
            self._encode(np.arange(start, min(len(self.captions), start + chunk)))

    def __call__(self, caption_idx: np.ndarray) -> dict[str, torch.Tensor]:
        idx = np.asarray(caption_idx, dtype=np.int64)
        if bool((self.lengths[idx] < 0).any()):
            self._encode(np.unique(idx))
        lengths = self.lengths[idx]
        width = self.max_length if self.padding == "max_length" else int(lengths.max())
        pos = np.broadcast_to(np.arange(width), (len(idx), width))
        src = pos - (width - lengths)[:, None] if self.left else pos  # left padding shifts the tokens right
        valid = (src >= 0) & (src < lengths[:, None])
        rows = np.take_along_axis(self.table[idx], np.clip(src, 0, self.max_length - 1), axis=1)
        ids = np.where(valid, rows, self.pad_id).astype(np.int64)
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(valid.astype(np.int64))}


def same_tokens(a: Any, b: Any) -> bool:
    """Whether two ``tokenize`` outputs (a tensor or a dict of tensors) are identical."""
    if isinstance(a, dict) != isinstance(b, dict):
        return False
    if not isinstance(a, dict):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a.keys() == b.keys() and all(same_tokens(a[k], b[k]) for k in a)


class FixedTokenCache:
    """The whole ``model.tokenize`` output of every caption, for tokenizers that pad every caption to the same
    width (open_clip's ``context_length``): a batch is a row gather of each table."""

    def __init__(self, tables: dict[str, np.ndarray], as_dict: bool):
        self.tables, self.as_dict = tables, as_dict

    @classmethod
    def for_model(cls, model: Model, captions: list[str], chunk: int = 8192) -> FixedTokenCache | None:
        """Tokenise ``captions`` in chunks, or None when the output is not fixed-width tensors (checked on a
        short and a long text)."""
        try:
            probe = [model.tokenize(["a"]), model.tokenize(["a " * 200])]
        except (TypeError, ValueError, AttributeError, RuntimeError):
            return None
        as_dict = isinstance(probe[0], dict)
        parts: list[Any] = [p if as_dict else {"": p} for p in probe]
        if not all(isinstance(v, torch.Tensor) and v.ndim == 2 for p in parts for v in p.values()):
            return None
        if any(parts[0][k].shape != parts[1][k].shape for k in parts[0]) or parts[0].keys() != parts[1].keys():
            return None
        tables: dict[str, list[np.ndarray]] = {k: [] for k in parts[0]}
        for start in range(0, len(captions), chunk):
            out: Any = model.tokenize(captions[start : start + chunk])
            for k, v in (out if as_dict else {"": out}).items():
                tables[k].append(v.numpy())
        return cls({k: np.concatenate(v) for k, v in tables.items()}, as_dict)

    def prefill(self) -> None:
        """Nothing to do: every caption was tokenised when the cache was made."""

    def __call__(self, caption_idx: np.ndarray) -> Any:
        idx = np.asarray(caption_idx, dtype=np.int64)
        out = {k: torch.from_numpy(t[idx]) for k, t in self.tables.items()}
        return out if self.as_dict else out[""]


class BatchLoader:
    """Load batches (``pixels``, ``tokens``, optional ``teacher_pixels``/``teacher_tokens``) ahead of use."""

    def __init__(
        self,
        dataset: Dataset,
        captions: list[str],
        model: Model,
        *,
        cache_images: bool = False,
        teacher: Model | None = None,
        negatives: Any = None,
        num_workers: int | None = None,
    ):
        self.dataset, self.captions, self.model, self.teacher = dataset, captions, model, teacher
        self.num_workers = max(1, check_workers(num_workers))
        self.negatives = negatives  # (texts, caption indices) -> hard-negative captions (HardNegativeSampler)
        self.cache: ImageCache | None = None
        if cache_images:
            size = model.preprocess.output_size
            if size is None:
                raise ValueError("cache_images needs a fixed preprocessed image size (a crop or exact resize)")
            self.cache = ImageCache(len(dataset), (3, int(size[0]), int(size[1])))
        self.teacher_shares_pixels = teacher is not None and (
            teacher.preprocess.fingerprint() == model.preprocess.fingerprint()
        )
        self.tokens = TokenCache.for_model(model, captions)
        if self.tokens is not None and len(captions) <= PREFILL_LIMIT:
            self.tokens.prefill()
        self._decode = (
            ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="cliplab-decode")
            if self.num_workers > 1
            else None
        )

    def _load(self, model: Model, images: np.ndarray) -> np.ndarray:
        """The preprocessed ``images`` (a float32 array), split into ``num_workers`` contiguous parts read in
        parallel. NumPy only on these threads (see ``Preprocess.normalize_array``)."""
        if self._decode is None or images.size < 2:
            return load_pixels(self.dataset, model.preprocess, images).numpy()
        parts = np.array_split(images, min(self.num_workers, images.size))
        read = self._decode.map(lambda p: load_pixels(self.dataset, model.preprocess, p).numpy(), parts)
        return np.concatenate(list(read))

    def _pixels(self, images: np.ndarray) -> torch.Tensor:
        if self.cache is None:
            return torch.from_numpy(self._load(self.model, images))
        missing = images[~self.cache.filled[images]]
        if missing.size:
            missing = np.unique(missing)
            self.cache.pixels[missing] = self._load(self.model, missing)
            self.cache.filled[missing] = True
        return torch.from_numpy(self.cache.pixels[images])

    def load(self, images: np.ndarray, captions: np.ndarray) -> dict[str, Any]:
        """The tensors of one batch (CPU)."""
        texts = [self.captions[int(c)] for c in captions]
        tokens = self.tokens(captions) if self.tokens is not None else self.model.tokenize(texts)
        batch: dict[str, Any] = {"pixels": self._pixels(images), "tokens": tokens}
        if self.teacher is not None:
            if self.teacher_shares_pixels:
                batch["teacher_pixels"] = batch["pixels"]
            else:
                batch["teacher_pixels"] = torch.from_numpy(self._load(self.teacher, images))
            batch["teacher_tokens"] = self.teacher.tokenize(texts)
        if self.negatives is not None:
            negatives = self.negatives(texts, captions)
            if negatives:
                batch["negative_tokens"] = self.model.tokenize(negatives)
        return batch

    def close(self) -> None:
        if self._decode is not None:
            self._decode.shutdown(wait=True, cancel_futures=True)


class Prefetcher:
    """The next batch prepared on one background thread while the model trains on the current one: the
    sampler's step (for a stream of shards, reading the tars) and the loader's ``load`` (decoding,
    tokenising). ``submit(state)`` returns a future of ``(batch, state after it)``; the sampler is only
    ever called from that thread, one batch at a time, so its order is the sequential one."""

    def __init__(self, sampler: Any, loader: Any):
        self.sampler, self.loader = sampler, loader
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cliplab-batches")

    def fetch(self, state: Any) -> tuple[dict[str, Any], Any]:
        """The batch at ``state`` and the state after it, on the calling thread."""
        images, captions, after = self.sampler.batch(state)
        return self.loader.load(images, captions), after

    def submit(self, state: Any) -> Future:
        return self._pool.submit(self.fetch, state)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def load_training_data(spec: str | DataSpec, split: str, options: dict[str, Any]) -> Dataset | WebDatasetStream:
    """A map-style ``Dataset`` for ``spec``, or the ``wds:`` source's stream of a spec that names shards.

    ``spec`` is parsed once, here; the parsed spec is what the data source gets.
    """
    from cliplab.data import load_dataset
    from cliplab.data.sources import wds

    parsed = DataSpec.parse(spec)
    if wds.is_stream(parsed):
        if options:
            raise ValueError(f"data.options are not used by a stream of shards ({parsed}); remove them")
        return wds.stream(parsed)
    return load_dataset(parsed, split=split, **options)


def training_captions(data: Dataset | WebDatasetStream, *, vocabulary: bool) -> list[str]:
    """The captions of map-style ``data`` (checked); of a stream's shards only when a new model needs a
    ``vocabulary`` (only their ``txt`` members are read)."""
    if isinstance(data, WebDatasetStream):
        return data.captions() if vocabulary else []
    return check_captions(data)[0]


def build_batches(
    config: Any, data: Dataset | WebDatasetStream, model: Model, env: Any, teacher: Model | None = None
) -> tuple[Any, Any]:
    """``(sampler, loader)`` for ``data`` (``load_training_data``'s result) under ``config`` (a ``TrainConfig``)."""
    per_rank = config.batch_size * config.accum_steps
    workers = check_workers(config.data.num_workers)
    negatives = None
    if config.loss.hard_negatives is not None:
        from cliplab.train.hard_negatives import HardNegativeSampler

        if config.accum_steps > 1:
            raise ValueError("loss.hard_negatives does not support accum_steps > 1")
        negatives = HardNegativeSampler(
            config.loss.hard_negatives, config.seed, cache=not isinstance(data, WebDatasetStream)
        )
    if isinstance(data, WebDatasetStream):
        from cliplab.train.streaming import StreamBatchLoader

        stream = data.sampler(
            per_rank,
            config.seed,
            env.rank,
            env.world_size,
            num_workers=config.data.shard_readers,
            buffer_size=config.data.shuffle_buffer,
        )
        return stream, StreamBatchLoader(model, teacher=teacher, negatives=negatives, num_workers=workers)
    captions, t2i = check_captions(data)
    sampler = PairSampler(t2i, len(data), per_rank, config.seed, env.rank, env.world_size)
    cache = config.data.cache_images
    if cache is None:
        size = image_cache_size(model, len(data))
        cache = size is not None and size <= config.data.cache_limit_gb * 2**30
    loader = BatchLoader(
        data, captions, model, cache_images=cache, teacher=teacher, negatives=negatives, num_workers=workers
    )
    return sampler, loader


__all__ = [
    "BatchLoader",
    "FixedTokenCache",
    "PairSampler",
    "Prefetcher",
    "SamplerState",
    "TokenCache",
    "build_batches",
    "check_captions",
    "image_cache_size",
    "load_training_data",
    "training_captions",
]
