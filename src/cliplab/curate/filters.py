"""Curation filters as pure functions: each returns ``{pair index: reason}`` for the pairs it removes.

* caption length (words) and a language rule (share of Latin letters among the letters, and an optional
  minimum share of words from a vocabulary);
* CLIP-score filtering (DataComp, Gadre et al. 2023): keep the pairs whose image–caption cosine is at least a
  threshold, or the top fraction (DataComp keeps the top 30% by OpenAI ViT-L/14 score);
* near-duplicates (``dedup``): through a cosine nearest-neighbour index (``cliplab.index.VectorIndex``, FAISS when
  installed), greedily in input order: a pair is removed when an earlier *kept* pair is at cosine ≥ threshold;
* MetaCLIP balancing (Xu et al. 2024): captions matched to a concept list by substring, ``count(c)`` pairs per
  concept; a pair is kept with probability ``t / max(count(c), t)`` for one of its concepts (kept if any concept
  keeps it); unmatched pairs are removed. The draw of a pair depends only on ``seed`` and its content, so the
  same pair gets the same draw in any file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

import numpy as np


def length_filter(captions: Sequence[str], min_words: int = 0, max_words: int | None = None) -> dict[int, str]:
    """Captions with fewer than ``min_words`` or more than ``max_words`` words."""
    out = {}
    for i, c in enumerate(captions):
        n = len(c.split())
        if n < min_words:
            out[i] = f"caption has {n} word(s), fewer than {min_words}"
        elif max_words is not None and n > max_words:
            out[i] = f"caption has {n} words, more than {max_words}"
    return out


_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_LATIN = re.compile(r"[A-Za-z\u00C0-\u024F]")


def language_filter(
    captions: Sequence[str], min_latin: float = 0.0, vocabulary: Sequence[str] | None = None, min_known: float = 0.0
) -> dict[int, str]:
    """Captions whose letters are less than ``min_latin`` Latin, or whose words are less than ``min_known``
    in ``vocabulary`` (e.g. an English word list)."""
    vocab = {w.lower() for w in vocabulary} if vocabulary else None
    out = {}
    for i, c in enumerate(captions):
        letters = _LETTER.findall(c)
        latin = len(_LATIN.findall(c)) / len(letters) if letters else 0.0
        if latin < min_latin:
            out[i] = f"{latin:.0%} of the letters are Latin, below {min_latin:.0%}"
            continue
        if vocab is not None and min_known > 0:
            words = re.findall(r"[a-z']+", c.lower())
            known = sum(w in vocab for w in words) / len(words) if words else 0.0
            if known < min_known:
                out[i] = f"{known:.0%} of the words are in the vocabulary, below {min_known:.0%}"
    return out


def clip_score_threshold(scores: np.ndarray, top_fraction: float) -> float:
    """The cosine at which the top ``top_fraction`` of ``scores`` (finite ones) are kept."""
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"the CLIP-score top fraction must be in (0, 1], got {top_fraction}")
    s = np.sort(scores[np.isfinite(scores)])[::-1]
    if s.size == 0:
        return float("inf")
    return float(s[max(0, int(np.ceil(top_fraction * s.size)) - 1)])


def clip_score_filter(scores: np.ndarray, threshold: float) -> dict[int, str]:
    """Pairs whose image–caption cosine is below ``threshold`` (NaN scores are left to other filters)."""
    return {
        int(i): f"CLIP score {scores[i]:.4f} below {threshold:.4f}"
        for i in np.nonzero(np.isfinite(scores) & (scores < threshold))[0]
    }


def near_duplicates(
    features: np.ndarray,
    threshold: float,
    *,
    candidates: Sequence[int] | np.ndarray | None = None,
    groups: np.ndarray | None = None,
    k: int = 16,
    what: str = "pair",
) -> dict[int, str]:
    """Greedy near-duplicate removal in index order among ``candidates`` (default: all rows).

    Row ``i`` is removed when a kept row ``j < i`` has cosine ≥ ``threshold`` with it. ``groups``: rows in the
    same group never count as duplicates of each other (e.g. the captions of one image when deduplicating
    images). Neighbours come from a :class:`~cliplab.index.VectorIndex` (``k`` per row, exact below 100k rows).
    """
    from cliplab.index import VectorIndex

    rows = np.arange(len(features)) if candidates is None else np.asarray(sorted(candidates), dtype=np.int64)
    if rows.size < 2:
        return {}
    x = np.asarray(features, dtype=np.float32)[rows]
    index = VectorIndex.build(x, kind="flat", target_recall=None)
    n = rows.size
    k = min(k, n)
    scores, ids = (t.numpy() for t in index.search(x, k=k))
    neighbours = [(scores[a], ids[a]) for a in range(n)]
    more = np.nonzero(scores[:, -1] >= threshold)[0] if k < n else np.zeros(0, dtype=np.int64)
    while more.size:  # a full neighbour list above the threshold may hide more duplicates: look further
        k = min(2 * k, n)
        s2, i2 = (t.numpy() for t in index.search(x[more], k=k))
        for j, row in enumerate(more):
            neighbours[row] = (s2[j], i2[j])
        more = more[s2[:, -1] >= threshold] if k < n else np.zeros(0, dtype=np.int64)
    kept = np.zeros(rows.size, dtype=bool)
    out: dict[int, str] = {}
    for a in range(rows.size):
        dup = None
        for s, b in zip(*neighbours[a]):
            if b < 0 or b >= a or s < threshold or not kept[b]:
                continue
            if groups is not None and groups[rows[a]] == groups[rows[b]]:
                continue
            dup = (int(b), float(s))
            break
        if dup is None:
            kept[a] = True
        else:
            out[int(rows[a])] = f"near-duplicate {what} of row {int(rows[dup[0]])} (cosine {dup[1]:.4f})"
    return out


def match_concepts(captions: Sequence[str], concepts: Sequence[str]) -> list[list[str]]:
    """The concepts each caption contains (MetaCLIP's substring match, lower-cased, on word boundaries)."""
    patterns = [(c, re.compile(rf"(?<!\w){re.escape(c.lower())}(?!\w)")) for c in dict.fromkeys(concepts)]
    return [[c for c, p in patterns if p.search(cap.lower())] for cap in captions]


def _uniform(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def balance(
    captions: Sequence[str],
    keys: Sequence[str],
    concepts: Sequence[str],
    t: int,
    *,
    seed: int = 0,
    counts: Mapping[str, int] | None = None,
) -> tuple[dict[int, str], dict[str, int]]:
    """MetaCLIP balancing; returns ``(removed, counts)``. ``keys``: a content key per pair (the draw's seed);
    ``counts``: the per-concept counts to use (default: counted here; pass the raw data's to re-apply)."""
    if t < 1:
        raise ValueError(f"the balancing threshold t must be >= 1, got {t}")
    matched = match_concepts(captions, concepts)
    if counts is None:
        counted: dict[str, int] = dict.fromkeys(dict.fromkeys(concepts), 0)
        for ms in matched:
            for c in ms:
                counted[c] += 1
        counts = counted
    bad = {c: n for c, n in counts.items() if isinstance(n, bool) or not isinstance(n, int) or n < 0}
    if bad:
        raise ValueError(f"balancing counts must be non-negative integers, got {bad}")
    out = {}
    for i, ms in enumerate(matched):
        if not ms:
            out[i] = "caption matches no concept of the balancing list"
            continue
        keep = any(_uniform(seed, f"{keys[i]}\x00{c}") < t / max(counts.get(c, 0), t) for c in ms)
        if not keep:
            worst = max(ms, key=lambda c: counts.get(c, 0))
            out[i] = f"balancing: concept {worst!r} has {counts.get(worst, 0)} pairs, kept with p = t/count"
    return out, dict(counts)
