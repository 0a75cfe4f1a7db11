"""Image–text retrieval recall@k and caption scoring (CLIPScore, RefCLIPScore).

Retrieval recall follows the CLIP_benchmark definitions (LAION-AI/CLIP_benchmark,
``clip_benchmark/metrics/zeroshot_retrieval.py``), the protocol of the CLIP paper (Radford et al., 2021)
for MS-COCO / Flickr30k:

* ``image_retrieval_recall@k`` (text → image): the share of captions whose own image is among the k
  images most similar to the caption;
* ``text_retrieval_recall@k`` (image → text): the share of images with at least one of their captions
  among the k captions most similar to the image.

CLIPScore and RefCLIPScore follow Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for
Image Captioning", EMNLP 2021 (jmhessel/clipscore).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cliplab._validation import ArrayLike, as_features, as_labels, as_tensor, l2_normalize

__all__ = ["TIES", "default_ties", "retrieval", "retrieval_ranks", "clipscore", "refclipscore"]

#: the tie-break conventions of :func:`retrieval` (``"topk"`` has no ranks: not for :func:`retrieval_ranks`)
TIES = ("pessimistic", "index", "topk")

# Number of similarity scores (float64) one chunk may hold when ``chunk_size`` is not given: 2**24 → 128 MiB.
_CHUNK_ELEMENTS = 1 << 24


def _scores(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``queries @ candidatesᵀ`` computed in float64 and rounded to float32.

    A float32 matrix product is not bitwise reproducible across shapes (BLAS picks different kernels and
    accumulation orders for different numbers of rows), so ranking on it would make the answer depend on the
    chunk size. Products computed in float64 differ only in their last bits, which the rounding to float32
    removes, so every chunking yields the same scores (and exact duplicates of a vector tie exactly).
    """
    return (queries.double() @ candidates.double().T).float()


def _chunk_rows(chunk_size: int | None, n_candidates: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // max(1, n_candidates))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return chunk_size


def _check_inputs(
    image_features: ArrayLike, text_features: ArrayLike, text_to_image: ArrayLike
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = as_features(image_features, "image_features")
    texts = as_features(text_features, "text_features", dim=images.shape[1])
    t2i = as_labels(text_to_image, "text_to_image", n=texts.shape[0]).to(images.device)
    n = images.shape[0]
    if int(t2i.max()) >= n:
        raise ValueError(f"text_to_image contains image index {int(t2i.max())} but there are only {n} images")
    counts = torch.bincount(t2i, minlength=n)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten()
        raise ValueError(
            f"{missing.numel()} image(s) have no caption (first: {missing[:5].tolist()}); "
            "every image needs at least one caption in text_to_image"
        )
    return images, texts.to(images.device), t2i


def retrieval_ranks(
    image_features: ArrayLike,
    text_features: ArrayLike,
    text_to_image: ArrayLike,
    *,
    chunk_size: int | None = None,
    ties: str = "pessimistic",
) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based rank of the first relevant item for every query, in both directions.

    With ``s(t, i) = text_features[t] · image_features[i]`` (features used as given: cosine when they are
    L2-normalised) and ``g(t) = text_to_image[t]``:

    * text → image, one rank per caption t: ``r_t = #{i ≠ g(t) : s(t, i) ≥ s(t, g(t))}``;
    * image → text, one rank per image i, with ``P_i = {t : g(t) = i}`` and ``s*_i = max_{t∈P_i} s(t, i)``:
      ``r_i = #{t ∉ P_i : s(t, i) ≥ s*_i}``.

    A query is a hit at k iff its rank is < k. ``ties`` names the tie-break (see :data:`TIES`):

    * ``"pessimistic"`` (default): **ties count against the relevant item**: a wrong candidate with exactly the
      same score as the best relevant one is ranked before it. Deterministic, never inflates recall, and gives
      recall 0 for degenerate constant features instead of a lucky guess;
    * ``"index"``: equal scores ordered by index (lowest first), what CLIP_benchmark's ``torch.topk`` would give
      were it stable: candidates are ordered by ``(−s, index)``, so
      ``r_t = #{i : s(t, i) > s(t, g(t))} + #{i < g(t) : s(t, i) = s(t, g(t))}`` and, with
      ``t*_i`` the lowest-index own caption reaching ``s*_i``, ``r_i = #{t : s(t, i) > s*_i} +
      #{t ∉ P_i, t < t*_i : s(t, i) = s*_i}``.

    :func:`retrieval` also offers ``"topk"``, CLIP_benchmark's computation itself (``torch.topk`` on the score
    matrix, ``clip_benchmark/metrics/zeroshot_retrieval.py``), whose order among equal scores is whatever
    ``topk``'s selection leaves (not by index: measured on CPU). With duplicate caption strings (class-style
    captions, COCO's repeats) image → text recall differs between the conventions.

    Ties are judged on the
    scores rounded to float32 after a float64 product, so the result is the same for every ``chunk_size``
    (float64 products of different chunkings differ in their last bits at most, which the rounding removes
    unless a product falls within ~1e-16 of a float32 rounding boundary: the only, vanishingly rare, exception).

    One pass over chunks of ``chunk_size`` captions (default: enough rows for about 2**24 scores) serves
    both directions, each score computed once: s*_i comes first from the matching pairs alone, then every
    chunk adds its column counts ``[s(t, i) ≥ s*_i]``. Memory is ``O(chunk_size · N)``: 100k images × 500k
    captions never materialise at once.

    Returns ``(text_to_image_ranks [M], image_to_text_ranks [N])`` as int64 tensors.
    """
    if ties not in TIES[:2]:
        raise ValueError(f"ties must be one of {list(TIES[:2])} for ranks, got {ties!r}")
    images, texts, t2i = _check_inputs(image_features, text_features, text_to_image)
    n, m = images.shape[0], texts.shape[0]
    rows = _chunk_rows(chunk_size, n)
    # s*_i, from the matching pairs alone (same float64-then-float32 rounding as the chunk scores)
    pos = torch.empty(m, dtype=torch.float32, device=images.device)
    for start in range(0, m, rows):
        stop = min(start + rows, m)
        pos[start:stop] = (texts[start:stop].double() * images[t2i[start:stop]].double()).sum(dim=1).float()
    best = torch.full((n,), float("-inf"), device=images.device).scatter_reduce(0, t2i, pos, "amax")
    if ties == "index":
        return _index_ranks(images, texts, t2i, pos, best, rows)
    # One pass over caption chunks serves both directions: each score is computed once.
    t2i_ranks = torch.empty(m, dtype=torch.int64, device=images.device)
    at_least_best = torch.zeros(n, dtype=torch.int64, device=images.device)  # Σ_t [s(t, i) ≥ s*_i]
    for start in range(0, m, rows):
        stop = min(start + rows, m)
        s = _scores(texts[start:stop], images)  # [c, N]
        positive = s.gather(1, t2i[start:stop, None])  # [c, 1]
        t2i_ranks[start:stop] = (s >= positive).sum(dim=1) - 1  # ≥ counts the positive itself once
        at_least_best += (s >= best[None, :]).sum(dim=0)
    # own captions reaching s*_i (the best one included) do not count against image i
    own_ties = torch.zeros(n, dtype=torch.int64, device=images.device)
    own_ties.scatter_add_(0, t2i, (pos >= best[t2i]).long())
    i2t_ranks = at_least_best - own_ties
    return t2i_ranks, i2t_ranks


def _index_ranks(
    images: torch.Tensor, texts: torch.Tensor, t2i: torch.Tensor, pos: torch.Tensor, best: torch.Tensor, rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks under CLIP_benchmark's tie-break (equal scores ordered by index), one pass over caption chunks."""
    n, m = images.shape[0], texts.shape[0]
    image_idx = torch.arange(n, device=images.device)
    caption_idx = torch.arange(m, device=images.device)
    # t*_i: the lowest-index own caption reaching s*_i
    first = torch.full((n,), m, dtype=torch.int64, device=images.device)
    first = first.scatter_reduce(0, t2i, torch.where(pos >= best[t2i], caption_idx, m), "amin")
    t2i_ranks = torch.empty(m, dtype=torch.int64, device=images.device)
    i2t_ranks = torch.zeros(n, dtype=torch.int64, device=images.device)
    for start in range(0, m, rows):
        stop = min(start + rows, m)
        s = _scores(texts[start:stop], images)  # [c, N]
        g = t2i[start:stop, None]
        positive = s.gather(1, g)
        t2i_ranks[start:stop] = (s > positive).sum(dim=1) + ((s == positive) & (image_idx[None, :] < g)).sum(dim=1)
        earlier = caption_idx[start:stop, None] < first[None, :]  # own captions after t*_i never count
        i2t_ranks += ((s > best[None, :]) | ((s == best[None, :]) & earlier)).sum(dim=0)
    return t2i_ranks, i2t_ranks


def retrieval(
    image_features: ArrayLike,
    text_features: ArrayLike,
    text_to_image: ArrayLike,
    ks: Sequence[int] = (1, 5, 10),
    *,
    chunk_size: int | None = None,
    ties: str = "pessimistic",
) -> dict[str, float]:
    """Image–text retrieval recall@k in both directions (CLIP_benchmark definitions).

    Args:
        image_features: ``[N, D]`` image embeddings.
        text_features: ``[M, D]`` caption embeddings (several captions per image allowed).
        text_to_image: ``[M]`` index of each caption's image, in ``[0, N)``; every image needs ≥ 1 caption.
        ks: cut-offs k ≥ 1.
        chunk_size: queries per chunk (``None``: automatic, about 2**24 scores per chunk). Every value gives
            the same result (see :func:`retrieval_ranks`).
        ties: the tie-break: ``"pessimistic"`` (ties count against the relevant item), ``"index"`` (equal scores
            by index) or ``"topk"`` (CLIP_benchmark's ``torch.topk``, exactly); see :func:`retrieval_ranks` and
            :func:`default_ties`.

    Returns:
        ``{"image_retrieval_recall@k": (1/M) Σ_t [r_t < k], "text_retrieval_recall@k": (1/N) Σ_i [r_i < k]}``
        for every k, with the ranks of :func:`retrieval_ranks` under ``ties``.
        "image retrieval" is text → image (find the image of a caption); "text retrieval" is image → text.

    Raises:
        ValueError: mismatched dimensions, ``text_to_image`` of the wrong length or out of range, an image
            without caption, non-finite values, or a bad k.
    """
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must hold at least one cut-off k")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every k in ks must be a positive integer, got {k!r}")
    if ties == "topk":
        return _topk_recall(image_features, text_features, text_to_image, ks, chunk_size)
    t2i_ranks, i2t_ranks = retrieval_ranks(
        image_features, text_features, text_to_image, chunk_size=chunk_size, ties=ties
    )
    out: dict[str, float] = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = float((t2i_ranks < k).double().mean())
        out[f"text_retrieval_recall@{k}"] = float((i2t_ranks < k).double().mean())
    return out


def _topk_recall(
    image_features: ArrayLike,
    text_features: ArrayLike,
    text_to_image: ArrayLike,
    ks: tuple[int, ...],
    chunk_size: int | None,
) -> dict[str, float]:
    """CLIP_benchmark's ``recall_at_k`` literally: a hit when a relevant item is among ``torch.topk(scores, k)``
    (one ``topk`` call per k, as there), rows of ``texts @ imagesᵀ`` for text → image and of its transpose for
    image → text, in chunks of rows (``topk`` works row by row, so chunking changes nothing)."""
    images, texts, t2i = _check_inputs(image_features, text_features, text_to_image)
    n, m = images.shape[0], texts.shape[0]
    t2i_hits = {k: torch.zeros(m, dtype=torch.bool, device=images.device) for k in ks}
    i2t_hits = {k: torch.zeros(n, dtype=torch.bool, device=images.device) for k in ks}
    rows = _chunk_rows(chunk_size, n)
    for start in range(0, m, rows):
        stop = min(start + rows, m)
        s = _scores(texts[start:stop], images)
        for k in ks:
            t2i_hits[k][start:stop] = (s.topk(min(k, n), dim=1).indices == t2i[start:stop, None]).any(dim=1)
    rows = _chunk_rows(chunk_size, m)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        s = _scores(images[start:stop], texts)
        own = torch.arange(start, stop, device=images.device)[:, None]
        for k in ks:
            i2t_hits[k][start:stop] = (t2i[s.topk(min(k, m), dim=1).indices] == own).any(dim=1)
    out: dict[str, float] = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = float(t2i_hits[k].double().mean())
        out[f"text_retrieval_recall@{k}"] = float(i2t_hits[k].double().mean())
    return out


def default_ties(data_spec: str | None) -> str:
    """The tie-break a data spec's retrieval uses by default: CLIP_benchmark's ``"topk"`` for its webdatasets
    (``wds:`` specs, the ``clip_benchmark`` suite), so that recall is comparable with its tables; else
    ``"pessimistic"``."""
    return "topk" if str(data_spec or "").startswith("wds:") else "pessimistic"


def _unit(x: torch.Tensor, name: str) -> torch.Tensor:
    norms = x.norm(dim=-1)
    if bool((norms == 0).any()):
        raise ValueError(f"{name} contains {int((norms == 0).sum())} all-zero vector(s); cosine is undefined")
    return l2_normalize(x)


def clipscore(image_features: ArrayLike, text_features: ArrayLike, w: float = 2.5) -> torch.Tensor:
    """CLIPScore of each image–caption pair (Hessel et al., 2021).

    ``CLIP-S(c, v) = w · max(cos(c, v), 0)`` for the i-th image and the i-th caption, w = 2.5 by default.
    Features are L2-normalised here. The paper embeds captions with the prefix ``"A photo depicts "``
    (the caller's job; see ``cliplab score``). Note torchmetrics' ``CLIPScore`` reports
    ``100 · cos`` averaged and clamped after averaging, a different scale.

    Args:
        image_features: ``[N, D]``.
        text_features: ``[N, D]``, one caption per image.
        w: weight (the paper's 2.5 stretches the usual cosine range of CLIP ViT-B/32 towards [0, 1]).

    Returns:
        ``[N]`` float32 tensor of per-pair scores (average it for the corpus-level CLIPScore).
    """
    img = as_features(image_features, "image_features")
    txt = as_features(text_features, "text_features", dim=img.shape[1])
    if img.shape[0] != txt.shape[0]:
        raise ValueError(f"image_features has {img.shape[0]} rows but text_features has {txt.shape[0]}: one per pair")
    cos = (_unit(img, "image_features") * _unit(txt.to(img.device), "text_features")).sum(dim=-1)
    return float(w) * cos.clamp_min(0.0)


def _reference_max_cos(candidates: torch.Tensor, references: ArrayLike | Sequence[ArrayLike]) -> torch.Tensor:
    n, d = candidates.shape
    if isinstance(references, list | tuple):
        if len(references) != n:
            raise ValueError(f"references has {len(references)} groups but there are {n} candidates")
        out = torch.empty(n, dtype=torch.float32, device=candidates.device)
        for i, group in enumerate(references):
            refs = _unit(as_features(group, f"references[{i}]", dim=d).to(candidates.device), f"references[{i}]")
            out[i] = (refs @ candidates[i]).max()
        return out
    refs = as_tensor(references, "references", ndim=3)
    if refs.shape[0] != n or refs.shape[2] != d:
        raise ValueError(f"references has shape {tuple(refs.shape)}, expected [{n}, R, {d}]")
    refs = _unit(refs.to(candidates.device), "references")
    return torch.einsum("nrd,nd->nr", refs, candidates).amax(dim=1)


def refclipscore(
    image_features: ArrayLike,
    text_features: ArrayLike,
    reference_features: ArrayLike | Sequence[ArrayLike],
    w: float = 2.5,
) -> torch.Tensor:
    """RefCLIPScore of each candidate caption (Hessel et al., 2021), using human references too.

    ``RefCLIP-S(c, R, v) = H-Mean(CLIP-S(c, v), max(max_{r∈R} cos(c, r), 0))`` with the harmonic mean
    ``H(a, b) = 2ab / (a + b)`` (defined as 0 when a = b = 0) and CLIP-S from :func:`clipscore` (w included,
    so the two terms are on different scales, as in the paper and jmhessel/clipscore). The clip of the
    reference term at 0 follows the paper; the released script omits it (it only matters when every
    reference has negative cosine with the candidate).

    Args:
        image_features: ``[N, D]``.
        text_features: ``[N, D]`` candidate captions, one per image.
        reference_features: ``[N, R, D]``, or a list of N arrays ``[R_i, D]`` (R_i ≥ 1 may vary).
        w: CLIP-S weight.

    Returns:
        ``[N]`` float32 tensor of per-candidate scores.
    """
    clip_s = clipscore(image_features, text_features, w=w)
    cand = _unit(as_features(text_features, "text_features"), "text_features").to(clip_s.device)
    ref = _reference_max_cos(cand, reference_features).clamp_min(0.0)
    denom = clip_s + ref
    return torch.where(denom > 0, 2 * clip_s * ref / denom.clamp_min(torch.finfo(denom.dtype).tiny), 0.0)
