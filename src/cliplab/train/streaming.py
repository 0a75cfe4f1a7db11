"""Streaming training data: decoding and preprocessing the batches of a ``wds:`` shard stream.

The stream itself (shard order, shuffle buffer, resumable ``StreamState``) is the ``wds:`` data source's
streaming mode, :mod:`cliplab.data.streaming`: ``cliplab.data.sources.wds.stream(spec)`` gives a
``WebDatasetStream`` whose ``sampler(...)`` is a ``ShardStream``. This module adds what needs a model:
:class:`StreamBatchLoader` decodes (:func:`decode_sample`) and preprocesses a batch of raw samples ahead.
``is_stream_spec`` / ``resolve_shards`` / ``stream_captions`` are kept for callers of the older names.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image

from cliplab.data.sources.wds import is_stream, stream
from cliplab.data.spec import DataSpec
from cliplab.data.streaming import IMAGE_EXTENSIONS, ShardStream, StreamState, WebDatasetStream, stream_captions
from cliplab.imaging.decoding import decode_image
from cliplab.models.base import Model

log = logging.getLogger(__name__)


def is_stream_spec(spec: str | DataSpec) -> bool:
    """Whether a ``data.train`` spec names tar shards to stream (``cliplab.data.sources.wds.is_stream``)."""
    return is_stream(spec)


def resolve_shards(spec: str | DataSpec) -> list[str]:
    """The local shard paths of a stream spec (hub shards are downloaded into the cliplab cache first)."""
    return list(stream(spec).shards)


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
    "WebDatasetStream",
    "decode_sample",
    "is_stream_spec",
    "resolve_shards",
    "stream_captions",
]
