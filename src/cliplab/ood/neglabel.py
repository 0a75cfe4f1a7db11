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


#: NegLabel's prompt templates (XueJiang16/NegLabel): nouns and the ID classes, adjectives
NOUN_TEMPLATE = "The nice {}."
ADJECTIVE_TEMPLATE = "This is a {} photo"
#: how ``NegLabel.source_`` names the built-in list, wherever results are shown
BUILTIN_SOURCE = "builtin word list (offline fallback, not NegLabel's WordNet pool)"
SOURCES = ("auto", "wordnet", "builtin")


def builtin_words() -> list[str]:
    """The small built-in candidate pool (a few hundred generic English nouns, ``ood/wordlist.txt``): the
    offline fallback when WordNet is not installed; results name it (``BUILTIN_SOURCE``)."""
    text = resources.files("cliplab.ood").joinpath("wordlist.txt").read_text(encoding="utf-8")
    return [w.strip() for w in text.splitlines() if w.strip() and not w.lstrip().startswith("#")]


def _check_n_negatives(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise ValueError(f"{name} must be a positive count or a fraction in (0, 1], got {value!r}")
    if not isinstance(value, numbers.Integral) and float(value) > 1:
        raise ValueError(f"a fractional {name} must be in (0, 1], got {value}")


def _check_template(value: Any, name: str) -> None:
    if not isinstance(value, str) or "{}" not in value:
        raise ValueError(f"{name} must contain '{{}}', got {value!r}")


def _check_source(value: Any, name: str) -> None:
    if value not in SOURCES:
        raise ValueError(f"{name} must be one of {SOURCES}, got {value!r}")


def _check_temperature(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise ValueError(f"temperature {name} must be positive, got {value}")


class NegLabel(OODScorer):
    """Negative-label OOD score (Jiang et al. 2024), higher = more in-distribution.

    **Candidates** (the official recipe): WordNet's single-word nouns and adjectives (``cliplab.ood.wordnet``:
    57 506 nouns and 17 879 further adjectives in WordNet 3.0, a word listed as both counted once, as a
    noun), nouns embedded as ``template`` (``"The nice {}."``) and adjectives as ``adjective_template``
    (``"This is a {} photo"``). ``source="auto"`` (default) uses WordNet when it is installed and falls
    back to the small built-in noun list otherwise; ``source_`` says which was used (``BUILTIN_SOURCE``
    for the fallback) and assess/bench results carry it. ``words`` / ``adjectives`` give the pools
    explicitly; ``candidate_embeddings`` a precomputed one.

    **Mining** (``fit``): a candidate's affinity to the ID labels is the ``percentile`` quantile of its
    cosines to the ``C`` ID text weights (embed the class names with ``template`` too, as the reference
    does: ``ood_evaluation`` does when it has the class names); in each part of speech separately the
    candidates with the *lowest* affinity (farthest from every ID label) become negatives, nouns first.
    ``n_negatives`` is a fraction of each pool (float in (0, 1]; the paper keeps 15% of each, about 11k
    negatives, with ``percentile = 0.95``) or a count over the whole pool (int).

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
    ``negative_words_`` (when words were embedded here), ``negative_indices_`` (into the pool),
    ``source_`` (where the candidates came from), ``n_candidates_``.
    """

    def __init__(
        self,
        words: Sequence[str] | None = None,
        *,
        adjectives: Sequence[str] | None = None,
        source: str = "auto",
        wordnet_root: str | None = None,
        n_negatives: int | float = 0.15,
        percentile: float = 0.95,
        T: float = 0.01,
        ngroup: int | None = None,
        template: str = NOUN_TEMPLATE,
        adjective_template: str = ADJECTIVE_TEMPLATE,
        exclude: Sequence[str] = (),
        seed: int = 0,
        batch_size: int = 1000,
    ) -> None:
        self.words = words
        self.adjectives = adjectives
        self.source = source
        self.wordnet_root = wordnet_root
        self.adjective_template = adjective_template
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
        "adjective_template": _check_template,
        "source": _check_source,
        "seed": Interval(None, None, integer=True),
        "batch_size": Interval(1, None, closed="left", integer=True),
    }

    def _word_pools(self) -> tuple[list[tuple[str, list[str], str]], str]:
        """``[(part of speech, words, template)]`` and the name of their source."""
        if self.words is not None or self.adjectives is not None:
            pools = [("noun", list(self.words or ()), self.template)]
            pools.append(("adj", list(self.adjectives or ()), self.adjective_template))
            return pools, "given words"
        from cliplab.ood.wordnet import find_wordnet, wordnet_words

        root = find_wordnet(self.wordnet_root) if self.source != "builtin" else None
        if root is None:
            if self.source == "wordnet":
                wordnet_words("noun")  # raises the FileNotFoundError saying how to install it
            return [("noun", builtin_words(), self.template)], BUILTIN_SOURCE
        nouns = wordnet_words("noun", root)
        seen = set(nouns)
        adjectives = [w for w in wordnet_words("adj", root) if w not in seen]  # the reference's dedup
        return [("noun", nouns, self.template), ("adj", adjectives, self.adjective_template)], f"WordNet ({root})"

    def _embed(self, prompts: list[str], encode_texts: EncodeTexts, d: int) -> torch.Tensor:
        parts = []
        batch_size = int(self.batch_size)
        for s in range(0, len(prompts), batch_size):
            batch = encode_texts(prompts[s : s + batch_size])
            parts.append(torch.as_tensor(batch).detach().float().cpu())
        emb = as_features(torch.cat(parts), "encode_texts output", dim=d)
        if emb.shape[0] != len(prompts):
            raise ValueError(f"encode_texts returned {emb.shape[0]} embeddings for {len(prompts)} texts")
        return emb

    def _pool(self, encode_texts: EncodeTexts | None, candidate_embeddings: ArrayLike | None, d: int):
        """``[(embeddings, words or None)]`` per part of speech, and the source's name."""
        if candidate_embeddings is not None:
            if encode_texts is not None:
                raise ValueError("pass either encode_texts or candidate_embeddings, not both")
            emb = as_features(candidate_embeddings, "candidate_embeddings", dim=d)
            given = None if self.words is None else list(self.words)
            words = given if given is not None and len(given) == emb.shape[0] else None
            return [(emb, words)], "candidate_embeddings"
        if encode_texts is None:
            raise ValueError("NegLabel.fit needs encode_texts (list[str] -> [M, D]) or candidate_embeddings")
        excluded = {e.strip().lower() for e in self.exclude}
        pools, source = self._word_pools()
        out = []
        for _, words, template in pools:
            words = [w for w in dict.fromkeys(words) if w.strip() and w.strip().lower() not in excluded]
            if words:
                out.append((self._embed([template.format(w) for w in words], encode_texts, d), words))
        if not out:
            raise ValueError("the candidate word list is empty")
        return out, source

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
        pos = l2_normalize(as_features(self._required(text_weights, "text_weights"), "text_weights"))
        parts, self.source_ = self._pool(encode_texts, candidate_embeddings, pos.shape[1])
        pool = l2_normalize(torch.cat([emb for emb, _ in parts]))
        words = None if any(w is None for _, w in parts) else [w for _, ws in parts for w in ws]
        m = pool.shape[0]
        rows = max(1, min(4096, 2**24 // pos.shape[0]))  # torch.quantile accepts at most 2^24 elements
        affinity = torch.cat(
            [torch.quantile(pool[s : s + rows] @ pos.T, float(self.percentile), dim=1) for s in range(0, m, rows)]
        )
        nneg = self.n_negatives
        if isinstance(nneg, numbers.Integral):  # a count over the whole pool
            k = int(nneg)
            if not 1 <= k <= m:
                raise ValueError(f"n_negatives={self.n_negatives} selects {k} of {m} candidates; need 1..{m}")
            order = torch.argsort(affinity, stable=True)[:k]  # farthest from the ID labels first
        else:  # the same fraction of each part of speech, nouns first (the reference's concatenation)
            chosen, start = [], 0
            for emb, _ in parts:
                n = emb.shape[0]
                take = int(n * float(nneg))
                chosen.append(start + torch.argsort(affinity[start : start + n], stable=True)[:take])
                start += n
            order = torch.cat(chosen)
            k = order.numel()
            if k < 1:
                raise ValueError(f"n_negatives={self.n_negatives} selects no candidate of {m}")
        self.n_candidates_ = m
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
