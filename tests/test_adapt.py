"""cliplab.adapt: formulas against plain NumPy float64, trained adapters vs zero-shot, seeds, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliplab.adapt import (
    AMU,
    GDA,
    CLIPAdapter,
    LinearProbe,
    LPPlusPlus,
    TipAdapter,
    TipAdapterF,
    ZeroShot,
    kurtosis_factor,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def make_task(C=20, D=64, shots=16, n_test=600, seed=0, D2=48, unbalanced=False):
    """CLIP-like Gaussian class clusters on the sphere: a shared image/text offset (modality gap),
    noisy text weights (zero-shot ≈ 40 %) and informative support features."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(2, D, generator=g)
    common = F.normalize(torch.stack([common[0], common[1] + 0.4 * common[0]]), dim=1)  # image·text cos ≈ 0.3
    Q = torch.linalg.qr(common.T).Q
    mu = torch.randn(C, D, generator=g)
    mu = F.normalize(mu - (mu @ Q) @ Q.T, dim=1)  # class directions orthogonal to the offsets
    R = torch.randn(D2, D, generator=g) / D**0.5

    def sample(y):
        f = F.normalize(5.0 * common[0] + mu[y] + 2.0 * torch.randn(len(y), D, generator=g) / D**0.5, dim=1)
        a = F.normalize(mu[y] @ R.T + 1.0 * torch.randn(len(y), D2, generator=g) / D2**0.5, dim=1)
        return f, a

    y = torch.arange(C).repeat_interleave(shots)
    if unbalanced:
        y = y[torch.rand(len(y), generator=g) < 0.7]
        y = torch.cat([torch.arange(C), y])  # every class at least once, counts differ
    X, A = sample(y)
    yt = torch.randint(C, (n_test,), generator=g)
    Xt, At = sample(yt)
    W = F.normalize(5.0 * common[1] + mu + 1.0 * torch.randn(C, D, generator=g) / D**0.5, dim=1)
    return {"X": X, "A": A, "y": y, "Xt": Xt, "At": At, "yt": yt, "W": W}


@pytest.fixture(scope="module")
def task():
    return make_task()


def accuracy(est, task):
    kw = {"aux_features": task["At"]} if isinstance(est, AMU) else {}
    return float((est.predict(task["Xt"], **kw) == task["yt"]).float().mean())


def fit(est, task, **kw):
    extra = {"aux_features": task["A"]} if isinstance(est, AMU) else {}
    return est.fit(task["X"], task["y"], text_weights=task["W"], **extra, **kw)


# ------------------------------------------------------------------ formulas, computed independently
def tip_reference(f, keys, labels, W, C, alpha, beta, scale):
    f, keys, W = (np.asarray(a, dtype=np.float64) for a in (f, keys, W))
    L = np.eye(C)[np.asarray(labels)]
    return scale * f @ W.T + alpha * np.exp(-beta * (1.0 - f @ keys.T)) @ L


def gda_reference(X, y, W, f, alpha, scale):
    X, W, f, y = np.asarray(X, np.float64), np.asarray(W, np.float64), np.asarray(f, np.float64), np.asarray(y)
    C, (N, D) = W.shape[0], X.shape
    mus = np.stack([X[y == k].mean(axis=0) for k in range(C)])
    sigma = np.cov(X - mus[y], rowvar=False)  # denominator N − 1
    P = D * np.linalg.pinv((N - 1) * sigma + np.trace(sigma) * np.eye(D))
    w = mus @ P  # rows P μ_k (P symmetric)
    b = np.log(1.0 / C) - 0.5 * np.einsum("kd,de,ke->k", mus, P, mus)
    return scale * f @ W.T + alpha * (f @ w.T + b)


@pytest.mark.parametrize("unbalanced", [False, True])
def test_tip_adapter_matches_formula(unbalanced):
    t = make_task(C=7, D=16, shots=5, n_test=50, unbalanced=unbalanced)
    est = TipAdapter(alpha=1.7, beta=5.5).fit(t["X"], t["y"], text_weights=t["W"], logit_scale=50.0)
    ref = tip_reference(t["Xt"], t["X"], t["y"], t["W"], 7, 1.7, 5.5, 50.0)
    got = est.logits(t["Xt"])
    assert got.dtype == torch.float32 and got.shape == (50, 7)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-4)


def test_tip_adapter_averages_views_then_renormalises():
    t = make_task(C=5, D=16, shots=4, n_test=30)
    views = torch.stack([t["X"], F.normalize(t["X"] + 0.3 * torch.randn_like(t["X"]), dim=1)])
    keys = views.numpy().astype(np.float64).mean(axis=0)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    got = TipAdapter(alpha=2.0, beta=3.0).fit(views, t["y"], text_weights=t["W"]).logits(t["Xt"])
    ref = tip_reference(t["Xt"], keys, t["y"], t["W"], 5, 2.0, 3.0, 100.0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-4)


def test_tip_adapter_f_uses_the_formula_with_its_learned_keys():
    t = make_task(C=6, D=16, shots=4, n_test=40, unbalanced=True)
    est = TipAdapterF(alpha=1.5, beta=2.0, epochs=5, lr=1e-2).fit(t["X"], t["y"], text_weights=t["W"])
    assert not torch.allclose(est.keys_, TipAdapter().fit(t["X"], t["y"], text_weights=t["W"]).keys_)
    ref = tip_reference(t["Xt"], est.keys_, est.key_labels_, t["W"], 6, 1.5, 2.0, 100.0)
    np.testing.assert_allclose(est.logits(t["Xt"]).numpy(), ref, rtol=1e-5, atol=1e-4)


def test_tip_adapter_blocks_large_query_sets(monkeypatch):
    import cliplab.adapt.tip as tip

    t = make_task(C=6, D=16, shots=3, n_test=100)
    est = TipAdapter(alpha=1.0, beta=2.0).fit(t["X"], t["y"], text_weights=t["W"])
    whole = est.logits(t["Xt"])
    monkeypatch.setattr(tip, "_BLOCK", 7 * 18)  # 7 queries per block
    torch.testing.assert_close(est.logits(t["Xt"]), whole)


@pytest.mark.parametrize("unbalanced", [False, True])
def test_gda_matches_formula(unbalanced):
    t = make_task(C=6, D=12, shots=8, n_test=40, unbalanced=unbalanced)
    est = GDA(alpha=0.3).fit(t["X"], t["y"], text_weights=t["W"], logit_scale=100.0)
    ref = gda_reference(t["X"], t["y"], t["W"], t["Xt"], 0.3, 100.0)
    np.testing.assert_allclose(est.logits(t["Xt"]).numpy(), ref, rtol=1e-5, atol=1e-4)


def test_gda_concatenates_views():
    t = make_task(C=4, D=10, shots=6, n_test=20)
    views = torch.stack([t["X"], F.normalize(t["X"] + 0.2 * torch.randn_like(t["X"]), dim=1)])
    got = GDA(alpha=2.0).fit(views, t["y"], text_weights=t["W"]).logits(t["Xt"])
    ref = gda_reference(views.reshape(-1, 10), t["y"].repeat(2), t["W"], t["Xt"], 2.0, 100.0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-4)


def test_gda_one_shot_has_zero_precision():
    t = make_task(C=4, D=8, shots=1, n_test=10)
    with pytest.warns(UserWarning, match="covariance is zero"):
        est = GDA(alpha=1.0).fit(t["X"], t["y"], text_weights=t["W"])
    assert est.degenerate_
    expected = 100.0 * t["Xt"] @ t["W"].T + np.log(1 / 4)
    torch.testing.assert_close(est.logits(t["Xt"]), expected)


def test_gda_identical_views_of_one_shot_reduce_to_zero_shot():
    t = make_task(C=5, D=16, shots=1, n_test=50)
    views = torch.stack([t["X"]] * 3)  # the class means are not exactly the rows in float32
    with pytest.warns(UserWarning, match="covariance is zero"):
        est = GDA(alpha=1.0).fit(views, t["y"], text_weights=t["W"])
    torch.testing.assert_close(est.logits(t["Xt"]), 100.0 * t["Xt"] @ t["W"].T + np.log(1 / 5))


def test_zero_shot_formula(task):
    est = ZeroShot().fit(task["X"].numpy(), task["y"].numpy(), text_weights=task["W"].numpy(), logit_scale=42.0)
    torch.testing.assert_close(est.logits(task["Xt"].numpy()), 42.0 * task["Xt"] @ task["W"].T)
    assert torch.equal(est.predict(task["Xt"]), (task["Xt"] @ task["W"].T).argmax(1))


def test_kurtosis_factor_formula():
    s0 = torch.randn(5, 30) * 4
    p = np.asarray(torch.softmax(s0.double(), dim=1))
    z = (p - p.mean(1, keepdims=True)) / p.std(1, ddof=1, keepdims=True)
    ref = (250.0 / (z**4).mean(1, keepdims=True)) ** 0.4
    np.testing.assert_allclose(kurtosis_factor(s0, 0.4).numpy(), ref, rtol=1e-4)


def test_trained_logits_follow_their_formulas(task):
    f, W = task["Xt"].double().numpy(), task["W"].double().numpy()
    s0 = 100.0 * f @ W.T
    lpp = fit(LPPlusPlus(epochs=5), task)
    ref = f @ lpp.coef_.double().numpy().T + lpp.intercept_.double().numpy() + lpp.alpha_.double().numpy() * (f @ W.T)
    np.testing.assert_allclose(lpp.logits(task["Xt"]).numpy(), ref, rtol=1e-4, atol=1e-3)

    ca = fit(CLIPAdapter(epochs=1, ratio=0.3), task)
    relu = lambda z: np.maximum(z, 0.0)  # noqa: E731
    adapted = 0.3 * relu(relu(f @ ca.W1_.double().numpy().T) @ ca.W2_.double().numpy().T) + 0.7 * f
    adapted /= np.linalg.norm(adapted, axis=1, keepdims=True)
    np.testing.assert_allclose(ca.logits(task["Xt"]).numpy(), 100.0 * adapted @ W.T, rtol=1e-5, atol=1e-4)

    amu = fit(AMU(epochs=1, alpha=0.7, fusion="kurtosis", rho=0.4), task)
    a = task["At"].double().numpy()
    z = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ amu.head_.double().numpy().T
    z = (z - z.mean(1, keepdims=True)) / z.std(1, ddof=1, keepdims=True)
    p = np.exp(s0 - s0.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    kappa = (((p - p.mean(1, keepdims=True)) / p.std(1, ddof=1, keepdims=True)) ** 4).mean(1, keepdims=True)
    ref = s0 + 0.7 * (250.0 / kappa) ** 0.4 * z
    np.testing.assert_allclose(amu.logits(task["Xt"], aux_features=task["At"]).numpy(), ref, rtol=1e-4, atol=1e-3)


def test_linear_probe_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    t = make_task(C=5, D=16, shots=10, n_test=200)
    ours = LinearProbe(C=3.0, max_iter=300, tol=1e-6).fit(t["X"], t["y"], text_weights=t["W"])
    sk = LogisticRegression(C=3.0, max_iter=5000, tol=1e-10).fit(t["X"].double().numpy(), t["y"].numpy())
    np.testing.assert_allclose(ours.coef_.numpy(), sk.coef_, rtol=0, atol=2e-3 * np.abs(sk.coef_).max())
    sk_logits = sk.decision_function(t["Xt"].double().numpy())
    np.testing.assert_allclose(ours.logits(t["Xt"]).numpy(), sk_logits, atol=2e-3 * np.abs(sk_logits).max())


# ------------------------------------------------------------------ trained adapters
TRAINABLE = [
    pytest.param(lambda: TipAdapterF(), id="TipAdapterF"),
    pytest.param(lambda: LinearProbe(), id="LinearProbe"),
    pytest.param(lambda: LinearProbe(zs_init=True), id="LinearProbe-zs_init"),
    pytest.param(lambda: CLIPAdapter(), id="CLIPAdapter"),
    pytest.param(lambda: LPPlusPlus(), id="LPPlusPlus"),
    pytest.param(lambda: AMU(), id="AMU"),
    pytest.param(lambda: AMU(fusion="kurtosis"), id="AMU-kurtosis"),
]


@pytest.fixture(scope="module")
def zero_shot_accuracy(task):
    return accuracy(fit(ZeroShot(), task), task)


@pytest.mark.parametrize("factory", TRAINABLE)
def test_trained_adapter_beats_zero_shot(factory, task, zero_shot_accuracy):
    assert zero_shot_accuracy < 0.45  # the text weights are deliberately poor
    acc = accuracy(fit(factory(), task), task)
    assert acc > zero_shot_accuracy + 0.1, (acc, zero_shot_accuracy)


def test_training_improves_tip_adapter_f_over_tip_adapter(task):
    assert accuracy(fit(TipAdapterF(), task), task) > accuracy(fit(TipAdapter(), task), task) + 0.05


SEEDED = [
    pytest.param(lambda s: TipAdapterF(epochs=3, seed=s), id="TipAdapterF"),
    pytest.param(lambda s: LinearProbe(seed=s, max_iter=20), id="LinearProbe"),
    pytest.param(lambda s: CLIPAdapter(epochs=3, seed=s), id="CLIPAdapter"),
    pytest.param(lambda s: AMU(epochs=3, seed=s, fusion="kurtosis"), id="AMU"),
]


@pytest.mark.parametrize("factory", SEEDED)
def test_same_seed_same_logits(factory, task):
    kw = {"aux_features": task["At"]} if isinstance(factory(0), AMU) else {}
    a = fit(factory(0), task).logits(task["Xt"], **kw)
    b = fit(factory(0), task).logits(task["Xt"], **kw)
    assert torch.equal(a, b)
    if not isinstance(factory(0), LinearProbe):  # the probe's seed only draws its validation split
        assert not torch.equal(a, fit(factory(1), task).logits(task["Xt"], **kw))


def test_lpplusplus_is_deterministic(task):
    a, b = (fit(LPPlusPlus(epochs=20), task).logits(task["Xt"]) for _ in range(2))
    assert torch.equal(a, b)


def test_trained_adapters_accept_views(task):
    views = torch.stack([task["X"], F.normalize(task["X"] + 0.1 * torch.randn_like(task["X"]), dim=1)])
    aux = torch.stack([task["A"], task["A"]])
    for est in [TipAdapterF(epochs=2), LinearProbe(C=1.0, max_iter=10), CLIPAdapter(epochs=2), LPPlusPlus(epochs=5)]:
        assert est.fit(views, task["y"], text_weights=task["W"]).logits(task["Xt"]).shape == (600, 20)
    amu = AMU(epochs=2).fit(views, task["y"], text_weights=task["W"], aux_features=aux)
    assert amu.logits(task["Xt"], aux_features=task["At"]).shape == (600, 20)


def test_linear_probe_one_shot_falls_back_with_warning():
    t = make_task(C=4, D=8, shots=1, n_test=10)
    with pytest.warns(UserWarning, match="single sample"):
        est = LinearProbe(max_iter=5).fit(t["X"], t["y"], text_weights=t["W"])
    assert est.C_ == est.fallback_C


def test_params_roundtrip_and_repr():
    est = TipAdapterF(alpha=2.0, epochs=3)
    assert est.get_params()["alpha"] == 2.0
    assert est.set_params(beta=4.0).beta == 4.0
    assert "TipAdapterF(alpha=2.0" in repr(est)
    with pytest.raises(ValueError, match="no parameter 'gamma'"):
        est.set_params(gamma=1)
    assert GDA.default_grid() == {"alpha": [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]}
    grid = TipAdapter.default_grid()
    assert min(grid["beta"]) == 0.1 and max(grid["beta"]) < 7 and max(grid["alpha"]) < 3


# ------------------------------------------------------------------ bad input
ALL = [ZeroShot, TipAdapter, GDA, lambda: TipAdapterF(epochs=1), lambda: LinearProbe(C=1.0), CLIPAdapter, LPPlusPlus]


@pytest.mark.parametrize("factory", ALL)
def test_bad_inputs_raise_clear_errors(factory):
    t = make_task(C=4, D=8, shots=3, n_test=5)
    X, y, W = t["X"], t["y"], t["W"]
    bad_label = y.clone()
    bad_label[0] = 4
    with pytest.raises(ValueError, match="contains class 4 but there are only 4 classes"):
        factory().fit(X, bad_label, text_weights=W)
    with pytest.raises(ValueError, match="non-negative"):
        factory().fit(X, y - 1, text_weights=W)
    with pytest.raises(ValueError, match="features has dimension 8 but text_weights has dimension 9"):
        factory().fit(X, y, text_weights=torch.randn(4, 9))
    with pytest.raises(ValueError, match="labels has 11 entries but features has 12 samples"):
        factory().fit(X, y[:-1], text_weights=W)
    with pytest.raises(ValueError, match=r"per view \(features has shape \[V, N, D\] = \(2, 12, 8\)\)"):
        factory().fit(torch.stack([X, X]), y[:-1], text_weights=W)
    nan = X.clone()
    nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match="features contains 1 NaN"):
        factory().fit(nan, y, text_weights=W)
    with pytest.raises(ValueError, match="text_weights contains"):
        factory().fit(X, y, text_weights=W * float("nan"))
    with pytest.raises(ValueError, match=r"shape \[N, D\] or \[V, N, D\]"):
        factory().fit(X[None, None], y, text_weights=W)
    with pytest.raises(ValueError, match="logit_scale"):
        factory().fit(X, y, text_weights=W, logit_scale=0.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        factory().logits(X)
    with pytest.raises(TypeError):
        factory().fit(X, y, text_weights=W, unknown=1)
    est = factory().fit(X, y, text_weights=W)
    with pytest.raises(ValueError, match="features has dimension 9, expected 8"):
        est.logits(torch.randn(3, 9))


def test_amu_aux_feature_errors():
    t = make_task(C=4, D=8, shots=3, n_test=5, D2=6)
    X, y, W, A = t["X"], t["y"], t["W"], t["A"]
    with pytest.raises(TypeError, match="aux_features"):
        AMU(epochs=1).fit(X, y, text_weights=W)
    with pytest.raises(ValueError, match="aux_features has 11 samples but features has 12"):
        AMU(epochs=1).fit(X, y, text_weights=W, aux_features=A[:-1])
    with pytest.raises(ValueError, match="fusion"):
        AMU(fusion="entropy").fit(X, y, text_weights=W, aux_features=A)
    est = AMU(epochs=1).fit(X, y, text_weights=W, aux_features=A)
    with pytest.raises(TypeError, match="aux_features"):
        est.logits(t["Xt"])
    with pytest.raises(ValueError, match="aux_features has 4 rows but features has 5"):
        est.logits(t["Xt"], aux_features=t["At"][:4])
    with pytest.raises(ValueError, match="aux_features has dimension 5, expected 6"):
        est.logits(t["Xt"], aux_features=torch.randn(5, 5))


def test_gda_needs_every_class():
    t = make_task(C=4, D=8, shots=3, n_test=5)
    keep = t["y"] != 2
    est = GDA()
    with pytest.raises(ValueError, match=r"none for class\(es\) \[2\]"):
        est.fit(t["X"][keep], t["y"][keep], text_weights=t["W"])
    with pytest.raises(RuntimeError, match="not fitted"):  # a failed fit leaves nothing half-usable
        est.logits(t["Xt"])


def lpplusplus_reference(X, y, W, epochs, every=10, reset_alpha_grad=True):
    """LP++ as in the official code (FereshteShakeri/FewShot-CLIP-Strong-Baseline, methods/linear_probe_p2.py),
    float64 autograd: a linear layer initialised at the class sums of the features, trained by
    ``torch.optim.SGD(lr=4N/λ_max(XᵀX), momentum=0.9)`` on the mean cross-entropy of
    ``f·Wᵀ + b + α ⊙ (f·Tᵀ)``; ``α`` starts at ``250 · mean_k mean_{i∈k} f_i·t_k`` and steps by
    ``N / (4 max_k Σ_i (f_i·t_k)²)`` times its gradient after epochs 10, 20, … (``(epoch + 1) % 10 == 0``).

    The official bias starts at ``nn.Linear``'s random init, cliplab's at 0 (here 0). The official ``α``
    gradient is never zeroed; cliplab zeroes it after each α step (``reset_alpha_grad``): the two agree
    up to the second α step.
    """
    X, W = torch.as_tensor(X).double(), torch.as_tensor(W).double()
    y = torch.as_tensor(y)
    n, C = X.shape[0], W.shape[0]
    T = X @ W.T
    onehot = F.one_hot(y, C).double()
    lam_max = float(np.linalg.eigh((X.T @ X).numpy())[0].max())
    weight = torch.nn.Parameter(onehot.T @ X)  # class sums
    bias = torch.nn.Parameter(torch.zeros(C, dtype=torch.float64))
    own = (onehot * T).sum(0) / onehot.sum(0)
    alpha = torch.full((C,), 250.0 * float(own.mean()), dtype=torch.float64, requires_grad=True)
    lr_alpha = n / (4.0 * float((T**2).sum(0).max()))
    opt = torch.optim.SGD([weight, bias], lr=4.0 * n / lam_max, momentum=0.9)
    for epoch in range(epochs):
        loss = F.cross_entropy(X @ weight.T + bias + alpha * T, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (epoch + 1) % every == 0:
            with torch.no_grad():
                alpha -= lr_alpha * alpha.grad
            if reset_alpha_grad:
                alpha.grad = None
    return weight.detach(), bias.detach(), alpha.detach()


@pytest.mark.parametrize("epochs", [9, 10, 15, 19, 31])
def test_lpplusplus_follows_the_official_updates(epochs):
    """W, b and α after a few full-batch epochs equal an independent float64 loop of the official updates:
    no α step before epoch 10, the first at epoch 10 (official and cliplab identical up to epoch 19), the
    next ones at 20, 30 (cliplab's documented reset of the α gradient)."""
    t = make_task(C=6, D=16, shots=5, n_test=10, seed=3)
    est = LPPlusPlus(epochs=epochs).fit(t["X"], t["y"], text_weights=t["W"])
    W, b, alpha = lpplusplus_reference(t["X"], t["y"], t["W"], epochs)
    init = lpplusplus_reference(t["X"], t["y"], t["W"], 0)[2]
    # α moves by ~0.1 per step (from ~100); float32 vs float64 agree to ~1e-5, so compare at 2e-4 absolute
    if epochs < 10:
        assert torch.equal(alpha, init)
    else:
        assert (alpha - init).abs().max() > 0.05
    np.testing.assert_allclose(est.alpha_.double().numpy(), alpha.numpy(), rtol=0, atol=2e-4)
    scale = W.abs().max().item()
    np.testing.assert_allclose(est.coef_.double().numpy(), W.numpy(), rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(est.intercept_.double().numpy(), b.numpy(), rtol=0, atol=1e-5 * scale)
    if epochs < 20:  # before the second α step the official (never reset) gradient is the same
        official = lpplusplus_reference(t["X"], t["y"], t["W"], epochs, reset_alpha_grad=False)[2]
        torch.testing.assert_close(official, alpha)
