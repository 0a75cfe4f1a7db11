"""cliplab.adapt.search: stratified validation splits, grid search, and proof that test data never enters."""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliplab.adapt import AMU, GDA, LinearProbe, TipAdapter, TipAdapterF, grid_search, search_and_fit, split_validation
from test_adapt import make_task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task():
    return make_task(C=10, D=32, shots=8, n_test=300)


def test_split_validation_is_stratified_disjoint_and_reproducible():
    y = torch.arange(5).repeat_interleave(8)
    train, val = split_validation(y, 0.25, seed=3)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(40))
    assert torch.bincount(y[val], minlength=5).tolist() == [2] * 5
    again = split_validation(y, 0.25, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    assert not torch.equal(split_validation(y, 0.25, seed=4)[1], val)
    _, val = split_validation(y, per_class=3, seed=0)
    assert torch.bincount(y[val]).tolist() == [3] * 5


def test_split_validation_keeps_a_training_sample_per_class():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    train, val = split_validation(y, per_class=5)
    assert sorted(y[train].tolist()) == [0, 1, 2]  # class 1 (one sample) gives no validation sample
    with pytest.raises(ValueError, match="single sample"):
        split_validation(torch.arange(4))
    with pytest.raises(ValueError, match="val_fraction"):
        split_validation(y, 1.5)


def brute_force(cls, grid, t, train, val):
    """Fit and score every setting separately (no shared work)."""
    accs = []
    for beta in grid.get("beta", [None]):
        for alpha in grid["alpha"]:
            params = {"alpha": alpha} | ({} if beta is None else {"beta": beta})
            est = cls(**params).fit(t["X"][train], t["y"][train], text_weights=t["W"])
            accs.append(float((est.predict(t["X"][val]) == t["y"][val]).float().mean()))
    return accs


@pytest.mark.parametrize("cls", [TipAdapter, GDA])
def test_grid_search_shared_scoring_equals_brute_force(cls, task):
    train, val = split_validation(task["y"], 0.25, seed=0)
    grid = {"beta": [0.5, 3.0, 6.0], "alpha": [0.1, 1.0, 2.5]} if cls is TipAdapter else cls.default_grid()
    best, table = grid_search(
        cls, grid, task["X"][train], task["y"][train], task["X"][val], task["y"][val], text_weights=task["W"]
    )
    np.testing.assert_allclose([row["val_accuracy"] for row in table], brute_force(cls, grid, task, train, val))
    top = max(row["val_accuracy"] for row in table)
    assert next(row for row in table if row["val_accuracy"] == top) == best | {"val_accuracy": top}


def test_grid_search_fits_once_per_setting_of_fit_parameters(task, monkeypatch):
    fits = []
    monkeypatch.setattr(TipAdapterF, "_fit", lambda self, X, y: fits.append(1) or TipAdapter._fit(self, X, y))
    train, val = split_validation(task["y"], 0.25)
    grid = {"alpha": [0.5, 1.0], "beta": [1.0, 2.0], "lr": [1e-3, 1e-2]}
    _, table = grid_search(
        TipAdapterF, grid, task["X"][train], task["y"][train], task["X"][val], task["y"][val], text_weights=task["W"]
    )
    assert len(table) == 8 and len(fits) == 2  # alpha/beta only change the logits: one fit per lr


class Spy:
    """Records every feature matrix that reaches ``fit`` / ``logits`` / the grid scorer of a wrapped class."""

    def __init__(self, cls):
        self.seen: list[torch.Tensor] = []
        spy = self

        class Spied(cls):
            def fit(self, features, labels, **kw):
                spy.seen.append(torch.as_tensor(features).reshape(-1, torch.as_tensor(features).shape[-1]))
                return super().fit(features, labels, **kw)

            def logits(self, features, **kw):
                spy.seen.append(torch.as_tensor(features))
                return super().logits(features, **kw)

            def _score_grid(self, features, settings, **kw):
                spy.seen.append(torch.as_tensor(features))
                return super()._score_grid(features, settings, **kw)

        self.cls = Spied


def rows_within(rows: torch.Tensor, pool: torch.Tensor) -> bool:
    """Every row of ``rows`` equals some row of ``pool``."""
    return bool((torch.cdist(rows.double(), pool.double()).min(dim=1).values < 1e-6).all())


@pytest.mark.parametrize("cls", [TipAdapter, GDA, functools.partial(TipAdapterF, epochs=2)])
def test_search_only_ever_sees_the_support_set(cls, task):
    """The proof that test data cannot reach the search: everything fit/logits receive is support data."""
    spy = Spy(cls.func if isinstance(cls, functools.partial) else cls)
    factory = functools.partial(spy.cls, **cls.keywords) if isinstance(cls, functools.partial) else spy.cls
    grid = {"alpha": [0.5, 2.0], "beta": [1.0, 4.0]} if "beta" in inspect.signature(spy.cls).parameters else None
    est, best, table = search_and_fit(factory, task["X"], task["y"], text_weights=task["W"], param_grid=grid)
    assert spy.seen and all(rows_within(seen, task["X"]) for seen in spy.seen)
    assert not any(rows_within(seen[:1], task["Xt"]) for seen in spy.seen)
    # search_and_fit has no parameter that could carry a test or extra evaluation set
    names = set(inspect.signature(search_and_fit).parameters)
    assert names == {
        "estimator_factory",
        "features",
        "labels",
        "text_weights",
        "logit_scale",
        "param_grid",
        "val_fraction",
        "per_class",
        "seed",
        "extra",
    }
    # test data is only touched after the search, by the caller
    n = len(spy.seen)
    est.predict(task["Xt"])
    assert len(spy.seen) == n + 1


def test_search_with_views_validates_on_view_averages_of_support_images(task):
    views = torch.stack([task["X"], F.normalize(task["X"] + 0.1 * torch.randn_like(task["X"]), dim=1)])
    spy = Spy(GDA)
    search_and_fit(spy.cls, views, task["y"], text_weights=task["W"])
    pool = torch.cat([views.reshape(-1, 32), F.normalize(views.mean(0), dim=1)])
    assert all(rows_within(seen, pool) for seen in spy.seen)


def test_search_and_fit_refits_the_best_setting_on_all_support(task):
    est, best, table = search_and_fit(GDA, task["X"], task["y"], text_weights=task["W"], seed=1)
    assert len(table) == 7 and set(best) == {"alpha"}
    ref = GDA(**best).fit(task["X"], task["y"], text_weights=task["W"])
    torch.testing.assert_close(est.logits(task["Xt"]), ref.logits(task["Xt"]))
    zero_shot = float(((task["Xt"] @ task["W"].T).argmax(1) == task["yt"]).float().mean())
    assert float((est.predict(task["Xt"]) == task["yt"]).float().mean()) > zero_shot


def test_search_and_fit_splits_auxiliary_features(task):
    est, best, table = search_and_fit(
        functools.partial(AMU, epochs=2), task["X"], task["y"], text_weights=task["W"], aux_features=task["A"]
    )
    assert [row["alpha"] for row in table] == AMU.default_grid()["alpha"]
    assert est.logits(task["Xt"], aux_features=task["At"]).shape == (300, 10)


def test_linear_probe_searches_C_inside_the_support_set(task):
    # without a validation set the probe carves one from the support set and runs lpclip's search there:
    # the 1e6 … 1e-6 grid first, then the binary-search rounds
    est = LinearProbe(max_iter=30).fit(task["X"], task["y"], text_weights=task["W"])
    grid = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]
    assert [row["C"] for row in est.search_table_[:7]] == grid
    assert est.C_ in [row["C"] for row in est.search_table_]


def test_grid_search_rejects_bad_grids_and_val_sets(task):
    X, y, W = task["X"], task["y"], task["W"]
    with pytest.raises(ValueError, match="non-empty list"):
        grid_search(GDA, {"alpha": []}, X, y, X, y, text_weights=W)
    with pytest.raises(ValueError, match="val_labels has 79 entries but val_features has 80 rows"):
        grid_search(GDA, {"alpha": [1.0]}, X, y, X, y[:-1], text_weights=W)
    with pytest.raises(TypeError, match="unexpected keyword argument 'gamma'"):
        search_and_fit(GDA, X, y, text_weights=W, param_grid={"gamma": [1.0]})
