"""OOD scores against plain reference computations (loops, NumPy, SciPy, the official ViM recipe)."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax

from cliplab.ood import (
    KNN,
    Mahalanobis,
    NegLabel,
    ViM,
    builtin_words,
    default_vim_dim,
    energy,
    knn_score,
    max_logit,
    mcm,
    msp,
)
from cliplab.ood.neglabel import BUILTIN_SOURCE


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 7)) * 4


def test_logit_scores_match_scipy(logits):
    np.testing.assert_allclose(msp(logits).numpy(), softmax(logits, 1).max(1), rtol=1e-5)
    np.testing.assert_allclose(max_logit(torch.tensor(logits)).numpy(), logits.max(1), rtol=1e-6)
    np.testing.assert_allclose(energy(logits).numpy(), logsumexp(logits, 1), rtol=1e-5)
    np.testing.assert_allclose(energy(logits, T=2.5).numpy(), 2.5 * logsumexp(logits / 2.5, 1), rtol=1e-5)
    assert msp(logits).dtype == torch.float32 and msp(logits).shape == (64,)


def test_mcm_uses_raw_cosines():
    rng = np.random.default_rng(1)
    f, w = rng.normal(size=(20, 8)) * 3, rng.normal(size=(5, 8))
    expected = []
    for i in range(20):
        cos = [f[i] @ w[c] / np.linalg.norm(f[i]) / np.linalg.norm(w[c]) for c in range(5)]
        e = np.exp(np.array(cos) / 0.5)
        expected.append(e.max() / e.sum())
    np.testing.assert_allclose(mcm(f, w, T=0.5).numpy(), expected, rtol=1e-5)
    # T = 1 with unscaled cosines is nearly uniform: the max is barely above 1/C
    assert float(mcm(f, w).max()) < 0.5


def test_knn_matches_brute_force():
    rng = np.random.default_rng(2)
    train, test = rng.normal(size=(300, 6)), rng.normal(size=(40, 6))
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    expected = []
    for x in test:
        d = np.sort(np.linalg.norm(tn - x / np.linalg.norm(x), axis=1))
        expected.append(-d[9])
    got = knn_score(test, train, k=10, chunk_size=7)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(KNN(k=10).fit(train).score(test).numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="k=500"):
        KNN(k=500).fit(train)


def _official_vim(train, W, b, test, dim):
    """The recipe of haoqiwang/vim benchmark.py (np.linalg.eig of the empirical covariance of X − u)."""
    u = -np.linalg.pinv(W) @ b
    c = train - u
    cov = c.T @ c / len(train)
    eig_vals, eig_vecs = np.linalg.eig(cov)
    NS = np.ascontiguousarray(eig_vecs.T[np.argsort(eig_vals * -1)[dim:]].T).real
    alpha = (train @ W.T + b).max(1).mean() / np.linalg.norm((train - u) @ NS, axis=1).mean()
    return logsumexp(test @ W.T + b, axis=1) - alpha * np.linalg.norm((test - u) @ NS, axis=1)


def test_vim_matches_official_recipe():
    rng = np.random.default_rng(3)
    d, c = 16, 10
    scales = np.linspace(3, 0.1, d)  # distinct eigenvalues: a well-defined residual space
    train = rng.normal(size=(2000, d)) * scales + 1.0
    test = np.r_[rng.normal(size=(50, d)) * scales + 1.0, rng.normal(size=(50, d)) * 2]
    W, b = rng.normal(size=(c, d)), rng.normal(size=c)
    vim = ViM(dim=6, chunk_size=300).fit(train, W, b)
    np.testing.assert_allclose(vim.score(test).numpy(), _official_vim(train, W, b, test, 6), rtol=1e-4, atol=1e-3)
    assert vim.NS_.shape == (d, d - 6)
    np.testing.assert_allclose(vim.u_.numpy(), -np.linalg.pinv(W) @ b, rtol=1e-4, atol=1e-5)


def test_vim_dim_rule_and_errors():
    assert [default_vim_dim(d) for d in (2048, 4096, 768, 1024, 512, 64)] == [1000, 1000, 512, 512, 256, 32]
    rng = np.random.default_rng(4)
    X, W, b = rng.normal(size=(100, 16)), rng.normal(size=(5, 16)), rng.normal(size=5)
    assert ViM().fit(X, W, b).dim_ == 8
    for dim in (16, 40):
        with pytest.raises(ValueError, match="must be smaller than the feature dimension"):
            ViM(dim=dim).fit(X, W, b)
    with pytest.raises(ValueError, match="b has 4 entries"):
        ViM(dim=4).fit(X, W, b[:4])
    with pytest.raises(ValueError, match="dimension 15"):
        ViM(dim=4).fit(X, W[:, :15], b)
    with pytest.raises(RuntimeError, match="not fitted"):
        ViM().score(X)
    with pytest.raises(ValueError, match="NaN"):
        ViM(dim=4).fit(np.where(X > 2, np.nan, X), W, b)


def test_mahalanobis_matches_loop_with_pinv():
    rng = np.random.default_rng(5)
    d = 5
    X = rng.normal(size=(200, d)) @ rng.normal(size=(d, d))
    y = rng.integers(0, 4, 200)
    X[:, 0] += 3 * y
    Q = rng.normal(size=(30, d)) * 3
    means = np.stack([X[y == c].mean(0) for c in range(4)])
    centred = X - means[y]
    prec = np.linalg.pinv(centred.T @ centred / len(X))
    expected = [-min((q - m) @ prec @ (q - m) for m in means) for q in Q]
    got = Mahalanobis().fit(X, y).score(Q)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_mahalanobis_separates_gaussians():
    g = torch.Generator().manual_seed(6)
    d = 8
    means = torch.randn(3, d, generator=g) * 4
    y = torch.arange(3).repeat_interleave(300)
    X = means[y] + torch.randn(900, d, generator=g)
    ood = torch.randn(300, d, generator=g) * 1 + 12  # far from every class
    m = Mahalanobis().fit(X, y)
    id_s = m.score(means[torch.arange(3).repeat(50)] + torch.randn(150, d, generator=g))
    # ID squared distances follow ~chi²(d): mean ≈ d
    assert abs(float(-id_s.mean()) - d) < 2.0
    assert float(id_s.min()) > float(m.score(ood).max())
    # rank-deficient covariance (a constant feature) still works through the pseudo-inverse
    Xc = torch.cat([X, torch.ones(900, 1)], 1)
    assert torch.isfinite(Mahalanobis().fit(Xc, y).score(Xc)).all()


def test_mahalanobis_errors():
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="at least 2 classes"):
        Mahalanobis().fit(X, np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match="9 entries"):
        Mahalanobis().fit(X, np.zeros(9, dtype=int))
    with pytest.raises(ValueError, match="empty"):
        Mahalanobis().fit(np.zeros((0, 3)), np.zeros(0, dtype=int))


def _fake_encoder(dim=12):
    """Deterministic text 'encoder': a random vector per string (seeded by its bytes)."""

    def encode(texts):
        out = []
        for t in texts:
            seed = sum((i + 1) * b for i, b in enumerate(t.encode()))
            out.append(np.random.default_rng(seed).normal(size=dim))
        return torch.tensor(np.array(out), dtype=torch.float32)

    return encode


def test_neglabel_mining_and_score_match_formula():
    rng = np.random.default_rng(7)
    words = [f"word{i}" for i in range(200)]
    enc = _fake_encoder()
    id_w = rng.normal(size=(6, 12))
    nl = NegLabel(words, n_negatives=60, percentile=0.95, T=0.05, ngroup=4, template="{}").fit(id_w, enc)
    # mining: the 60 words whose 95th-percentile cosine to the ID labels is lowest
    emb = enc(words).numpy()
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    idn = id_w / np.linalg.norm(id_w, axis=1, keepdims=True)
    affinity = np.quantile(emb @ idn.T, 0.95, axis=1)
    expected_words = [words[i] for i in np.argsort(affinity, kind="stable")[:60]]
    assert nl.negative_words_ == expected_words
    # score: mean over the 4 groups of Σ_id e^{cos/T} / (Σ_id e^{cos/T} + Σ_group e^{cos/T})
    x = rng.normal(size=(9, 12))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    groups = nl._groups.numpy().reshape(4, 15, 12)
    expected = []
    for f in xn:
        pos = np.exp(idn @ f / 0.05).sum()
        expected.append(np.mean([pos / (pos + np.exp(grp @ f / 0.05).sum()) for grp in groups]))
    np.testing.assert_allclose(nl.score(x).numpy(), expected, rtol=1e-5)
    # the groups are a permutation of the mined negatives
    assert sorted(map(tuple, nl._groups.numpy().round(6))) == sorted(
        map(tuple, nl.negative_embeddings_.numpy().round(6))
    )


def test_neglabel_detects_ood_and_handles_inputs():
    g = torch.Generator().manual_seed(8)
    id_w = torch.randn(5, 16, generator=g)
    cand = torch.randn(400, 16, generator=g)
    nl = NegLabel(n_negatives=0.25, ngroup=None).fit(id_w, candidate_embeddings=cand)
    assert nl.negative_embeddings_.shape[0] == 100 and nl.ngroup_ == 1
    id_x = id_w.repeat(20, 1) + 0.3 * torch.randn(100, 16, generator=g)
    ood_x = nl.negative_embeddings_[:100] + 0.3 * torch.randn(100, 16, generator=g)
    assert float(nl.score(id_x).mean()) > 0.9 > 0.1 > float(nl.score(ood_x).mean())
    with pytest.raises(ValueError, match="encode_texts"):
        NegLabel().fit(id_w)
    with pytest.raises(ValueError, match="either"):
        NegLabel().fit(id_w, _fake_encoder(16), candidate_embeddings=cand)
    with pytest.raises(ValueError, match="n_negatives"):
        NegLabel(n_negatives=1.5)
    with pytest.raises(ValueError, match="ngroup"):
        NegLabel(n_negatives=10, ngroup=20).fit(id_w, candidate_embeddings=cand)


def test_builtin_wordlist_and_exclude():
    words = builtin_words()
    assert len(words) >= 300 and len(set(words)) == len(words)
    assert all(w == w.strip() and not w.startswith("#") for w in words)
    seen = []

    def enc(texts):
        seen.extend(texts)
        return _fake_encoder(8)(texts)

    nl = NegLabel(source="builtin", template="a photo of a {}.", exclude=["Forest", "river"], batch_size=128)
    nl.fit(torch.randn(3, 8), enc)
    assert len(seen) == len(words) - 2 and "a photo of a forest." not in seen and "a photo of a abbey." in seen
    assert nl.source_ == BUILTIN_SOURCE  # the fallback is named as such


@pytest.mark.parametrize(
    "fn",
    [msp, max_logit, energy, lambda z: mcm(z, np.ones((3, z.shape[1])) if np.ndim(z) == 2 else z)],
)
def test_scores_reject_bad_inputs(fn):
    with pytest.raises(ValueError, match="empty"):
        fn(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(np.array([[0.0, np.inf, 1.0]]))
    with pytest.raises(ValueError, match="dimension"):
        fn(np.zeros(3))


def test_single_class_and_temperature_errors():
    with pytest.raises(ValueError, match="at least 2 classes"):
        msp(np.zeros((4, 1)))
    with pytest.raises(ValueError, match="at least 2 classes"):
        mcm(np.ones((4, 3)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="temperature"):
        energy(np.zeros((2, 3)), T=0)
