"""ConformalClassifier: the finite-sample quantile, coverage over seeded trials, parity with MAPIE (LAC, APS,
RAPS), randomized RAPS against a per-sample loop of the paper's algorithm, Mondrian coverage, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from cliplab.assess import ConformalClassifier, coverage_and_size
from cliplab.assess.conformal_sets import conformal_quantile

C = 10
pytestmark = pytest.mark.usefixtures("one_thread")


def _draw(n: int, gen: torch.Generator, c: int = C) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a noisy classifier: the true class gets a +2 margin on N(0, 1.5²) logits."""
    y = torch.randint(0, c, (n,), generator=gen)
    z = 1.5 * torch.randn(n, c, generator=gen, dtype=torch.float64)
    z[torch.arange(n), y] += 2.0
    return z, y


def test_quantile_is_the_kth_smallest_score():
    rng = np.random.default_rng(0)
    for n, alpha in [(57, 0.1), (100, 0.1), (1000, 0.05), (9, 0.1), (19, 0.05), (250, 0.2)]:
        scores = rng.random(n)
        k = math.ceil((n + 1) * (1 - alpha) - 1e-9)
        assert conformal_quantile(scores, alpha) == np.sort(scores)[k - 1]
        assert conformal_quantile(scores, alpha) == np.quantile(scores, k / n, method="inverted_cdf")
    with pytest.raises(ValueError, match="quantile is infinite when n < 1/alpha - 1 = 9"):
        conformal_quantile(rng.random(8), 0.1)


@pytest.mark.parametrize(
    ("method", "randomized", "exact"),
    [("lac", False, True), ("aps", False, False), ("aps", True, True), ("raps", False, False), ("raps", True, True)],
)
def test_coverage_over_seeded_trials(method, randomized, exact):
    alpha, n_cal, n_test, trials = 0.1, 2000, 4000, 20
    gen = torch.Generator().manual_seed(0)
    coverages = []
    for t in range(trials):
        zc, yc = _draw(n_cal, gen)
        zt, yt = _draw(n_test, gen)
        cc = ConformalClassifier(method, alpha, randomized=randomized, k_reg=2, lam=0.05, seed=t).fit(zc, yc)
        coverages.append(coverage_and_size(cc.predict_sets(zt), yt)["coverage"])
    mean = float(np.mean(coverages))
    # E[coverage] >= 1 - alpha; one trial's sd is about sqrt(alpha (1 - alpha) / n_cal) = 0.0067, the mean's 0.0015
    assert mean >= 1 - alpha - 0.005
    if exact:  # LAC and randomized APS/RAPS: E[coverage] = k / (n + 1) <= 1 - alpha + 1 / (n + 1)
        assert mean <= 1 - alpha + 1 / (n_cal + 1) + 0.005


def test_mondrian_covers_every_class():
    alpha, trials = 0.1, 40
    gen = torch.Generator().manual_seed(1)
    per_class, marginal = [], []
    for _ in range(trials):
        zc, yc = _draw(2000, gen)
        zt, yt = _draw(4000, gen)
        zc[:, 0] -= 1.0  # class 0 is harder: marginal calibration under-covers it
        zt[:, 0] -= 1.0
        cc = ConformalClassifier("lac", alpha, mondrian=True).fit(zc, yc)
        for c in range(C):  # one quantile per class, from that class's scores only
            assert cc.qhat_[c].item() == conformal_quantile(cc.calibration_scores_[yc == c], alpha)
        per_class.append(coverage_and_size(cc.predict_sets(zt), yt)["per_class_coverage"])
        plain = ConformalClassifier("lac", alpha).fit(zc, yc)
        marginal.append(coverage_and_size(plain.predict_sets(zt), yt)["per_class_coverage"][0])
    # one class's coverage: sd about 0.026 per trial, 0.004 for the mean over 40 trials
    assert np.mean(per_class, axis=0).min() >= 1 - alpha - 0.015
    assert np.mean(marginal) < 1 - alpha - 0.05


def _raps_reference(probs: np.ndarray, labels: np.ndarray, u_cal, test: np.ndarray, u_test, alpha, k_reg, lam):
    """Angelopoulos et al. 2021 (RAPS repository's giq/gcq, allow_zero_sets=True), one sample at a time.

    Our uniform U enters as s − U·p; the paper's as Σ_{j<o} p_(j) + U'·p_(o) with U' = 1 − U."""
    c = probs.shape[1]
    e = []
    for p, y, u in zip(probs, labels, u_cal):
        order = np.argsort(-p, kind="stable")
        o = int(np.flatnonzero(order == y)[0]) + 1
        e.append(p[order[: o - 1]].sum() + (1 - u) * p[y] + lam * max(0, o - k_reg))
    n = len(e)
    tau = np.sort(e)[math.ceil((n + 1) * (1 - alpha)) - 1]
    sets = np.zeros(test.shape, dtype=bool)
    for i, (p, u) in enumerate(zip(test, u_test)):
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order]) + lam * np.maximum(0, np.arange(1, c + 1) - k_reg)
        size = min(int(np.sum(cum <= tau)) + 1, c)
        v = (tau - (cum[size - 1] - p[order[size - 1]])) / p[order[size - 1]]
        size -= int((1 - u) >= v)
        sets[i, order[:size]] = True
    return tau, sets


def test_randomized_raps_matches_the_papers_algorithm():
    gen = torch.Generator().manual_seed(2)
    zc, yc = _draw(300, gen)
    zt, yt = _draw(500, gen)
    cc = ConformalClassifier("raps", 0.1, randomized=True, k_reg=2, lam=0.05, seed=11).fit(zc, yc)
    sets = cc.predict_sets(zt).numpy()
    draws = torch.Generator().manual_seed(11)  # the estimator draws n calibration uniforms, then one per test row
    u_cal, u_test = (
        torch.rand(300, generator=draws, dtype=torch.float64),
        torch.rand(500, generator=draws, dtype=torch.float64),
    )
    tau, expected = _raps_reference(
        torch.softmax(zc, 1).numpy(),
        yc.numpy(),
        u_cal.numpy(),
        torch.softmax(zt, 1).numpy(),
        u_test.numpy(),
        0.1,
        2,
        0.05,
    )
    assert cc.qhat_[0].item() == pytest.approx(tau, abs=1e-12)
    assert (sets == expected).all()
    # the seed makes the randomized sets reproducible
    assert torch.equal(clone(cc).fit(zc, yc).predict_sets(zt), torch.from_numpy(sets))


# --------------------------------------------------------------------- parity with MAPIE
class _Softmax(ClassifierMixin, BaseEstimator):
    """A pre-fitted classifier whose ``predict_proba`` is the softmax of its input (the logits)."""

    def __init__(self, n_classes: int = C):
        self.n_classes = n_classes

    def fit(self, X=None, y=None):
        self.classes_ = np.arange(self.n_classes)
        return self

    def predict_proba(self, X):
        return torch.softmax(torch.as_tensor(X, dtype=torch.float64), 1).numpy()

    def predict(self, X):
        return self.predict_proba(X).argmax(1)


class _QueuedUniforms(np.random.RandomState):
    """Hands MAPIE the uniforms our estimator drew (MAPIE draws them with ``random_state.uniform``)."""

    def __init__(self, *draws: np.ndarray):
        super().__init__(0)
        self.draws = list(draws)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self.draws.pop(0).reshape(size)


def _fixed_raps(k_reg: int, lam: float):
    """MAPIE's RAPS score with k_reg and λ given (MAPIE otherwise picks them on a split of the calibration set)."""
    from mapie.conformity_scores import APSConformityScore, RAPSConformityScore
    from mapie.utils import _compute_classification_quantile

    class FixedRAPS(RAPSConformityScore):
        def split_data(self, X, y, y_enc, sample_weight=None, groups=None):
            self.n_samples_ = len(y_enc)
            return X, y, y_enc, sample_weight, groups

        def get_conformity_scores(self, y, y_pred, y_enc=None, **kwargs):
            kwargs.pop("predict_params", None)
            return APSConformityScore.get_conformity_scores(self, y, y_pred, y_enc=y_enc, **kwargs)

        def get_conformity_score_quantiles(self, conformity_scores, alpha_np, cv, agg_scores="mean", **kwargs):
            self.k_star, self.lambda_star = np.array([k_reg]), lam
            reg = self._regularize_conformity_score(self.k_star, lam, conformity_scores, self.cutoff)
            return _compute_classification_quantile(reg, alpha_np)

    return FixedRAPS(size_raps=None)


@pytest.mark.parametrize(("method", "randomized"), [("lac", False), ("aps", False), ("aps", True), ("raps", False)])
def test_quantiles_and_sets_equal_mapie(method, randomized):
    mapie_classification = pytest.importorskip("mapie.classification")
    gen = torch.Generator().manual_seed(3)
    zc, yc = _draw(500, gen)
    zt, _ = _draw(2000, gen)
    ours = ConformalClassifier(method, 0.1, randomized=randomized, k_reg=2, lam=0.05, seed=5).fit(zc, yc)
    sets = ours.predict_sets(zt).numpy()
    if randomized:  # the same uniforms: n for calibration, then one per test row
        draws = torch.Generator().manual_seed(5)
        uniforms = [torch.rand(n, generator=draws, dtype=torch.float64).numpy() for n in (500, 2000)]
    else:  # MAPIE always randomizes APS/RAPS calibration scores; U = 0 gives the deterministic scores
        uniforms = [np.zeros(500)]
    score = _fixed_raps(2, 0.05) if method == "raps" else method
    theirs = mapie_classification.SplitConformalClassifier(
        _Softmax().fit(),
        confidence_level=0.9,
        conformity_score=score,
        prefit=True,
        random_state=_QueuedUniforms(*uniforms),
    ).conformalize(zc.numpy(), yc.numpy())
    include_last = {"include_last_label": "randomized" if randomized else True}
    _, their_sets = theirs.predict_set(zt.numpy(), conformity_score_params=include_last)
    their_q = theirs._mapie_classifier.conformity_score_function_.quantiles_[0]
    assert ours.qhat_[0].item() == pytest.approx(their_q, abs=1e-12)
    assert (their_sets[:, :, 0] == sets).all()
    assert 1.5 < sets.sum(1).mean() < C - 1  # the sets are informative, not trivially full or singletons


# --------------------------------------------------------------------- conventions and input checks
def test_coverage_and_size_by_hand():
    sets = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 1], [1, 0, 0]], dtype=torch.bool)
    out = coverage_and_size(sets, [0, 1, 2, 1])  # covered: yes, no, yes, no
    assert out["coverage"] == 0.5 and out["mean_size"] == 1.25 and out["empty_fraction"] == 0.25
    np.testing.assert_allclose(out["per_class_coverage"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(out["per_class_size"], [2.0, 0.5, 2.0])
    assert math.isnan(coverage_and_size(sets, [0, 0, 2, 2])["per_class_coverage"][1])


def test_estimator_conventions_and_errors():
    gen = torch.Generator().manual_seed(4)
    zc, yc = _draw(100, gen)
    cc = ConformalClassifier("aps", 0.2, k_reg=3)
    assert cc.get_params()["k_reg"] == 3 and clone(cc).get_params() == cc.get_params()
    assert cc.set_params(alpha=0.1) is cc and cc.fit(zc, yc) is cc
    with pytest.raises(RuntimeError, match="not fitted"):
        ConformalClassifier().predict_sets(zc)
    for bad, match in [
        ({"alpha": 1.5}, "alpha must be in \\(0, 1\\)"),
        ({"method": "topk"}, "method must be"),
        ({"k_reg": -1}, "k_reg"),
        ({"lam": -0.1}, "lam"),
        ({"randomized": True}, "randomized=True applies to method 'aps' or 'raps'"),
    ]:
        with pytest.raises(ValueError, match=match):
            ConformalClassifier(**bad).fit(zc, yc)
    with pytest.raises(ValueError, match="too few for alpha=0.005: the conformal quantile is infinite"):
        ConformalClassifier(alpha=0.005).fit(zc, yc)
    with pytest.raises(ValueError, match="cal_labels contains class 10 but there are only 10 classes"):
        ConformalClassifier().fit(zc, torch.full((100,), 10))
    with pytest.raises(ValueError, match="cal_labels has 99 entries"):
        ConformalClassifier().fit(zc, yc[:99])
    with pytest.raises(ValueError, match="logits has 9 classes but the classifier was calibrated on 10"):
        cc.predict_sets(zc[:, :9])
    no_class_3 = torch.where(yc == 3, 4, yc)
    with pytest.raises(ValueError, match="at least 1/alpha - 1 = 9 calibration samples per class.*class 3 \\(n=0\\)"):
        ConformalClassifier(mondrian=True).fit(zc, no_class_3)
