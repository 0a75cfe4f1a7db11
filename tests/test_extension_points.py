"""Every extension point takes a toy plug-in with one registration call and no other file edited, and the public
entry point then uses it end to end.

Covered elsewhere: a data source through ``load_dataset`` and the CLI (``test_data_sources.py``), a model source
through ``load_model`` and an entry point (``test_model_sources.py``), an adapter through ``run_few_shot``
(``test_estimator_checks.py``), a kind of bench data (``test_bench_stages.py``), the Registry itself
(``test_extension.py``).
"""

import json

import pytest
import torch

from cliplab.features import Features


# -- prompt learner -------------------------------------------------------------------------------------------
def test_a_registered_prompt_learner_runs_through_the_prompt_protocol(tiny, colour_world):
    from cliplab.adapt.prompting import PROMPT_METHODS, CoOp, register_prompt_method, run_prompt_few_shot
    from cliplab.cli.prompt_methods import split_methods
    from cliplab.features import embed
    from cliplab.zeroshot import zeroshot_weights

    class FixedPrompt(CoOp):
        """CoOp with its context fixed to a phrase and no training: the zero-shot classifier of that template."""

    train, test = colour_world
    with PROMPT_METHODS.restoring():
        register_prompt_method("fixed_prompt", FixedPrompt)
        assert split_methods("zeroshot,fixed_prompt") == (["zeroshot"], ["fixed_prompt"])  # cliplab adapt --methods
        res = run_prompt_few_shot(
            tiny,
            train,
            test,
            methods=["fixed_prompt"],
            shots=[1],
            seeds=[1],
            params={"fixed_prompt": {"epochs": 0, "ctx_init": "a photo of a"}},
            search=False,
            embed_kw={"cache_dir": False},
            progress=False,
        )
    assert "fixed_prompt" not in PROMPT_METHODS
    feats = embed(tiny, test, cache_dir=False, progress=False)
    w = zeroshot_weights(tiny, feats.classnames, ["a photo of a {}."])
    expected = float(((feats.images @ w.T).argmax(1) == feats.labels).float().mean())
    assert res["results"]["fixed_prompt"][1]["runs"] == [pytest.approx(expected)]


# -- fine-tuning objective ------------------------------------------------------------------------------------
def test_a_registered_finetune_objective_trains_through_finetune(tiny):
    from cliplab.data import shapes
    from cliplab.finetune import FINETUNE_OBJECTIVES, finetune, register_finetune_objective
    from cliplab.finetune.config import FinetuneConfig

    calls = []

    def text_ce(batch):
        """Cross-entropy of the scaled cosines to the frozen class text features (towers trained)."""
        calls.append((batch.features.shape, batch.labels.shape, batch.head))
        return torch.nn.functional.cross_entropy(batch.scale * batch.features @ batch.text_weights.T, batch.labels)

    train = shapes("train", n=16, seed=1, image_size=32, task="colour")
    with FINETUNE_OBJECTIVES.restoring():
        register_finetune_objective("text_ce", text_ce)
        assert FinetuneConfig(method="text_ce").method == "text_ce"  # the config file accepts it
        clf = finetune(tiny, train, method="text_ce", steps=2, batch_size=8, lr=1e-3, progress=False)
    assert "text_ce" not in FINETUNE_OBJECTIVES
    with pytest.raises(ValueError, match="method must be one of"):
        finetune(tiny, train, method="text_ce", steps=1, progress=False)
    assert len(calls) == 2 and all(f[0] == 8 and y == (8,) and head is None for f, y, head in calls)
    assert clf.info["method"] == "text_ce" and clf.info["steps"] == 2
    before = dict(tiny.module.named_parameters())
    after = dict(clf.model.module.named_parameters())
    assert any(not torch.equal(before[k].detach().cpu(), after[k].detach().cpu()) for k in before)  # trained


# -- OOD scorer -----------------------------------------------------------------------------------------------
def test_a_registered_ood_scorer_runs_in_ood_evaluation():
    from cliplab.assess import ood_evaluation, ood_methods
    from cliplab.metrics import ood_metrics
    from cliplab.ood import OOD_SCORERS, OODScorer, register_ood_scorer

    class CentreDistance(OODScorer):
        """Minus the distance to the training features' mean."""

        requires = frozenset({"train_features"})

        def fit(self, train_features=None, labels=None, text_weights=None):
            self._check_inputs(train_features=train_features)
            self.centre_ = torch.as_tensor(train_features).mean(0)
            return self

        def score(self, features):
            return -(torch.as_tensor(features) - self.centre_).norm(dim=1)

    g = torch.Generator().manual_seed(0)
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    train = Features(images=unit(torch.randn(40, 8, generator=g) + 2), labels=torch.arange(40) % 4)
    id_f = Features(images=unit(torch.randn(20, 8, generator=g) + 2), labels=torch.arange(20) % 4)
    far = Features(images=unit(torch.randn(20, 8, generator=g) - 2))
    w = unit(torch.randn(4, 8, generator=g))
    with OOD_SCORERS.restoring():
        register_ood_scorer("centre_distance", CentreDistance)
        assert ood_methods()["centre_distance"] == "scorer"
        res = ood_evaluation(id_f, {"far": far}, w, 100.0, train_features=train)  # every method by default
        skipped = ood_evaluation(id_f, {"far": far}, w, 100.0, methods=["msp", "centre_distance"])
    assert "centre_distance" in res["methods"]
    centre = train.images.mean(0)
    expected = ood_metrics(-(id_f.images - centre).norm(dim=1), -(far.images - centre).norm(dim=1))
    assert res["sets"]["far"]["centre_distance"]["auroc"] == pytest.approx(expected["auroc"])
    assert skipped["methods"] == ["msp"] and "train_features" in skipped["skipped"]["centre_distance"]


# -- accuracy estimator ---------------------------------------------------------------------------------------
def test_a_registered_accuracy_estimator_runs_in_the_estimation_evaluation():
    from cliplab.assess import estimation_evaluation
    from cliplab.estimate import ESTIMATORS, average_confidence, register_estimator

    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    sets = [(f"s{i}", torch.randn(60, 3, generator=g) + (3 - i) * torch.eye(3)[y], y) for i in range(4)]
    zv, yv = sets[0][1], y
    with ESTIMATORS.restoring():
        register_estimator("half_confidence", lambda z, zv, yv: 0.5 * average_confidence(z), accuracy=True)
        res = estimation_evaluation(zv, yv, sets)
    assert "half_confidence" not in ESTIMATORS
    est = res["estimators"]["half_confidence"]
    for name, z, _ in sets:
        assert est["estimates"][name] == pytest.approx(0.5 * average_confidence(z))
    truth = [res["accuracy"][n] for n, _, _ in sets]
    mae = sum(abs(est["estimates"][n] - t) for (n, _, _), t in zip(sets, truth)) / len(sets)
    assert est["mae"] == pytest.approx(mae)  # registered as an accuracy: its MAE is reported
    assert res["estimators"]["mano"]["mae"] is None


# -- bench stage, placed by its declared order -----------------------------------------------------------------
def test_a_registered_stage_takes_its_declared_place_and_runs_with_only(tiny_model_dir, tmp_path):
    from cliplab.bench import STAGES, Stage, register_stage
    from cliplab.cli.commands import main

    def run(ctx):
        ds = ctx.dataset("test")
        return {"n": len(ds)}

    with STAGES.restoring():
        register_stage(Stage("count", run, title="image count", order=15))  # between zeroshot (10) and adapt (20)
        names = list(STAGES)
        assert names.index("count") == names.index("zeroshot") + 1 == names.index("adapt") - 1
        out = tmp_path / "run"
        argv = ["bench", "--model", str(tiny_model_dir), "--data", "shapes:image_size=32", "--n", "8", "-q"]
        assert main([*argv, "--only", "count", "-o", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "count" not in STAGES
    res = json.loads((out / "results.json").read_text())
    assert res["stages"]["count"] == {"n": 8} and res["config"]["stages"] == ["count"]
    assert "image count" in (out / "report.html").read_text()


# -- probe format ---------------------------------------------------------------------------------------------
def test_a_registered_probe_format_is_read_by_cliplab_probe(tiny_model_dir, capsys):
    from cliplab.cli.commands import main
    from cliplab.probes import PROBE_FORMATS, builtin_probe, load_probe, register_probe_format

    def load_small(target, *, n=4):
        return builtin_probe("test", n=n, image_size=32)

    with PROBE_FORMATS.restoring():
        register_probe_format(
            "small_shapes", load_small, options=("n",), description="small_shapes[:n=..]", target=False
        )
        assert load_probe("small_shapes:n=3").captions == builtin_probe("test", n=3, image_size=32).captions
        with pytest.raises(ValueError, match="unknown option"):
            load_probe("small_shapes:m=3")
        assert main(["probe", str(tiny_model_dir), "small_shapes:n=4", "--json", "--no-cache"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "small_shapes:n=4" in out["probes"]
    with pytest.raises(ValueError, match="accepted forms"):
        load_probe("small_shapes:n=3")


# -- suite ----------------------------------------------------------------------------------------------------
def test_a_registered_suite_is_found_by_name(tmp_path):
    from cliplab.bench.suite import SUITES, load_suite, register_suite

    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nmodels: [builtin:shapes]\nstages: [zeroshot]\ndatasets:\n  - data: shapes:n=16\n")
    with SUITES.restoring():
        register_suite("mine", path)
        suite = load_suite("mine")
        with pytest.raises(ValueError, match="already registered"):
            register_suite("mine", tmp_path / "other.yaml")
        with pytest.raises(FileNotFoundError, match="did you mean 'mine'"):
            load_suite("mien")
    assert suite.name == "mine" and [d.spec for d in suite.datasets] == ["shapes:n=16"]
    assert suite.stages_of(suite.datasets[0]) == ["zeroshot"]
    assert "mine" not in SUITES and "clip_benchmark" in SUITES
