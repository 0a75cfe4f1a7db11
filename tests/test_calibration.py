"""Calibration and selective-classification metrics against plain loops and SciPy."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from cliplab.metrics import (
    LogitNormConfidence,
    TemperatureScaling,
    aurc,
    ece,
    logit_norm_confidence,
    reliability_diagram,
    risk_coverage_curve,
)


def _data(seed=0, n=500, k=5, scale=3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    y = np.where(rng.random(n) < 0.6, z.argmax(1), rng.integers(0, k, n))
    return z, y


def _ece_loop(probs, labels, n_bins):
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
    return total


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_loop(n_bins):
    z, y = _data()
    expected = _ece_loop(softmax(z, 1), y, n_bins)
    assert ece(z, y, n_bins) == pytest.approx(expected, abs=1e-9)
    assert ece(softmax(z, 1), y, n_bins, from_probs=True) == pytest.approx(expected, abs=1e-9)
    assert isinstance(ece(z, y), float)


def test_ece_of_calibrated_model_is_near_zero():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(100_000, 10, generator=g) * 2
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)  # labels from the model itself
    assert ece(z, y) < 0.01
    assert ece(z * 3, y) > 0.1  # an over-confident version of the same model is not calibrated


def test_reliability_diagram_bins():
    z, y = _data(1)
    r = reliability_diagram(z, y, n_bins=10)
    assert set(r) == {"bin_lower", "bin_upper", "count", "accuracy", "confidence", "ece"}
    assert all(len(r[k]) == 10 for k in ("bin_lower", "bin_upper", "count", "accuracy", "confidence"))
    assert r["count"].sum() == len(y)
    p = softmax(z, 1)
    conf = p.max(1)
    for m in range(10):
        in_bin = (conf > r["bin_lower"][m]) & (conf <= r["bin_upper"][m])
        assert r["count"][m] == in_bin.sum()
        if in_bin.any():
            assert r["confidence"][m] == pytest.approx(conf[in_bin].mean())
            assert r["accuracy"][m] == pytest.approx((p.argmax(1)[in_bin] == y[in_bin]).mean())
        else:
            assert np.isnan(r["accuracy"][m]) and np.isnan(r["confidence"][m])
    assert r["ece"] == pytest.approx(ece(z, y, 10))


def test_temperature_scaling_is_nll_optimal_and_keeps_accuracy():
    z, y = _data(2, n=2000, scale=6.0)  # over-confident logits: T > 1

    def nll(t):
        return -log_softmax(z / t, 1)[np.arange(len(y)), y].mean()

    ts = TemperatureScaling().fit(z, y)
    best = minimize_scalar(nll, bounds=(0.05, 50), method="bounded", options={"xatol": 1e-8}).x
    assert ts.temperature_ == pytest.approx(best, rel=1e-4)
    assert nll(ts.temperature_) <= nll(best) + 1e-10
    assert ts.temperature_ > 1
    assert nll(ts.temperature_) < nll(1.0)
    out = ts.transform(z)
    assert torch.equal(out.argmax(1), torch.tensor(z).argmax(1))
    np.testing.assert_allclose(out.numpy(), z / ts.temperature_, rtol=1e-5)
    # under-confident logits: T < 1
    assert TemperatureScaling().fit(z / 20, y).temperature_ < 1
    # large logits with a tiny NLL (float32 cancellation would make the loss noisy): still optimal
    big = z * 30 + 500
    best_big = minimize_scalar(lambda t: nll(t / 30), bounds=(1, 1000), method="bounded", options={"xatol": 1e-6}).x
    assert TemperatureScaling().fit(big, y).temperature_ == pytest.approx(best_big, rel=1e-4)


def _aurc_loop(conf, correct):
    order = sorted(range(len(conf)), key=lambda i: -conf[i])  # Python's sort is stable
    risks, errors = [], 0
    for k, i in enumerate(order, start=1):
        errors += not correct[i]
        risks.append(errors / k)
    return float(np.mean(risks)), risks


def test_aurc_and_curve_match_loop():
    rng = np.random.default_rng(3)
    conf = np.round(rng.random(300), 1)  # many ties: stable order matters
    correct = rng.random(300) < conf
    expected, risks = _aurc_loop(list(conf), list(correct))
    assert aurc(conf, correct) == pytest.approx(expected, abs=1e-12)
    coverage, risk = risk_coverage_curve(torch.tensor(conf), torch.tensor(correct.astype(int)))
    np.testing.assert_allclose(risk, risks)
    np.testing.assert_allclose(coverage, np.arange(1, 301) / 300)
    # all correct → 0; all wrong → 1; perfect ranking beats reversed ranking
    assert aurc(conf, np.ones(300, bool)) == 0.0 and aurc(conf, np.zeros(300, bool)) == 1.0
    ok = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    assert aurc(np.linspace(1, 0, 100), ok) < aurc(np.linspace(0, 1, 100), ok)


def test_logit_norm_confidence():
    z, y = _data(4)
    for p in (1.0, 2.0, 3.5):
        expected = z.max(1) / (np.abs(z) ** p).sum(1) ** (1 / p)
        np.testing.assert_allclose(logit_norm_confidence(z, p).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(logit_norm_confidence(z, np.inf).numpy(), z.max(1) / np.abs(z).max(1), rtol=1e-5)
    zc = z - z.mean(1, keepdims=True)
    np.testing.assert_allclose(
        logit_norm_confidence(z, 2, centralize=True).numpy(), zc.max(1) / np.linalg.norm(zc, axis=1), rtol=1e-5
    )
    np.testing.assert_allclose(logit_norm_confidence(z, 0).numpy(), z.max(1), rtol=1e-6)  # p = 0: no norm
    with pytest.raises(ValueError, match="non-negative"):
        logit_norm_confidence(z, -1)


def test_logit_norm_selects_p_by_validation_aurc():
    g = torch.Generator().manual_seed(5)
    # "broken" confidence: wrong predictions get large logit norms
    z = torch.randn(1000, 10, generator=g)
    y = torch.randint(0, 10, (1000,), generator=g)
    wrong = z.argmax(1) != y
    z[wrong] *= 5
    est = LogitNormConfidence(ps=(1, 2, 4, 8), centralize=False, msp_fallback=False, integration="mean").fit(z, y)
    correct = (z.argmax(1) == y).numpy()
    expected = {p: aurc(logit_norm_confidence(z, p).numpy(), correct) for p in (1.0, 2.0, 4.0, 8.0)}
    assert est.aurc_ == pytest.approx(expected)
    assert est.p_ == min(expected, key=expected.get)
    np.testing.assert_allclose(est.score(z).numpy(), logit_norm_confidence(z, est.p_).numpy())
    assert min(expected.values()) < aurc(z.max(1).values, correct)  # beats raw MaxLogit here


def test_errors():
    z, y = _data(6, n=20)
    with pytest.raises(ValueError, match="empty"):
        ece(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(ValueError, match="NaN"):
        ece(np.where(z > 2, np.nan, z), y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ece(np.zeros((5, 1)), np.zeros(5, int))
    with pytest.raises(ValueError, match="only 5 classes"):
        TemperatureScaling().fit(z, y + 5)
    with pytest.raises(ValueError, match="sum to 1"):
        ece(np.full((4, 3), 0.5), np.zeros(4, int), from_probs=True)
    with pytest.raises(ValueError, match="0/1"):
        aurc(np.ones(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="rows"):
        aurc(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="empty"):
        aurc([], [])
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaling().transform(z)
    with pytest.raises(RuntimeError, match="not fitted"):
        LogitNormConfidence().score(z)


def _probs_with_confidence(conf, n_classes=64):
    """Rows whose max probability is exactly ``conf`` (class 0); the rest share ``1 − conf`` (all below ``conf``)."""
    conf = np.asarray(conf, dtype=np.float64)
    p = np.repeat(((1.0 - conf) / (n_classes - 1))[:, None], n_classes, axis=1)
    p[:, 0] = conf
    assert (p[:, 1:] < p[:, :1]).all()
    return p


@pytest.mark.parametrize("n_bins", [4, 8, 16])
def test_confidence_on_a_bin_edge_belongs_to_the_lower_bin(n_bins):
    """Bins are (m/M, (m+1)/M]: a confidence exactly j/M (exact in binary for these M) is in bin j − 1.

    Per bin j − 1: the midpoint (j − ½)/M predicted wrong and the edge j/M predicted right, so every bin holds
    2 samples, accuracy ½ and confidence (j − ¼)/M; an edge counted in the upper bin changes all three."""
    j = np.arange(1, n_bins + 1)
    conf = np.concatenate([(j - 0.5) / n_bins, j / n_bins])
    labels = np.concatenate([np.ones(n_bins, int), np.zeros(n_bins, int)])  # class 0 is every row's argmax
    r = reliability_diagram(_probs_with_confidence(conf), labels, n_bins=n_bins, from_probs=True)
    np.testing.assert_array_equal(r["bin_upper"], j / n_bins)
    np.testing.assert_array_equal(r["count"], np.full(n_bins, 2))
    np.testing.assert_allclose(r["accuracy"], 0.5, rtol=0, atol=1e-15)
    np.testing.assert_allclose(r["confidence"], (j - 0.25) / n_bins, rtol=0, atol=1e-15)
    expected = np.sum(2 / (2 * n_bins) * np.abs(0.5 - (j - 0.25) / n_bins))
    assert r["ece"] == pytest.approx(expected, abs=1e-12)
    assert ece(_probs_with_confidence(conf), labels, n_bins, from_probs=True) == pytest.approx(expected, abs=1e-12)


def test_confidence_equal_to_the_reported_upper_edge_stays_in_its_bin():
    """15 bins (edges m/15 not exact in binary): a confidence equal to a bin's own reported ``bin_upper`` is in
    that bin, so each of the 14 inner edges (a bin's ``bin_lower``) is in the bin below; 1.0 is in the last bin."""
    first = reliability_diagram(_probs_with_confidence([0.5]), [0], n_bins=15, from_probs=True)
    upper, lower = first["bin_upper"], first["bin_lower"]
    assert upper[-1] == 1.0 and lower[0] == 0.0
    np.testing.assert_array_equal(upper[:-1], lower[1:])
    r = reliability_diagram(_probs_with_confidence(upper), np.zeros(15, int), n_bins=15, from_probs=True)
    np.testing.assert_array_equal(r["count"], np.ones(15, int))
    np.testing.assert_array_equal(r["confidence"], upper)
    r = reliability_diagram(_probs_with_confidence(lower[1:]), np.zeros(14, int), n_bins=15, from_probs=True)
    np.testing.assert_array_equal(r["count"], [1] * 14 + [0])


def test_ece_and_reliability_diagram_default_to_15_bins():
    """Guo et al.'s (and CLIP calibration studies') 15 equal-width bins are the default: a value that differs
    between 14 and 15 bins pins it (issue #26: a 14-bin mutation survived)."""
    z, y = _data(seed=3)
    p = softmax(z, 1)
    assert _ece_loop(p, y, 15) != pytest.approx(_ece_loop(p, y, 14), abs=1e-6)
    assert ece(z, y) == pytest.approx(_ece_loop(p, y, 15), abs=1e-9)
    r = reliability_diagram(z, y)
    assert len(r["count"]) == 15 and r["ece"] == pytest.approx(_ece_loop(p, y, 15), abs=1e-9)
