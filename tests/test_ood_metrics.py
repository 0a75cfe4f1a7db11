"""ood_metrics against scikit-learn (with ties) and plain loops for the two FPR@95 conventions."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from cliplab.metrics import ood_metrics
from cliplab.metrics.ood import average_ranks


def _sklearn(id_s, ood_s):
    y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
    s = np.r_[id_s, ood_s]
    return roc_auc_score(y, s), average_precision_score(y, s), average_precision_score(1 - y, -s)


def _fpr95_loop(id_s, ood_s):
    # largest threshold t (among the ID scores) with #(ID ≥ t) ≥ 0.95·n_ID; share of OOD ≥ t
    best = None
    for t in sorted(set(id_s)):
        if sum(s >= t for s in id_s) >= 0.95 * len(id_s) - 1e-9:
            best = t
    return sum(s >= best for s in ood_s) / len(ood_s)


def _fpr95_openood(id_s, ood_s):
    # OpenOOD v1.5 metrics.py: OOD positive, roc_curve on −conf, first point with TPR ≥ 0.95
    y = np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))]
    fpr, tpr, _ = roc_curve(y, -np.r_[id_s, ood_s], drop_intermediate=False)
    return fpr[np.argmax(tpr >= 0.95)]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_sklearn_and_loops(seed, ties):
    rng = np.random.default_rng(seed)
    n_in, n_out = rng.integers(20, 300, size=2)
    id_s = rng.normal(1.0, 1.0, n_in)
    ood_s = rng.normal(0.0, 1.5, n_out)
    if ties:  # heavy ties inside and across the two sets
        id_s, ood_s = np.round(id_s * 2), np.round(ood_s * 2)
    m = ood_metrics(id_s, ood_s)
    auroc, ap_in, ap_out = _sklearn(id_s, ood_s)
    assert m["auroc"] == pytest.approx(auroc, abs=1e-12)
    assert m["aupr_in"] == pytest.approx(ap_in, abs=1e-12)
    assert m["aupr_out"] == pytest.approx(ap_out, abs=1e-12)
    assert m["fpr95"] == pytest.approx(_fpr95_loop(list(id_s), list(ood_s)), abs=1e-12)
    assert m["fpr95_openood"] == pytest.approx(_fpr95_openood(id_s, ood_s), abs=1e-12)
    assert set(m) == {"auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_vim", "fpr95_mcm", "fpr95_openood"}
    assert all(isinstance(v, float) for v in m.values())


def test_fpr95_threshold_definition():
    id_s = np.arange(1, 101, dtype=float)  # 100 ID scores 1..100
    # threshold = 6 (95 of 100 ID scores are ≥ 6); OOD scores ≥ 6 count, 5.9 does not
    m = ood_metrics(id_s, np.array([5.9, 6.0, 50.0, 0.0]))
    assert m["fpr95"] == pytest.approx(0.5)
    # n = 10: ⌈9.5⌉ = 10 ⇒ the threshold is the smallest ID score (all ID kept)
    m = ood_metrics(np.arange(10.0), np.array([-0.5, 0.0, 3.0]))
    assert m["fpr95"] == pytest.approx(2 / 3)


def test_perfect_and_reversed_separation():
    id_s, ood_s = torch.linspace(1, 2, 50), torch.linspace(-2, -1, 30)
    m = ood_metrics(id_s, ood_s)
    perfect = {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0, "fpr95_vim": 0.0, "fpr95_mcm": 0.0}
    assert m == pytest.approx({**perfect, "fpr95_openood": 0.0})
    r = ood_metrics(ood_s, id_s)
    assert r["auroc"] == 0.0 and r["fpr95"] == 1.0 and r["fpr95_openood"] == 1.0
    same = ood_metrics(np.zeros(10), np.zeros(5))
    assert same["auroc"] == 0.5 and same["aupr_in"] == pytest.approx(10 / 15)


def test_average_ranks_match_scipy():
    from scipy.stats import rankdata

    x = np.random.default_rng(0).integers(0, 7, 200).astype(float)
    np.testing.assert_allclose(average_ranks(x), rankdata(x, method="average"))


def test_errors():
    with pytest.raises(ValueError, match="ood_scores is empty"):
        ood_metrics(np.ones(3), np.array([]))
    with pytest.raises(ValueError, match="id_scores is empty"):
        ood_metrics([], np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        ood_metrics(np.array([1.0, np.nan]), np.ones(3))
    with pytest.raises(ValueError, match="1 dimension"):
        ood_metrics(np.ones((3, 2)), np.ones(3))
