"""Issue #14, items 1–9: the few-shot protocol and adapters against independent computations of the references.

Each test re-derives what the official code does (mrflogs/ICLR24, gaopengcuhk/Tip-Adapter, CoOp's lpclip,
FereshteShakeri/FewShot-CLIP-Strong-Baseline, TJU-sjyj/AMU-Tuning) in plain NumPy/torch and compares.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliplab.adapt import AMU, GDA, CLIPAdapter, LinearProbe, LPPlusPlus, TipAdapter, TipAdapterF, protocol
from cliplab.adapt.base_new_protocol import base_to_new
from cliplab.adapt.protocol import run_few_shot
from cliplab.data import k_shot_indices
from cliplab.features import Features
from helpers import augment
from test_adapt import make_task

pytestmark = pytest.mark.usefixtures("one_thread")

GDA_ALPHAS = [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0]  # main_few_shots.py


@pytest.fixture(scope="module")
def world():
    """Train (16 per class), 10 augmented passes of every train image, a validation split and a test split."""
    t = make_task(C=8, D=24, shots=16, n_test=640, seed=5)
    n_val = 240
    train = Features(images=t["X"], labels=t["y"])
    val = Features(images=t["Xt"][:n_val], labels=t["yt"][:n_val])
    test = Features(images=t["Xt"][n_val:], labels=t["yt"][n_val:])
    return {"train": train, "val": val, "test": test, "W": t["W"], "views": augment(t["X"], 10), "t": t}


def acc(logits, labels) -> float:
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean())


# ------------------------------------------------------------------ item 1: GDA at 1–2 shots
def gda_reference_run(vecs, labels, W, val_f, val_y, test_f, test_y):
    """main_few_shots.py: concatenated augmented passes, KS estimator, alpha by strict > on the val split."""
    vecs, W = np.asarray(vecs, np.float64), np.asarray(W, np.float64)
    labels = np.asarray(labels)
    C, D = W.shape
    mus = np.stack([vecs[labels == i].mean(0) for i in range(C)])
    centred = np.concatenate([vecs[labels == i] - mus[i] for i in range(C)])
    cov = np.cov(centred, rowvar=False)
    inv = D * np.linalg.pinv((centred.shape[0] - 1) * cov + np.trace(cov) * np.eye(D))
    Wg = mus @ inv
    b = np.log(1.0 / C) - 0.5 * np.einsum("nd,dc,nc->n", mus, inv, mus)
    best_acc, best_alpha = 0.0, 0.1
    for alpha in GDA_ALPHAS:
        a = acc(100.0 * np.asarray(val_f, np.float64) @ W.T + alpha * (np.asarray(val_f) @ Wg.T + b), val_y)
        if a > best_acc:
            best_acc, best_alpha = a, alpha
    tf = np.asarray(test_f, np.float64)
    return acc(100.0 * tf @ W.T + best_alpha * (tf @ Wg.T + b), test_y), best_alpha


@pytest.mark.parametrize("validation", [None, "min_k_4"])
def test_gda_at_two_shots_uses_augmented_passes_and_the_validation_split(world, validation):
    """GDA's recipe searches alpha on the whole val split (main_few_shots.py); ``validation="min_k_4"`` is the
    named alternative of min(k, 4) images per class."""
    train, val, test, W, views = world["train"], world["val"], world["test"], world["W"], world["views"]
    seeds = (1, 2, 3)
    res = run_few_shot(train, test, W, methods=["gda"], shots=(1, 2), seeds=seeds, train_views=views, val=val,
                       progress=False, validation=validation)  # fmt: skip
    assert res["recipes"]["gda"]["recipe"] == "few_shots"
    assert res["recipes"]["gda"]["validation"] == (validation or "full")
    for k in (1, 2):
        ref = []
        for seed in seeds:
            idx = k_shot_indices(train.labels, k, seed, num_classes=8)
            if validation is None:
                vidx = torch.arange(len(val.labels))
            else:
                vidx = k_shot_indices(val.labels, min(k, 4), seed, num_classes=8)
            vecs = views[:, idx].reshape(-1, views.shape[-1])
            y = train.labels[idx].repeat(views.shape[0])
            ref.append(gda_reference_run(vecs, y, W, val.images[vidx], val.labels[vidx], test.images, test.labels)[0])
        assert res["results"]["gda"][k]["runs"] == pytest.approx(ref, abs=3 / len(test))
    assert res["results"]["gda"][2]["mean"] > res["zeroshot"] + 0.05, (res["results"]["gda"], res["zeroshot"])
    assert res["protocol"]["validation"] == "dataset"


def test_a_zero_covariance_never_wins_the_alpha_search(world):
    """Fallback without views or val split at 2 shots: the search split leaves one image per class, so GDA's
    covariance there is zero and every alpha ties; the search must not report the first alpha (1e-4)."""
    train, test, W = world["train"], world["test"], world["W"]
    with pytest.warns(UserWarning, match="covariance is zero"):
        res = run_few_shot(train, test, W, methods=["gda"], shots=(2,), seeds=(1, 2), progress=False)
    assert res["params"]["gda"][2] == [{"alpha": GDA().alpha}] * 2  # the default, not {"alpha": 0.0001}


# ------------------------------------------------------------------ item 2: augmentation by default
class _Recorder:
    """Replace protocol methods by subclasses recording what ``fit`` receives."""

    def __init__(self, monkeypatch, names):
        self.seen: dict[str, list] = {n: [] for n in names}
        for name in names:
            base = protocol.ADAPTERS[name]
            seen = self.seen[name]

            def fit(self, features, labels, __base=base, __seen=seen, **kw):
                __seen.append((torch.as_tensor(features).clone(), kw, self.get_params()))
                return __base.fit(self, features, labels, **kw)

            monkeypatch.setitem(protocol.ADAPTERS, name, type(f"Rec{base.__name__}", (base,), {"fit": fit}))


def test_each_method_gets_its_reference_share_of_the_augmented_passes(monkeypatch, world):
    train, test, W = world["train"], world["test"], world["W"]
    pool = augment(train.images, 12, seed=9)
    names = ["tip_adapter", "gda", "lp++", "tip_adapter_f", "clip_adapter", "linear_probe"]
    rec = _Recorder(monkeypatch, names)
    params = {"tip_adapter_f": {"epochs": 1}, "clip_adapter": {"epochs": 1}, "lp++": {"epochs": 1},
              "linear_probe": {"C": 1.0, "max_iter": 5}}  # fmt: skip
    run_few_shot(train, test, W, methods=names, shots=(2,), seeds=(1,), train_views=pool, search=False,
                 method_params=params, progress=False)  # fmt: skip
    idx = torch.as_tensor(k_shot_indices(train.labels, 2, 1, num_classes=8))
    expected = {
        "tip_adapter": pool[:10, idx],  # Tip-Adapter / GDA: the 10 cache passes, no clean view
        "gda": pool[:10, idx],
        "lp++": pool[:1, idx],  # one augmented pass
        "tip_adapter_f": pool[:, idx],  # trained adapters: the whole pool, one pass per epoch
        "clip_adapter": pool[:, idx],
        "linear_probe": train.images[idx],  # lpclip: clean features
    }
    for name, want in expected.items():
        (got, _, params), *_ = rec.seen[name]
        assert torch.equal(got, want), name
    # Tip-Adapter-F's keys start from the cache (the first 10 passes), not from the whole pool
    assert rec.seen["tip_adapter_f"][0][0].shape[0] == 12 and rec.seen["tip_adapter_f"][0][2]["cache_views"] == 10


def test_trained_adapters_see_one_augmented_pass_per_epoch():
    from cliplab.adapt.base import epoch_view_batches, generator

    X = torch.zeros(3, 10, 4)
    per_epoch = {}
    batches = list(epoch_view_batches(X, 5, 4, generator(0)))
    assert len(batches) == 5 * 3
    for i, (rows, views) in enumerate(batches):
        per_epoch.setdefault(i // 3, []).append((rows, views))
    for epoch, items in per_epoch.items():
        rows = torch.cat([r for r, _ in items])
        assert sorted(rows.tolist()) == list(range(10))  # every image once per epoch
        assert all(bool((v == epoch % 3).all()) for _, v in items)  # pass e mod P for all of them


def test_cli_augments_by_default():
    from cliplab.cli.adapt import add_adapt

    parser = argparse.ArgumentParser()
    add_adapt(parser.add_subparsers())
    assert parser.parse_args(["adapt", "m", "d"]).views == 10


def test_augmented_passes_of_the_support_images_are_cached_per_pass(monkeypatch, tiny_model, tmp_path):
    import cliplab.features.embedding as embedding
    from cliplab.adapt.views import embed_support_views, support_rows
    from cliplab.data import shapes

    ds = shapes("train", n=40, image_size=32, seed=0)
    labels = torch.as_tensor(ds.labels)
    calls = []
    real = embedding._encode_images  # the one function that runs images through the encoder
    monkeypatch.setattr(embedding, "_encode_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = {"cache_dir": tmp_path, "progress": False, "batch_size": 16}
    a = embed_support_views(tiny_model, ds, labels, (1, 2), (1, 2), 3, **kw)
    rows = support_rows(labels, (1, 2), (1, 2))
    assert torch.equal(a.rows, torch.as_tensor(rows)) and a.views.shape[:2] == (3, len(rows))
    assert len(calls) == 3  # one encoding per pass
    assert not torch.allclose(a.views[0], a.views[1])  # different crops per pass
    b = embed_support_views(tiny_model, ds, labels, (1, 2), (1, 2), 3, **kw)
    assert len(calls) == 3 and torch.equal(a.views, b.views)  # rerun: all from the cache
    c = embed_support_views(tiny_model, ds, labels, (1, 2), (1, 2), 3, seed=1, **kw)
    assert len(calls) == 6 and not torch.allclose(a.views, c.views)  # keyed by the augmentation seed


# ------------------------------------------------------------------ item 3: validation from the dataset
def test_search_runs_on_min_k_4_clean_images_per_class_of_the_val_split(monkeypatch, world):
    train, val, test, W, views = world["train"], world["val"], world["test"], world["W"], world["views"]
    scored = []

    class Spy(GDA):
        def _score_grid(self, features, settings, **kw):
            scored.append(torch.as_tensor(features).clone())
            return super()._score_grid(features, settings, **kw)

    monkeypatch.setitem(protocol.ADAPTERS, "gda", Spy)
    run_few_shot(train, test, W, methods=["gda"], shots=(2, 8), seeds=(3,), train_views=views, val=val,
                 progress=False, validation="min_k_4")  # fmt: skip
    for got, k in zip(scored, (2, 8)):
        want = val.images[k_shot_indices(val.labels, min(k, 4), 3, num_classes=8)]
        assert torch.equal(got, want)
    scored.clear()  # GDA's recipe (issue #26): the whole val split, as main_few_shots.py
    run_few_shot(train, test, W, methods=["gda"], shots=(2,), seeds=(3,), train_views=views, val=val,
                 progress=False)  # fmt: skip
    assert len(scored) == 1 and torch.equal(scored[0], val.images)


def test_fallback_validates_on_clean_features_of_held_out_support_images(monkeypatch, world):
    train, test, W, views = world["train"], world["test"], world["W"], world["views"]
    scored = []

    class Spy(TipAdapter):
        def _score_grid(self, features, settings, **kw):
            scored.append(torch.as_tensor(features).clone())
            return super()._score_grid(features, settings, **kw)

    monkeypatch.setitem(protocol.ADAPTERS, "tip_adapter", Spy)
    grids = {"tip_adapter": {"alpha": [1.0], "beta": [1.0]}}
    res = run_few_shot(train, test, W, methods=["tip_adapter"], shots=(4,), seeds=(1,), train_views=views,
                       param_grids=grids, progress=False)  # fmt: skip
    idx = k_shot_indices(train.labels, 4, 1, num_classes=8)
    (got,) = scored
    clean = train.images[idx]
    assert bool((got[:, None] == clean[None]).all(-1).any(1).all())  # single clean images, no view averages
    assert res["protocol"]["validation"] == "support"


def test_cli_reads_the_datasets_own_validation_split():
    from cliplab.cli.adapt import _has_val_split

    assert _has_val_split("shapes")  # the built-in world renders train/val/test
    assert not _has_val_split("captions:x.csv")  # a caption file has no splits


# ------------------------------------------------------------------ item 4: Tip-Adapter per-dataset settings
ISSUE_RANGES = {  # search_scale [beta, alpha] of the official configs, as listed in the issue
    "coop:oxford_flowers": (50, 50), "FGVCAircraft": (30, 30), "dtd": (13, 13), "StanfordCars": (20, 10),
    "food101": (10, 10), "EuroSAT": (12, 10), "sun397": (12, 10), "Caltech101": (12, 5),
    "imagenet": (7, 3), "OxfordPets": (7, 3), "ucf101": (7, 3),
}  # fmt: skip


def test_tip_adapter_settings_follow_the_official_configs():
    from cliplab.adapt.tip_settings import tip_settings

    for name, scale in ISSUE_RANGES.items():
        row = tip_settings(name)
        assert row.search_scale == scale, name
        grid = row.grid()  # search_hp: [i·(scale − 0.1)/steps + 0.1 for i in range(steps)], steps 200 / 20
        assert grid["beta"] == pytest.approx([i * (scale[0] - 0.1) / 200 + 0.1 for i in range(200)])
        assert grid["alpha"] == pytest.approx([i * (scale[1] - 0.1) / 20 + 0.1 for i in range(20)])
    assert tip_settings("coop:eurosat:root=/data").epochs == 100
    assert tip_settings("oxford_flowers").init_alpha == 10 and tip_settings("fgvc").init_alpha == 5
    assert tip_settings("shapes[train]") == tip_settings("imagenet")  # documented default for other data


def test_protocol_selects_tip_settings_by_dataset_name_and_allows_overrides(monkeypatch, world):
    train, test, W = world["train"], world["test"], world["W"]
    made = []

    class Spy(TipAdapterF):
        def __init__(self, **kw):
            made.append(kw)
            super().__init__(**kw)

    monkeypatch.setitem(protocol.ADAPTERS, "tip_adapter_f", Spy)
    kw = dict(methods=["tip_adapter_f"], shots=(1,), seeds=(1,), search=False, progress=False)
    run_few_shot(train, test, W, dataset="EuroSAT", method_params={"tip_adapter_f": {"epochs": 1}}, **kw)
    assert made[-1]["epochs"] == 1 and made[-1]["alpha"] == 2 and made[-1]["beta"] == 1  # override wins
    grid = protocol.method_settings("tip_adapter", "coop:dtd")[1]
    assert max(grid["beta"]) < 13 and max(grid["alpha"]) < 13 and len(grid["beta"]) == 200


# ------------------------------------------------------------------ item 5: base-to-new
def gda_new_reference(vecs, W_new, alpha, test_f, k=64):
    """main_base2new.py's synthesised new-class classifier (top-k support vectors per new text weight)."""
    vecs, W_new, f = (np.asarray(a, np.float64) for a in (vecs, W_new, test_f))
    D = vecs.shape[1]
    mus, invs = [], []
    for w in W_new:
        top = vecs[np.argsort(-(vecs @ w), kind="stable")[:k]]
        mus.append(np.concatenate([top, np.repeat(w[None], 16, 0)]).mean(0))
        cov = (top - w).T @ (top - w) / (k - 1)
        invs.append(D * np.linalg.pinv((k - 1) * cov + np.trace(cov) * np.eye(D)))
    mu, inv = np.stack(mus), np.mean(invs, 0)
    b = np.log(1.0 / len(W_new)) - 0.5 * np.einsum("nd,dc,nc->n", mu, inv, mu)
    return 100.0 * f @ W_new.T + alpha * (f @ (mu @ inv).T + b)


def test_gda_new_class_classifier_matches_main_base2new(world):
    t, views = world["t"], world["views"]
    base = t["y"] < 4
    support = views[:, base]
    est = GDA(alpha=0.7).fit(support, t["y"][base], text_weights=t["W"][:4])
    W_new = t["W"][4:]
    got = est.new_class_logits(t["Xt"], W_new)
    ref = gda_new_reference(support.reshape(-1, 24), W_new, 0.7, t["Xt"])
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())


def test_gda_base_classifier_of_main_base2new(world):
    """main_base2new.py's base classes: P = pinv(mean over classes of each class's covariance), no shrinkage."""
    t, views = world["t"], world["views"]
    X, y, W = views.reshape(-1, 24), t["y"].repeat(10), t["W"]
    est = GDA(alpha=0.5, covariance="class_mean").fit(views, t["y"], text_weights=W)
    Xn, yn = X.double().numpy(), y.numpy()
    mus = np.stack([Xn[yn == c].mean(0) for c in range(8)])
    inv = np.linalg.pinv(np.mean([np.cov(Xn[yn == c], rowvar=False) for c in range(8)], axis=0))
    b = np.log(1 / 8) - 0.5 * np.einsum("nd,dc,nc->n", mus, inv, mus)
    f = t["Xt"].double().numpy()
    ref = 100.0 * f @ W.double().numpy().T + 0.5 * (f @ (mus @ inv).T + b)
    np.testing.assert_allclose(est.logits(t["Xt"]).numpy(), ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())


def test_clip_adapter_applies_to_new_classes(world):
    t = world["t"]
    est = CLIPAdapter(epochs=2).fit(t["X"], t["y"], text_weights=t["W"][:4].repeat(2, 1)[:8])
    W1, W2 = est.W1_.double(), est.W2_.double()
    f = t["Xt"].double()
    a = torch.relu(torch.relu(f @ W1.T) @ W2.T)
    adapted = F.normalize(0.2 * a + 0.8 * f, dim=1)
    ref = 100.0 * adapted @ t["W"][4:].double().T
    torch.testing.assert_close(est.new_class_logits(t["Xt"], t["W"][4:]).double(), ref, rtol=1e-4, atol=1e-3)


def test_base_to_new_uses_each_methods_new_class_classifier_and_the_views(monkeypatch, world):
    train, val, test, W, views = world["train"], world["val"], world["test"], world["W"], world["views"]
    rec = _Recorder(monkeypatch, ["gda"])
    res = base_to_new(train, test, W, methods=["zeroshot", "gda", "clip_adapter"], k=4, seeds=(1,),
                      train_views=views, val=val, param_grids={"gda": {"alpha": [10.0]}},
                      method_params={"clip_adapter": {"epochs": 2}})  # fmt: skip
    r = res["results"]
    assert r["zeroshot"]["new"] == pytest.approx(res["zeroshot_new"])
    assert r["gda"]["new_classifier"] == "own" and r["clip_adapter"]["new_classifier"] == "own"
    (got, _, params), *_ = rec.seen["gda"]
    assert params["covariance"] == "class_mean"  # main_base2new.py's base classifier
    keep = torch.nonzero(train.labels < 4).flatten()
    idx = keep[k_shot_indices(train.labels[keep], 4, 1, num_classes=4)]
    assert torch.equal(got, views[:10, idx])  # the base-class support set's augmented passes
    new = test.labels >= 4
    ref = gda_new_reference(got.reshape(-1, 24), W[4:], 10.0, test.images[new])
    assert r["gda"]["new"] == pytest.approx(acc(ref, test.labels[new] - 4), abs=2 / int(new.sum()))
    assert r["gda"]["new"] != r["zeroshot"]["new"]


# ------------------------------------------------------------------ item 6: the linear probe as lpclip
def lpclip_reference(score, steps=8):
    """CoOp lpclip/linear_probe.py's search, transcribed: returns the final C and the C values scored."""
    search_list = [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6]
    asked = list(search_list)
    acc_list = [score(c) for c in search_list]
    c_peak = search_list[int(np.argmax(acc_list))]
    c_left, c_right = 1e-1 * c_peak, 1e1 * c_peak
    c_final = c_peak
    for _ in range(steps):
        acc_left, acc_right = score(c_left), score(c_right)
        asked += [c_left, c_right]
        if acc_left < acc_right:
            c_final = c_right
            c_left, c_right = 0.5 * (np.log10(c_right) + np.log10(c_left)), np.log10(c_right)
        else:
            c_final = c_left
            c_right, c_left = 0.5 * (np.log10(c_right) + np.log10(c_left)), np.log10(c_left)
        c_left, c_right = np.power(10, c_left), np.power(10, c_right)
    return c_final, asked


@pytest.mark.parametrize("peak", [3e-3, 0.5, 40.0, 2e5])
def test_lpclip_search_matches_the_reference_loop(peak):
    from cliplab.adapt.linear_probe import lpclip_search

    def score(c):  # unimodal in log C, quantised like an accuracy
        return round(1.0 - abs(math.log10(c) - math.log10(peak)) / 20, 3)

    ref_c, ref_asked = lpclip_reference(score)
    got_c, table = lpclip_search(score)
    assert got_c == pytest.approx(ref_c, rel=1e-9)
    assert [row["C"] for row in table] == pytest.approx(list(dict.fromkeys(ref_asked)), rel=1e-9)


def test_linear_probe_searches_c_on_the_validation_set_it_is_given(world):
    train, val, W = world["train"], world["val"], world["W"]
    assert LinearProbe().max_iter == 1000  # lpclip's max_iter
    est = LinearProbe(max_iter=40).fit(train.images, train.labels, text_weights=W, val_features=val.images,
                                       val_labels=val.labels)  # fmt: skip
    scores = {row["C"]: row["val_accuracy"] for row in est.search_table_}
    ref_c, _ = lpclip_reference(lambda c: scores[min(scores, key=lambda s: abs(math.log(s / c)))])
    assert est.C_ == pytest.approx(ref_c, rel=1e-9)
    # the scores are accuracies on the validation set given, of probes fitted on the support set
    refit = LinearProbe(C=est.C_, max_iter=40).fit(train.images, train.labels, text_weights=W)
    assert scores[est.C_] == pytest.approx(acc(refit.logits(val.images), val.labels), abs=2 / len(val))


# ------------------------------------------------------------------ item 7: LP++ with views
def test_lpplusplus_initial_weights_are_one_views_class_sums(world):
    t, views = world["t"], world["views"][:3]
    est = LPPlusPlus(epochs=0).fit(views, t["y"], text_weights=t["W"])
    X0, y = views[0].double().numpy(), t["y"].numpy()
    sums = np.stack([X0[y == c].sum(0) for c in range(8)])
    np.testing.assert_allclose(est.coef_.numpy(), sums, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ item 8: AMU with views
def test_amu_feeds_the_same_augmented_image_to_both_branches(world):
    t = world["t"]
    X, A = augment(t["X"], 2, seed=1), augment(t["A"], 2, seed=2)
    y, W = t["y"], t["W"]
    with pytest.raises(ValueError, match="same augmented images"):
        AMU(epochs=1).fit(X, y, text_weights=W, aux_features=t["A"])  # clean aux, augmented CLIP features
    epochs, lr, lam, alpha = 3, 1e-3, 0.35, 0.5
    est = AMU(epochs=epochs, batch_size=len(y), lr=lr).fit(X, y, text_weights=W, aux_features=A)
    # independent loop: full batch, epoch e on pass e mod 2 of BOTH encoders
    An = F.normalize(A, dim=-1)
    mean_a = F.normalize(An.mean(0), dim=1)
    head = torch.stack([mean_a[y == c].mean(0) for c in range(8)]).requires_grad_(True)
    opt = torch.optim.AdamW([head], lr=lr, eps=1e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for e in range(epochs):
        f, a = X[e % 2], An[e % 2]
        z = a @ head.T
        s_bias = (z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True)
        loss = lam * F.cross_entropy(100.0 * f @ W.T + alpha * s_bias, y) + (1 - lam) * F.cross_entropy(s_bias, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    torch.testing.assert_close(est.head_, head.detach(), rtol=1e-4, atol=1e-5)


def test_protocol_passes_amu_the_aux_encoders_passes_of_the_same_crops(monkeypatch, world):
    t, train, val, test, W = world["t"], world["train"], world["val"], world["test"], world["W"]
    pool, aux_pool = augment(t["X"], 3, seed=4), augment(t["A"], 3, seed=5)
    rec = _Recorder(monkeypatch, ["amu"])
    res = run_few_shot(train, test, W, methods=["amu"], shots=(2,), seeds=(1,), train_views=pool, val=val,
                       aux_train=t["A"], aux_test=t["At"][240:], aux_val=t["At"][:240], aux_views=aux_pool,
                       method_params={"amu": {"epochs": 1}}, progress=False, validation="min_k_4")  # fmt: skip
    idx = k_shot_indices(train.labels, 2, 1, num_classes=8)
    got, kw, _ = rec.seen["amu"][-1]  # the refit after the search on the validation split
    assert torch.equal(got, pool[:, idx]) and torch.equal(kw["aux_features"], aux_pool[:, idx])
    assert isinstance(res["params"]["amu"][2][0], dict)  # alpha searched on the val split's aux features too


# ------------------------------------------------------------------ item 9: the dataset's own templates
def test_cli_adapt_uses_the_datasets_templates_and_reports_its_protocol(monkeypatch, tiny_model_dir, capsys):
    import json

    import cliplab.zeroshot as zs
    from cliplab.cli.commands import main
    from cliplab.data import load_dataset

    seen = []
    real = zs.zeroshot_weights
    monkeypatch.setattr(zs, "zeroshot_weights", lambda m, names, templates=None: seen.append(templates)
                        or real(m, names, templates))  # fmt: skip
    spec = "shapes:image_size=32,n=48"
    argv = ["adapt", str(tiny_model_dir), spec, "--shots", "1,2", "--seeds", "1", "--views", "2", "--methods",
            "zeroshot,gda,tip_adapter", "--json", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert seen[-1] == load_dataset(spec, split="train").templates
    assert res["templates"] == "dataset"
    assert res["protocol"]["validation"] == "dataset" and res["protocol"]["passes"] == 2


def test_cli_uses_the_datasets_dassl_draw_for_support_and_validation():
    """coop: data declares Dassl's sampler; the CLI then draws support and val as Dassl: random.seed(seed), per
    label in order of first appearance random.sample(items, k) for train, then min(k, 4) for val."""
    import random

    from cliplab.cli.adapt import _draw
    from cliplab.data.sampling import dassl_k_shot_indices

    class CoopLike:
        k_shot_sampler = staticmethod(dassl_k_shot_indices)

    rng = np.random.default_rng(0)
    train_y, val_y = rng.integers(0, 5, 200), rng.integers(0, 5, 60)

    def reference(labels, k):
        groups = {}
        for i, y in enumerate(labels.tolist()):
            groups.setdefault(y, []).append(i)
        return [i for items in groups.values() for i in random.sample(items, k)]

    draw = _draw(CoopLike(), train_y, val_y)
    for k, seed in [(1, 1), (4, 2), (16, 3)]:
        random.seed(seed)
        want_train, want_val = reference(train_y, k), reference(val_y, min(k, 4))
        got_train, got_val = draw(k, seed)
        assert list(got_train) == want_train and list(got_val) == want_val
    assert _draw(object(), train_y, val_y) is None  # other data: cliplab's sampler
