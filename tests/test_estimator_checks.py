"""Common checks over every registered adapter (``cliplab.adapt.ADAPTERS``) and OOD scorer (``OOD_SCORERS``).

Like scikit-learn's ``check_estimator``: ``fit`` returns self, output shapes, input validation, clone round trip,
determinism under a seed, inputs left untouched, unknown and invalid parameters rejected. A toy adapter is
registered once and runs through the few-shot protocol.
"""

from __future__ import annotations

import numbers

import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone

from cliplab.adapt import ADAPTERS, Adapter, register_method
from cliplab.adapt.protocol import run_few_shot
from cliplab.data import k_shot_indices
from cliplab.features import Features
from cliplab.ood import OOD_SCORERS
from test_adapt import make_task

pytestmark = pytest.mark.usefixtures("one_thread")

C, D, D2 = 4, 16, 12
ADAPTER_NAMES = sorted(ADAPTERS)
SCORERS = sorted(OOD_SCORERS)
#: small settings so every check runs in well under a second (defaults otherwise)
FAST = {"tip_adapter_f": {"epochs": 3}, "clip_adapter": {"epochs": 3}, "amu": {"epochs": 3}, "lp++": {"epochs": 30}}
SCORER_PARAMS = {"knn": {"k": 5}, "vim": {"dim": 8}, "neglabel": {"n_negatives": 20, "ngroup": 2}}


@pytest.fixture(scope="module")
def task():
    return make_task(C=C, D=D, shots=8, n_test=40, seed=3, D2=D2)


# --------------------------------------------------------------------- adapters
def _adapter(name: str) -> Adapter:
    return ADAPTERS[name](**FAST.get(name, {}))


def _inputs(est: Adapter, task: dict, which: str) -> dict:
    """The extra inputs the estimator declares in ``requires``, for the support (``fit``) or query rows."""
    known = {"aux_features": {"fit": task["A"], "query": task["At"]}}
    unknown = set(est.requires) - known.keys()
    assert not unknown, f"the common checks know no test input for {sorted(unknown)}"
    return {name: known[name][which] for name in est.requires}


def _fit(est: Adapter, task: dict, **over) -> Adapter:
    args = {"features": task["X"], "labels": task["y"], "text_weights": task["W"], **over}
    return est.fit(args.pop("features"), args.pop("labels"), **args, **_inputs(est, task, "fit"))


def _logits(est: Adapter, task: dict, features=None) -> torch.Tensor:
    return est.logits(task["Xt"] if features is None else features, **_inputs(est, task, "query"))


def _invalid_value(constraint) -> object:
    """A value the constraint rejects (or None when none of the candidates is rejected)."""
    for value in (-1, -1.5, float("nan"), "not-a-valid-value", 2.5):
        try:
            constraint(value, "p")
        except ValueError:
            return value
    return None


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_adapter_fit_returns_self_and_output_shapes(name, task):
    est = _adapter(name)
    assert _fit(est, task) is est
    logits = _logits(est, task)
    assert logits.shape == (len(task["Xt"]), C) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    pred = est.predict(task["Xt"], **_inputs(est, task, "query"))
    assert pred.shape == (len(task["Xt"]),) and pred.dtype == torch.int64
    assert torch.equal(pred, logits.argmax(1))
    assert est.n_classes_ == C and est.n_features_in_ == D


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_adapter_rejects_bad_inputs(name, task):
    est = _adapter(name)
    X, y = task["X"], task["y"]
    bad_nan = X.clone()
    bad_nan[0, 0] = float("nan")
    cases = {
        "features must have shape": {"features": X[0]},  # 1-D
        "has dimension": {"features": X[:, : D - 1]},
        "NaN": {"features": bad_nan},
        "contains class": {"labels": torch.where(y == 0, torch.tensor(C), y)},  # a class beyond the text weights
        "entries but features has": {"labels": y[:-1]},
    }
    for message, over in cases.items():
        with pytest.raises(ValueError, match=message):
            _fit(_adapter(name), task, **over)
    _fit(est, task)
    with pytest.raises(ValueError, match="dimension"):
        _logits(est, task, task["Xt"][:, : D - 1])
    with pytest.raises(RuntimeError, match="not fitted"):
        _logits(_adapter(name), task)


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_adapter_clone_round_trip(name, task):
    est = _fit(_adapter(name), task)
    twin = clone(est)
    assert type(twin) is type(est) and twin.get_params() == est.get_params()
    assert twin.get_params(deep=False) == est.get_params(deep=True)
    with pytest.raises(RuntimeError, match="not fitted"):
        _logits(twin, task)  # a clone is unfitted
    assert torch.equal(_logits(_fit(twin, task), task), _logits(est, task))


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_adapter_is_deterministic_under_its_seed(name, task):
    first = _logits(_fit(_adapter(name), task), task)
    torch.manual_seed(12345)  # the global generator must not matter
    assert torch.equal(_logits(_fit(_adapter(name), task), task), first)


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_adapter_fit_does_not_mutate_its_inputs(name, task):
    copies = {k: v.clone() for k, v in task.items()}
    est = _fit(_adapter(name), task)
    _logits(est, task)
    for k, v in task.items():
        assert torch.equal(v, copies[k]), f"{name} changed its input {k}"


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_adapter_rejects_unknown_and_invalid_parameters(name, task):
    cls = ADAPTERS[name]
    with pytest.raises(ValueError, match="no parameter 'not_a_param'"):
        cls().set_params(not_a_param=1)
    with pytest.raises(TypeError):
        cls(not_a_param=1)
    params = cls._param_names()
    assert set(cls._constraints) <= set(params), "constraints name only real parameters"
    for param, constraint in cls._constraints.items():
        value = _invalid_value(constraint)
        assert value is not None, f"no invalid test value for {name}.{param}"
        est = _adapter(name).set_params(**{param: value})
        with pytest.raises(ValueError, match=param):
            _fit(est, task)


def test_gda_alpha_is_validated(task):
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        _fit(ADAPTERS["gda"](alpha=-1.0), task)
    with pytest.raises(ValueError, match="alpha"):
        _fit(ADAPTERS["gda"](alpha=float("nan")), task)


def test_amu_declares_its_auxiliary_input_and_fit_refuses_without_it(task):
    amu = ADAPTERS["amu"]
    assert amu.requires == {"aux_features"}
    with pytest.raises(TypeError, match="aux_features"):
        amu(epochs=1).fit(task["X"], task["y"], text_weights=task["W"])


# --------------------------------------------------------------------- OOD scorers
def _scorer(name: str):
    return OOD_SCORERS[name](**SCORER_PARAMS.get(name, {}))


def _scorer_fit(est, task, **over):
    g = torch.Generator().manual_seed(7)
    kwargs = {"train_features": task["X"], "labels": task["y"], "text_weights": task["W"], **over}
    if type(est).__name__ == "NegLabel":
        kwargs["candidate_embeddings"] = F.normalize(torch.randn(200, D, generator=g), dim=1)
    return est.fit(**kwargs)


@pytest.mark.parametrize("name", SCORERS)
def test_scorer_fit_returns_self_and_scores_in_distribution_higher(name, task):
    est = _scorer(name)
    assert _scorer_fit(est, task) is est
    scores = est.score(task["Xt"])
    assert scores.shape == (len(task["Xt"]),) and torch.isfinite(scores).all()
    # far from the training clusters and orthogonal-ish to the text weights: lower scores
    g = torch.Generator().manual_seed(11)
    far = F.normalize(-task["Xt"].mean(0) + 0.3 * torch.randn(len(task["Xt"]), D, generator=g), dim=1)
    assert float(est.score(far).mean()) < float(scores.mean())


@pytest.mark.parametrize("name", SCORERS)
def test_scorer_rejects_bad_inputs(name, task):
    cls = OOD_SCORERS[name]
    for needed in cls.requires:
        with pytest.raises(ValueError, match=needed):
            _scorer_fit(_scorer(name), task, **{needed: None})
    if "train_features" in cls.requires:
        bad = task["X"].clone()
        bad[1, 2] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            _scorer_fit(_scorer(name), task, train_features=bad)
        with pytest.raises(ValueError, match="dimension"):
            _scorer_fit(_scorer(name), task, train_features=task["X"][0])
    if "labels" in cls.requires:
        with pytest.raises(ValueError, match="entries"):
            _scorer_fit(_scorer(name), task, labels=task["y"][:-1])
    if "text_weights" in cls.requires:
        with pytest.raises(ValueError, match="dimension"):
            _scorer_fit(_scorer(name), task, text_weights=task["W"][:, : D - 1])
    est = _scorer_fit(_scorer(name), task)
    with pytest.raises(ValueError, match="dimension"):
        est.score(task["Xt"][:, : D - 1])
    with pytest.raises(RuntimeError, match="not fitted"):
        _scorer(name).score(task["Xt"])


@pytest.mark.parametrize("name", SCORERS)
def test_scorer_clone_determinism_and_untouched_inputs(name, task):
    copies = {k: v.clone() for k, v in task.items()}
    est = _scorer_fit(_scorer(name), task)
    scores = est.score(task["Xt"])
    twin = clone(est)
    assert type(twin) is type(est) and twin.get_params(deep=False) == est.get_params()
    with pytest.raises(RuntimeError, match="not fitted"):
        twin.score(task["Xt"])
    torch.manual_seed(999)
    assert torch.equal(_scorer_fit(twin, task).score(task["Xt"]), scores)
    for k, v in task.items():
        assert torch.equal(v, copies[k]), f"{name} changed its input {k}"


@pytest.mark.parametrize("name", SCORERS)
def test_scorer_rejects_unknown_and_invalid_parameters(name, task):
    cls = OOD_SCORERS[name]
    with pytest.raises(ValueError, match="no parameter 'not_a_param'"):
        cls().set_params(not_a_param=1)
    with pytest.raises(TypeError):
        cls(not_a_param=1)
    assert set(cls._constraints) <= set(cls._param_names())
    for param, constraint in cls._constraints.items():
        value = _invalid_value(constraint)
        assert value is not None, f"no invalid test value for {name}.{param}"
        with pytest.raises(ValueError, match=param):
            cls(**{param: value})  # refused at construction, as before
        est = _scorer(name).set_params(**{param: value})
        with pytest.raises(ValueError, match=param):
            _scorer_fit(est, task)  # and by fit after set_params


# --------------------------------------------------------------------- a toy adapter through the protocol
class NearestMean(Adapter):
    """Zero-shot plus ``gain`` · cosine to each class's support mean (for the registration test)."""

    _constraints = {"gain": lambda v, n: None if isinstance(v, numbers.Real) and v >= 0 else _raise(n, v)}

    def __init__(self, gain: float = 10.0) -> None:
        self.gain = gain

    @classmethod
    def default_grid(cls) -> dict:
        return {"gain": [1.0, 10.0]}

    def _fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        means = torch.zeros(self.n_classes_, X.shape[2]).index_add_(0, y, X.mean(0))
        self.means_ = F.normalize(means, dim=1)

    def _logits(self, f: torch.Tensor) -> torch.Tensor:
        return self._zero_shot(f) + float(self.gain) * f @ self.means_.T


def _raise(name, value):
    raise ValueError(f"{name} must be >= 0, got {value!r}")


@pytest.fixture
def toy_method():
    register_method("nearest_mean", NearestMean)
    yield "nearest_mean"
    ADAPTERS.pop("nearest_mean")


def test_a_registered_toy_adapter_runs_through_the_protocol(toy_method, task):
    train = Features(images=task["X"], labels=task["y"])
    test = Features(images=task["Xt"], labels=task["yt"])
    out = run_few_shot(train, test, task["W"], shots=[4], seeds=[1, 2], search=False, progress=False)
    assert toy_method in out["methods"] and "amu" not in out["methods"]  # no aux features given
    runs = out["results"][toy_method][4]["runs"]
    expected = []
    for seed in (1, 2):
        idx = torch.as_tensor(k_shot_indices(task["y"], 4, seed, num_classes=C))
        est = NearestMean().fit(task["X"][idx], task["y"][idx], text_weights=task["W"], logit_scale=100.0)
        expected.append(float((est.predict(task["Xt"]) == task["yt"]).float().mean()))
    assert runs == expected
    assert out["params"][toy_method][4] == ["defaults", "defaults"]
    with pytest.raises(ValueError, match="gain"):
        NearestMean(gain=-1).fit(task["X"], task["y"], text_weights=task["W"])
    with pytest.raises(ValueError, match="already registered"):
        register_method(toy_method, type("Other", (NearestMean,), {}))


def test_the_protocol_passes_declared_extra_inputs(task):
    seen = []

    class NeedsDepth(NearestMean):
        requires = frozenset({"depth"})

        def _fit(self, X, y, *, depth):
            seen.append(depth)
            super()._fit(X, y)

        def _logits(self, f, *, depth):
            assert depth.shape[0] == f.shape[0]
            return super()._logits(f)

    train = Features(images=task["X"], labels=task["y"])
    test = Features(images=task["Xt"], labels=task["yt"])
    depth_train, depth_test = torch.arange(len(task["X"])).float()[:, None], torch.zeros(len(task["Xt"]), 1)
    register_method("needs_depth", NeedsDepth)
    try:
        with pytest.raises(ValueError, match="needs_depth needs depth"):
            run_few_shot(train, test, task["W"], methods=["needs_depth"], shots=[2], seeds=[1], progress=False)
        out = run_few_shot(train, test, task["W"], shots=[2], seeds=[1], search=False, progress=False)
        assert "needs_depth" not in out["methods"]  # skipped by default without its input
        run_few_shot(
            train,
            test,
            task["W"],
            methods=["needs_depth"],
            shots=[2],
            seeds=[1],
            search=False,
            progress=False,
            extra_inputs={"depth": (depth_train, depth_test)},
        )
    finally:
        ADAPTERS.pop("needs_depth")
    idx = torch.as_tensor(k_shot_indices(task["y"], 2, 1, num_classes=C))
    assert torch.equal(seen[-1].flatten(), idx.float())  # the support rows of the extra input
