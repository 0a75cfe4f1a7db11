"""Accuracy estimators against explicit formulas, and their evaluation across shifted sets."""

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax
from scipy.stats import pearsonr, spearmanr

from cliplab.estimate import (
    atc,
    atc_threshold,
    average_confidence,
    doc,
    evaluate_estimators,
    mano,
    mano_criterion,
    nuclear_norm,
)


def _mano_explicit(q, p=4, eta=5.0):
    phi = np.mean(-log_softmax(q, 1))
    if phi > eta:
        sigma = softmax(q, 1)
    else:
        v = 1 + q + q**2 / 2
        v = v - v.min(1, keepdims=True)
        sigma = v / np.abs(v).sum(1, keepdims=True)
    return (np.mean(np.abs(sigma) ** p)) ** (1 / p), phi


def test_mano_switches_normalisation_at_eta():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 10))
    # small logits: Φ ≈ log 10 ≈ 2.3 < 5 → Taylor; large logits: Φ > 5 → softmax
    for scale, branch in ((0.5, "taylor"), (8.0, "softmax")):
        q = base * scale
        expected, phi = _mano_explicit(q)
        assert (phi > 5) == (branch == "softmax")
        assert mano_criterion(q) == pytest.approx(phi)
        assert mano(q) == pytest.approx(expected, rel=1e-10)
    # the two branches really differ: forcing the other one changes the value
    q = base * 0.5
    taylor, _ = _mano_explicit(q)
    assert mano(q, eta=0.0) == pytest.approx((np.mean(softmax(q, 1) ** 4)) ** 0.25, rel=1e-10)
    assert mano(q, eta=0.0) != pytest.approx(taylor, rel=1e-3)
    # the threshold is strict: Φ == eta uses Taylor
    phi = mano_criterion(q)
    assert mano(q, eta=phi) == pytest.approx(taylor, rel=1e-10)


def test_mano_p_and_range():
    q = np.random.default_rng(1).normal(size=(50, 6)) * 3
    for p in (1, 2, 4, 7):
        expected, _ = _mano_explicit(q, p=p)
        assert mano(q, p=p) == pytest.approx(expected, rel=1e-10)
    # one-hot-like predictions give the maximum (1/K)^(1/p)
    assert mano(np.eye(6)[np.arange(50) % 6] * 200) == pytest.approx((1 / 6) ** 0.25, rel=1e-6)
    with pytest.raises(ValueError, match="p must be"):
        mano(q, p=0.5)
    # a constant row (all logits equal) gives a zero row after Taylor normalisation, not NaN
    assert np.isfinite(mano(np.zeros((4, 3))))


def test_average_confidence_and_doc():
    rng = np.random.default_rng(2)
    zv, z = rng.normal(size=(200, 5)) * 3, rng.normal(size=(100, 5)) * 2
    yv = rng.integers(0, 5, 200)
    conf_v, conf_t = softmax(zv, 1).max(1).mean(), softmax(z, 1).max(1).mean()
    assert average_confidence(z) == pytest.approx(conf_t)
    acc_v = (zv.argmax(1) == yv).mean()
    assert doc(zv, yv, z) == pytest.approx(acc_v - (conf_v - conf_t))


def test_atc_threshold_and_estimate():
    rng = np.random.default_rng(3)
    zv = rng.normal(size=(400, 8)) * 3
    yv = np.where(rng.random(400) < 0.5, zv.argmax(1), rng.integers(0, 8, 400))
    z = rng.normal(size=(300, 8)) * 2
    acc_v = (zv.argmax(1) == yv).mean()
    for score in ("maxconf", "entropy"):
        sv = softmax(zv, 1).max(1) if score == "maxconf" else (softmax(zv, 1) * log_softmax(zv, 1)).sum(1)
        st = softmax(z, 1).max(1) if score == "maxconf" else (softmax(z, 1) * log_softmax(z, 1)).sum(1)
        t = atc_threshold(zv, yv, score, temperature=None)
        # t is the (k+1)-th largest validation score, k = #correct (find_threshold_balance: the sample at t
        # counts as above). scipy and torch round softmax differently in the last bits, so compare against
        # scipy's scores with a tolerance, never through a float tie.
        k = int(round(acc_v * len(yv)))
        tol = 1e-9
        assert np.sort(sv)[::-1][k] == pytest.approx(t, rel=tol, abs=tol)
        # share above t on val = val accuracy, up to samples within tol of t
        assert np.mean(sv > t + tol) <= acc_v <= np.mean(sv >= t - tol)
        est = atc(zv, yv, z, score=score, temperature=None)
        assert np.mean(st > t + tol) <= est <= np.mean(st >= t - tol)
        # Garg et al.'s find_ATC_threshold (loop minimising |#wrong above − #right below|) agrees within 1/n
        order = np.argsort(sv)
        correct = (zv.argmax(1) == yv)[order]
        fp, fn, best, thres = (~correct).sum(), 0, (~correct).sum(), 0.0
        for i in range(len(sv)):
            fp, fn = (fp - 1, fn) if not correct[i] else (fp, fn + 1)
            if abs(fp - fn) < best:
                best, thres = abs(fp - fn), sv[order][i]
        assert abs(np.mean(st >= thres) - np.mean(st >= t)) <= 2 / len(sv) + 1e-12
    assert atc(zv, yv, zv, temperature=None) == pytest.approx(acc_v + 1 / len(yv))
    with pytest.raises(ValueError, match="maxconf"):
        atc(zv, yv, z, score="margin")


def test_nuclear_norm_matches_svd():
    rng = np.random.default_rng(4)
    for shape in ((200, 7), (5, 30)):
        z = rng.normal(size=shape) * 2
        P = softmax(z, 1)
        expected = np.linalg.svd(P, compute_uv=False).sum() / np.sqrt(min(shape) * shape[0])
        assert nuclear_norm(z) == pytest.approx(expected, rel=1e-8)
    assert nuclear_norm(np.eye(7)[np.arange(70) % 7] * 100) == pytest.approx(1.0, rel=1e-6)


def _shifted_sets(n_sets=6, n=400, k=10, seed=5):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    onehot = torch.nn.functional.one_hot(y, k).float()
    sets = []
    for s in range(n_sets):  # shrinking class margin = growing shift, falling accuracy
        sets.append((f"shift{s}", onehot * (4 - 0.6 * s) + torch.randn(n, k, generator=g), y))
    val = onehot * 4 + torch.randn(n, k, generator=g)
    return sets, val, y


def test_evaluate_estimators_metrics():
    sets, zv, yv = _shifted_sets()
    out = evaluate_estimators(sets, zv, yv)
    acc = np.array([(z.argmax(1) == y).double().mean().item() for _, z, y in sets])
    assert list(out["accuracy"].values()) == pytest.approx(list(acc))
    assert set(out["estimators"]) == {"average_confidence", "doc", "atc", "atc_entropy", "mano", "nuclear_norm"}
    for name, res in out["estimators"].items():
        est = np.array(list(res["estimates"].values()))
        assert res["r2"] == pytest.approx(pearsonr(est, acc)[0] ** 2)
        assert res["spearman"] == pytest.approx(spearmanr(est, acc)[0])
        if name in ("mano", "nuclear_norm"):
            assert res["mae"] is None
        else:
            assert res["mae"] == pytest.approx(np.abs(est - acc).mean())
    assert out["estimators"]["mano"]["estimates"]["shift0"] == pytest.approx(mano(sets[0][1]))
    assert out["estimators"]["atc"]["estimates"]["shift2"] == pytest.approx(atc(zv, yv, sets[2][1]))
    for name in out["estimators"]:  # monotone shift: every estimator ranks the sets correctly
        assert out["estimators"][name]["spearman"] == pytest.approx(1.0)
    assert out["estimators"]["atc"]["mae"] < out["estimators"]["average_confidence"]["mae"]


def test_evaluate_estimators_custom_and_errors():
    sets, zv, yv = _shifted_sets(n_sets=3)
    out = evaluate_estimators(sets, zv, yv, {"const": lambda z, a, b: 0.5, "acc": lambda z, a, b: 1.0})
    assert np.isnan(out["estimators"]["const"]["r2"]) and np.isnan(out["estimators"]["const"]["spearman"])
    assert out["estimators"]["acc"]["mae"] is None
    with pytest.raises(ValueError, match="at least 3 sets"):
        evaluate_estimators(sets[:2], zv, yv)
    with pytest.raises(ValueError, match="unknown estimator"):
        evaluate_estimators(sets, zv, yv, ["mano", "oracle"])
    with pytest.raises(ValueError, match="unique"):
        evaluate_estimators([sets[0], sets[0], sets[1]], zv, yv)
    with pytest.raises(ValueError, match="classes"):
        evaluate_estimators([(n, z[:, :5], y % 5) for n, z, y in sets], zv, yv)


def test_estimators_reject_bad_inputs():
    for fn in (mano, average_confidence, nuclear_norm):
        with pytest.raises(ValueError, match="empty"):
            fn(np.zeros((0, 4)))
        with pytest.raises(ValueError, match="NaN"):
            fn(np.array([[1.0, np.nan]]))
        with pytest.raises(ValueError, match="at least 2 classes"):
            fn(np.ones((3, 1)))
    with pytest.raises(ValueError, match="only 2 classes"):
        atc(np.zeros((3, 2)), np.array([0, 1, 2]), np.zeros((3, 2)))
