"""cliplab.adapt.protocol: the support sets run_few_shot draws (one per shots × seed), and its reproducibility."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cliplab.adapt import TipAdapter, protocol
from cliplab.adapt.protocol import run_few_shot
from cliplab.data import k_shot_indices
from cliplab.features import Features
from test_adapt import make_task

pytestmark = pytest.mark.usefixtures("one_thread")

SHOTS, SEEDS = (1, 2, 4), (1, 2, 3, 4)


@pytest.fixture(scope="module")
def data():
    t = make_task(C=5, D=16, shots=10, n_test=120, seed=1)
    return Features(images=t["X"], labels=t["y"]), Features(images=t["Xt"], labels=t["yt"]), t["W"]


def _support_sets(monkeypatch, data, **kw):
    """Run the protocol with a Tip-Adapter that records the training rows of every support set it is fitted on:
    ``{(k, seed): sorted train indices}`` (jobs run shots-major, seeds inner)."""
    train, test, W = data
    seen = []

    class Recording(TipAdapter):
        def fit(self, features, labels, **fit_kw):
            rows = (torch.as_tensor(features)[:, None, :] == train.images[None]).all(-1)
            assert bool((rows.sum(1) == 1).all()), "every support row is one training image"
            idx = rows.float().argmax(1)
            assert torch.equal(train.labels[idx], torch.as_tensor(labels)), "support labels are the training labels"
            seen.append(sorted(idx.tolist()))
            return super().fit(features, labels, **fit_kw)

    monkeypatch.setitem(protocol.ADAPTERS, "tip_adapter", Recording)
    out = run_few_shot(train, test, W, methods=["tip_adapter"], shots=SHOTS, seeds=SEEDS, progress=False, **kw)
    jobs = list(itertools.product(SHOTS, SEEDS))
    assert len(seen) == len(jobs)  # search=False: exactly one fit per (k, seed)
    return dict(zip(jobs, seen)), out


def test_each_seed_draws_its_own_support_set_and_repeats_it(monkeypatch, data):
    train = data[0]
    first, out = _support_sets(monkeypatch, data, search=False)
    again, out_again = _support_sets(monkeypatch, data, search=False)
    assert first == again  # the same seed draws exactly the same support set
    assert out["results"] == out_again["results"]
    for k in SHOTS:
        sets = [tuple(first[k, seed]) for seed in SEEDS]
        assert len(set(sets)) == len(SEEDS), f"{k}-shot: seeds {SEEDS} must draw different support sets"
        for seed in SEEDS:
            labels = train.labels[first[k, seed]]
            assert torch.bincount(labels, minlength=5).tolist() == [k] * 5  # k images of every class
            # the documented sampler, with this run's seed
            assert first[k, seed] == sorted(k_shot_indices(train.labels, k, seed, num_classes=5).tolist())
    # different support sets give different accuracies: the spread over seeds is not zero
    assert any(r["std"] > 0 for r in out["results"]["tip_adapter"].values())
    for r in out["results"]["tip_adapter"].values():
        assert r["mean"] == pytest.approx(np.mean(r["runs"])) and r["std"] == pytest.approx(np.std(r["runs"]))


def test_run_few_shot_with_search_is_reproducible(data):
    train, test, W = data
    kw = dict(methods=["tip_adapter", "gda", "lp++"], shots=(2, 4), seeds=(1, 2), progress=False)
    a, b = run_few_shot(train, test, W, **kw), run_few_shot(train, test, W, **kw)
    assert a["results"] == b["results"] and a["params"] == b["params"]
    assert [len(a["results"][m][k]["runs"]) for m in kw["methods"] for k in (2, 4)] == [2] * 6


def test_one_protocol_object_gives_the_keyword_form_results(data):
    from cliplab.adapt import FewShotProtocol
    from cliplab.adapt.base_new_protocol import base_to_new

    train, test, W = data
    settings = FewShotProtocol(methods=["tip_adapter", "gda"], shots=[1, 2], seeds=[1, 2], search=False, progress=False)
    assert settings.methods == ("tip_adapter", "gda") and settings.shots == (1, 2)  # kept immutable
    a = run_few_shot(train, test, W, settings)
    b = run_few_shot(train, test, W, methods=["tip_adapter", "gda"], shots=[1, 2], seeds=[1, 2], search=False,
                     progress=False)  # fmt: skip
    assert a["results"] == b["results"] and a["params"] == b["params"] and a["protocol"] == b["protocol"]
    # a keyword overrides the object's field
    c = run_few_shot(train, test, W, settings, shots=[2])
    assert c["results"]["gda"][2] == a["results"]["gda"][2] and list(c["results"]["gda"]) == [2]
    # base-to-new: k defaults to min(16, max(shots))
    d = base_to_new(train, test, W, settings, methods=["gda"])
    assert d["k"] == 2 and d == base_to_new(train, test, W, methods=["gda"], k=2, seeds=[1, 2], search=False)
    with pytest.raises(TypeError, match=r"run_few_shot\(\) got unexpected keyword argument\(s\) \['shot'\]"):
        run_few_shot(train, test, W, settings, shot=[2])
    with pytest.raises(ValueError, match="shots must be positive"):
        FewShotProtocol(shots=[0, 2])
    with pytest.raises(ValueError, match="seeds must be a non-empty"):
        FewShotProtocol(seeds=[])
    assert FewShotProtocol(shots=np.array([1, 4])).shots == (1, 4)
