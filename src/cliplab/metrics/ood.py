"""OOD detection metrics from detector scores (higher score = more in-distribution). NumPy only.

* AUROC: Mann–Whitney U with average ranks for ties, ``P(s_ID > s_OOD) + ½·P(s_ID = s_OOD)``
  (equal to ``sklearn.metrics.roc_auc_score``).
* AUPR: average precision ``Σ_n (R_n − R_{n−1})·P_n`` over the distinct score thresholds (equal to
  ``sklearn.metrics.average_precision_score``, the MCM convention; OpenOOD integrates the PR curve with
  the trapezoid rule instead, which differs slightly).
* FPR@95: the conventions of the reference implementations, each under its own name (see ``ood_metrics``):
  ``fpr95`` (cliplab's: the largest threshold keeping at least 95% of ID), ``fpr95_vim`` (haoqiwang/vim
  ``fpr_recall``: ``⌊0.95·n_ID⌋``-th largest ID score), ``fpr95_mcm`` (deeplearning-wisc/MCM and Hendrycks'
  ``fpr_and_fdr_at_recall``: the distinct-score threshold whose ID recall is closest to 0.95) and
  ``fpr95_openood`` (OpenOOD v1.5: OOD positive, ID rejected at 95% OOD recall).
"""

from __future__ import annotations

import math

import numpy as np

from cliplab._validation import ArrayLike, as_tensor


def _scores(x: ArrayLike, name: str) -> np.ndarray:
    return as_tensor(x, name, dtype=None, ndim=1).double().numpy()


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (``scipy.stats.rankdata(method="average")``)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]  # exclusive
    avg = (starts + 1 + ends) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auroc(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the ROC curve with ID as the positive class (Mann–Whitney, ties count ½)."""
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    return _auroc(s_in, s_out)


def _auroc(s_in: np.ndarray, s_out: np.ndarray) -> float:
    n_in, n_out = s_in.size, s_out.size
    ranks = average_ranks(np.concatenate([s_in, s_out]))
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2.0
    return float(u / (n_in * n_out))


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """``Σ_n (R_n − R_{n−1})·P_n``, thresholds at the distinct scores, descending (sklearn's definition).

    Tied scores form one threshold: all of them are counted as predicted positive together.
    """
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order].astype(np.float64)
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # last index of each tie group
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _kth_largest_count(n: int, level: float) -> int:
    # smallest k with k / n >= level; round() guards against 0.95 * 100 = 95.00000000000001
    return max(1, math.ceil(round(level * n, 9)))


def fpr_at_recall(id_scores: ArrayLike, ood_scores: ArrayLike, recall: float = 0.95) -> float:
    """MCM/ViM convention: share of OOD samples accepted at the threshold that keeps ``recall`` of ID.

    The threshold ``t`` is the k-th largest ID score with ``k = ⌈recall·n_ID⌉``, the largest threshold
    such that at least ``recall`` of the ID samples have ``score ≥ t``; FPR = mean(OOD score ≥ t).
    """
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    return _fpr_at_recall(s_in, s_out, recall)


def _fpr_at_recall(s_in: np.ndarray, s_out: np.ndarray, recall: float) -> float:
    k = _kth_largest_count(s_in.size, recall)
    t = np.sort(s_in)[::-1][k - 1]
    return float(np.mean(s_out >= t))


def fpr_at_recall_vim(id_scores: ArrayLike, ood_scores: ArrayLike, recall: float = 0.95) -> float:
    """haoqiwang/vim's ``fpr_recall``: ``t`` = the ``k``-th largest ID score with ``k = ⌊recall·n_ID⌋``
    (no rounding guard, as the reference); FPR = mean(OOD score ≥ t). ``k = 0`` takes the *smallest* ID
    score, as the reference's ``np.sort(x)[-0]`` does."""
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    return _fpr_vim(s_in, s_out, recall)


def _fpr_vim(s_in: np.ndarray, s_out: np.ndarray, recall: float) -> float:
    k = int(np.floor(recall * s_in.size))
    ordered = np.sort(s_in)
    t = ordered[0] if k == 0 else ordered[s_in.size - k]
    return float(np.mean(s_out >= t))


def fpr_at_recall_mcm(id_scores: ArrayLike, ood_scores: ArrayLike, recall: float = 0.95) -> float:
    """MCM's (and Hendrycks et al.'s) ``fpr_and_fdr_at_recall`` with ID positive.

    Thresholds are the distinct scores, descending; at each, ``recall_t = #(ID ≥ t)/n_ID`` and
    ``FP_t = #(OOD ≥ t)``. Among the thresholds down to the first with full recall, the one whose
    ``|recall_t − recall|`` is smallest is chosen (on a tie, the one with the larger recall, as the
    reference's reversed ``argmin`` does); FPR = ``FP_t / n_OOD``.
    """
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    return _fpr_mcm(s_in, s_out, recall)


def _fpr_mcm(s_in: np.ndarray, s_out: np.ndarray, recall: float) -> float:
    s = np.concatenate([s_in, s_out])
    positive = np.r_[np.ones(s_in.size), np.zeros(s_out.size)]
    order = np.argsort(-s, kind="mergesort")
    s, positive = s[order], positive[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # last index of each tie group
    tps = np.cumsum(positive)[last]
    fps = last + 1 - tps
    full = int(np.searchsorted(tps, tps[-1]))  # first threshold reaching full recall
    gap = np.abs(tps[: full + 1] / tps[-1] - recall)
    cutoff = int(np.flatnonzero(gap == gap.min())[-1])
    return float(fps[cutoff] / s_out.size)


def ood_metrics(id_scores: ArrayLike, ood_scores: ArrayLike) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out, FPR@95 (two conventions) for one ID/OOD pair.

    * ``auroc``: ID positive (ties count ½).
    * ``aupr_in``: average precision with ID positive, ranked by ``score``.
    * ``aupr_out``: average precision with OOD positive, ranked by ``−score``.
    * ``fpr95``: MCM/ViM/CLIPN convention, share of OOD samples with ``score ≥ t`` where ``t`` is the
      k-th largest ID score, ``k = ⌈0.95·n_ID⌉`` (so at least 95% of ID samples have ``score ≥ t``).
    * ``fpr95_vim``: haoqiwang/vim's ``fpr_recall`` (``k = ⌊0.95·n_ID⌋``, see ``fpr_at_recall_vim``).
    * ``fpr95_mcm``: MCM's ``fpr_and_fdr_at_recall`` (recall closest to 0.95, see ``fpr_at_recall_mcm``).
    * ``fpr95_openood``: OpenOOD v1.5 convention (OOD = positive, ranked by ``−score``): share of ID
      samples rejected (``score ≤ t'``) at the threshold ``t'`` = the k-th smallest OOD score,
      ``k = ⌈0.95·n_OOD⌉``, i.e. when at least 95% of the OOD samples are rejected (the first point of
      ``roc_curve(ood, −score)`` with TPR ≥ 0.95).

    The first three coincide when ``0.95·n_ID`` is an integer and no scores tie at the threshold.

    All values are in [0, 1]; higher is better for AUROC/AUPR, lower for the FPRs.
    """
    s_in, s_out = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    labels = np.r_[np.ones(s_in.size, dtype=bool), np.zeros(s_out.size, dtype=bool)]
    both = np.concatenate([s_in, s_out])
    return {
        "auroc": _auroc(s_in, s_out),
        "aupr_in": average_precision(both, labels),
        "aupr_out": average_precision(-both, ~labels),
        "fpr95": _fpr_at_recall(s_in, s_out, 0.95),
        "fpr95_vim": _fpr_vim(s_in, s_out, 0.95),
        "fpr95_mcm": _fpr_mcm(s_in, s_out, 0.95),
        "fpr95_openood": _fpr_at_recall(-s_out, -s_in, 0.95),
    }
