"""NegLabel: zero-shot OOD detection with mined negative labels (Jiang et al., ICLR 2024; XueJiang16/NegLabel)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import torch

from cliplab._validation import ArrayLike, Interval, as_features, l2_normalize
from cliplab.ood.base import OODScorer

EncodeTexts = Callable[[list[str]], ArrayLike]


def builtin_words() -> list[str]:
    """The small built-in candidate pool (a few hundred generic English nouns, ``ood/wordlist.txt``)."""
    text = resources.files("cliplab.ood").joinpath("wordlist.txt").read_text(encoding="utf-8")
    return [w.strip() for w in text.splitlines() if w.strip() and not w.lstrip().startswith("#")]


def _check_n_negatives(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive count or a fraction in (0, 1], got {value!r}")
    if not isinstance(value, numbers.Integral) and value > 1:
        raise ValueError(f"a fractional {name} must be in (0, 1], got {value}")


def _check_template(value: Any, name: str) -> None:
    if not isinstance(value, str) or "{}" not in value:
        raise ValueError(f"{name} must contain '{{}}', got {value!r}")


def _check_temperature(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"temperature {name} must be positive, got {value}")


class NegLabel(OODScorer):
    """Negative-label OOD score (Jiang et al. 2024), higher = more in-distribution.

    **Mining** (``fit``): every candidate word ``w`` is embedded (``template.format(w)`` through
    ``encode_texts``, or given as ``candidate_embeddings``); its affinity to the ID labels is the
    ``percentile`` quantile of its cosines to the ``C`` ID text weights; the ``n_negatives`` candidates
    with the *lowest* affinity (farthest from every ID label) become the negative labels. ``n_negatives``
    is a count (int) or a fraction of the pool (float in (0, 1]); the paper keeps 15% of ~70k WordNet
    words (10 000 negatives) with ``percentile = 0.95``.

    **Score**: with cosines ``s_c`` (ID labels) and ``s̃_j`` (negatives) of the L2-normalised image feature,
    ``S(x) = Σ_c e^{s_c/T} / (Σ_c e^{s_c/T} + Σ_j e^{s̃_j/T})``. ``T = 0.01`` matches the official code
    (logit scale 100, ``t = 1``).

    **Grouping** (the paper's default): the negatives are shuffled (``seed``) and split into ``ngroup``
    equal groups (the ``n % ngroup`` farthest-ranked last ones are dropped first, as in the official
    code), the score is computed with each group alone and averaged over the groups. ``ngroup=None``
    uses ``clamp(n_negatives // 100, 1, 100)`` (the paper: 10 000 negatives in 100 groups of 100).

    ``candidate_embeddings [M, D]`` replaces ``encode_texts`` with a precomputed pool (``words``, when
    given with the same length, names its rows; ``exclude`` does not apply); ``n_negatives=1.0`` keeps
    the whole pool as negatives (no mining).

    ``fit(text_weights=[C, D], encode_texts=None, candidate_embeddings=None) -> self`` (the common scorer
    interface; ``train_features`` and ``labels`` are not used; the older ``fit(text_weights, encode_texts)``
    positional form still works);
    ``score(image_features [N, D]) -> [N]``. Fitted: ``negative_embeddings_ [M, D]``,
    ``negative_words_`` (when words were embedded here), ``negative_indices_`` (into the pool).
    """

    def __init__(
        self,
        words: Sequence[str] | None = None,
        *,
        n_negatives: int | float = 0.15,
        percentile: float = 0.95,
        T: float = 0.01,
        ngroup: int | None = None,
        template: str = "a photo of a {}.",
        exclude: Sequence[str] = (),
        seed: int = 0,
        batch_size: int = 1000,
    ) -> None:
        self.words = words
        self.n_negatives = n_negatives
        self.percentile = percentile
        self.T = T
        self.ngroup = ngroup
        self.template = template
        self.exclude = exclude
        self.seed = seed
        self.batch_size = batch_size
        self._validate_params()

    requires = frozenset({"text_weights"})
    _constraints = {
        "n_negatives": _check_n_negatives,
        "percentile": Interval(0, 1),
        "T": _check_temperature,
        "ngroup": Interval(1, None, closed="left", integer=True, allow_none=True),
        "template": _check_template,
        "seed": Interval(None, None, integer=True),
        "batch_size": Interval(1, None, closed="left", integer=True),
    }

    def _pool(self, encode_texts: EncodeTexts | None, candidate_embeddings: ArrayLike | None, d: int):
        if candidate_embeddings is not None:
            if encode_texts is not None:
                raise ValueError("pass either encode_texts or candidate_embeddings, not both")
            emb = as_features(candidate_embeddings, "candidate_embeddings", dim=d)
            given = None if self.words is None else list(self.words)
            words = given if given is not None and len(given) == emb.shape[0] else None
            return emb, words
        if encode_texts is None:
            raise ValueError("NegLabel.fit needs encode_texts (list[str] -> [M, D]) or candidate_embeddings")
        excluded = {e.strip().lower() for e in self.exclude}
        words = [w for w in dict.fromkeys(self.words if self.words is not None else builtin_words())]
        words = [w for w in words if w.strip() and w.strip().lower() not in excluded]
        if not words:
            raise ValueError("the candidate word list is empty")
        prompts = [self.template.format(w) for w in words]
        parts = []
        batch_size = int(self.batch_size)
        for s in range(0, len(prompts), batch_size):
            batch = encode_texts(prompts[s : s + batch_size])
            parts.append(torch.as_tensor(batch).detach().float().cpu())
        emb = as_features(torch.cat(parts), "encode_texts output", dim=d)
        if emb.shape[0] != len(prompts):
            raise ValueError(f"encode_texts returned {emb.shape[0]} embeddings for {len(prompts)} texts")
        return emb, words

    def fit(
        self,
        train_features: ArrayLike | None = None,
        labels: Any = None,
        text_weights: ArrayLike | None = None,
        *,
        encode_texts: EncodeTexts | None = None,
        candidate_embeddings: ArrayLike | None = None,
    ) -> NegLabel:
        """Mine the negatives for the ID ``text_weights`` ``[C, D]`` (``train_features``/``labels`` unused)."""
        self._validate_params()
        if text_weights is None and train_features is not None and (labels is None or callable(labels)):
            # the old positional form fit(text_weights, encode_texts): NegLabel uses no training features
            text_weights, train_features = train_features, None
            if encode_texts is None and callable(labels):
                encode_texts, labels = labels, None
        self._check_inputs(text_weights=text_weights)
        pos = l2_normalize(as_features(text_weights, "text_weights"))
        pool, words = self._pool(encode_texts, candidate_embeddings, pos.shape[1])
        pool = l2_normalize(pool)
        m = pool.shape[0]
        nneg = self.n_negatives
        k = int(nneg) if isinstance(nneg, numbers.Integral) else int(m * float(nneg))
        if not 1 <= k <= m:
            raise ValueError(f"n_negatives={self.n_negatives} selects {k} of {m} candidates; need 1..{m}")
        rows = max(1, min(4096, 2**24 // pos.shape[0]))  # torch.quantile accepts at most 2^24 elements
        affinity = torch.cat(
            [torch.quantile(pool[s : s + rows] @ pos.T, float(self.percentile), dim=1) for s in range(0, m, rows)]
        )
        order = torch.argsort(affinity, stable=True)[:k]  # farthest from the ID labels first
        ngroup = int(self.ngroup) if self.ngroup is not None else min(100, max(1, k // 100))
        if ngroup > k:
            raise ValueError(f"ngroup={ngroup} is larger than the number of negatives ({k})")
        order = order[: k - k % ngroup]
        self.pos_ = pos
        self.negative_indices_ = order
        self.negative_embeddings_ = pool[order]
        self.negative_words_ = None if words is None else [words[i] for i in order.tolist()]
        self.ngroup_ = ngroup
        g = torch.Generator().manual_seed(int(self.seed))
        self._groups = self.negative_embeddings_[torch.randperm(order.numel(), generator=g)]
        return self

    def score(self, image_features: ArrayLike) -> torch.Tensor:
        if not hasattr(self, "pos_"):
            raise RuntimeError("NegLabel is not fitted: call fit(text_weights, encode_texts) first")
        f = as_features(image_features, "image_features", dim=self.pos_.shape[1])
        out = torch.empty(f.shape[0])
        g, per = self.ngroup_, self._groups.shape[0] // self.ngroup_
        for s in range(0, f.shape[0], 4096):
            x = l2_normalize(f[s : s + 4096])
            lse_pos = torch.logsumexp(x @ self.pos_.T / self.T, 1)  # [n]
            neg = (x @ self._groups.T).mul_(1.0 / self.T).view(-1, g, per)
            top = neg.amax(2, keepdim=True)
            lse_neg = neg.sub_(top).exp_().sum(2).log_().add_(top.squeeze(2))  # in-place logsumexp: [n, G]
            # Σpos / (Σpos + Σneg_g) = sigmoid(lse_pos − lse_neg_g), averaged over the groups.
            out[s : s + 4096] = torch.sigmoid(lse_pos[:, None] - lse_neg).mean(1)
        return out
