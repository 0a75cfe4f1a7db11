"""Hard negatives for training: ``loss.hard_negatives`` in the config adds rewritten captions to each batch.

For each caption of a batch the loader draws ``per_caption`` rewrites (``cliplab.data.caption_negatives``:
swapped colours or shapes, flipped relations, replaced words, shuffled order) among the ``types`` that apply to
it, deterministically from ``(seed, caption index, draw)`` (on a stream of shards the index is a hash of the
sample's shard name and key); the objective scores them as extra text columns against every image
(``cliplab.losses.hard_negatives.hard_negative_clip_loss``). One process, no gradient accumulation, the
``clip`` loss.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cliplab.data.caption_negatives import CAPTION_NEGATIVE_TYPES, caption_negatives


@dataclass
class HardNegativeOptions:
    """``types``: rewrite types to draw from (default all); ``per_caption``: negatives per caption;
    ``lexicon``: word classes ``{"att": [...], "obj": [...]}`` (default the built-in world's colours and shapes)."""

    types: list[str] = field(default_factory=lambda: list(CAPTION_NEGATIVE_TYPES))
    per_caption: int = 1
    lexicon: dict[str, list[str]] | None = None

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in CAPTION_NEGATIVE_TYPES]
        if unknown or not self.types:
            raise ValueError(
                f"loss.hard_negatives.types: unknown or empty {unknown or self.types}; "
                f"accepted: {', '.join(CAPTION_NEGATIVE_TYPES)}"
            )
        if self.per_caption < 1:
            raise ValueError(f"loss.hard_negatives.per_caption must be >= 1, got {self.per_caption}")


def sample_index(sample: dict) -> int:
    """A stream sample's stand-in for a caption index: a stable 63-bit hash of its shard's file name and its key,
    the same in every run, process and epoch (the shard's directory may move)."""
    name = f"{os.path.basename(str(sample['__shard__']))}/{sample['__key__']}"
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 1


class HardNegativeSampler:
    """``sampler(texts, caption_indices) -> negative captions`` for one batch (some captions may have none).

    ``cache``: keep each caption's rewrites (map-style data, whose captions recur every epoch); a stream of
    shards rewrites its captions as they come (its "indices" are ``sample_index`` hashes)."""

    def __init__(self, options: HardNegativeOptions, seed: int = 0, *, cache: bool = True):
        self.options, self.seed = options, seed
        self._cache: dict[int, list[str]] | None = {} if cache else None

    def candidates(self, caption: str, index: int) -> list[str]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rng = np.random.default_rng([self.seed, index, 6151])
        found = list(caption_negatives(caption, rng, types=self.options.types, lexicon=self.options.lexicon).values())
        if self._cache is not None:
            self._cache[index] = found
        return found

    def __call__(self, texts: Sequence[str], caption_indices: Sequence[int], epoch_key: int = 0) -> list[str]:
        out: list[str] = []
        for text, index in zip(texts, np.asarray(caption_indices).tolist()):
            pool = self.candidates(text, int(index))
            if not pool:
                continue
            rng = np.random.default_rng([self.seed, int(index), epoch_key, 8837])
            k = min(self.options.per_caption, len(pool))
            out.extend(pool[j] for j in rng.choice(len(pool), k, replace=False))
        return out


__all__ = ["HardNegativeOptions", "HardNegativeSampler", "sample_index"]
