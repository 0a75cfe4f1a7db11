"""Recipes as data (issue #26): the files, the loader, the protocol's use of them and the generated table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cliplab.adapt.protocol import method_settings, run_few_shot
from cliplab.adapt.protocol_settings import FewShotProtocol
from cliplab.adapt.registry import ADAPTERS
from cliplab.features import Features
from cliplab.recipes import VALIDATION, load_recipe, recipe_methods, recipe_names, search_grid
from test_adapt import make_task

ROOT = Path(__file__).resolve().parents[1]
FEATURE_ADAPTERS = ("tip_adapter", "tip_adapter_f", "gda", "lp++", "amu", "clip_adapter", "linear_probe")


def test_every_feature_adapter_has_recipes_with_a_source_and_one_default():
    assert set(FEATURE_ADAPTERS) <= set(recipe_methods())
    for method in recipe_methods():
        recipes = [load_recipe(method, n) for n in recipe_names(method)]
        assert sum(r.default for r in recipes) == 1, method
        cls = ADAPTERS[method]
        for r in recipes:
            assert r.source["repository"] and r.source["file"] and r.validation in VALIDATION
            unknown = set(r.params) - set(cls._param_names())
            assert not unknown, f"{method}/{r.name}: {unknown} are not {cls.__name__} parameters"


def test_reference_validation_and_fixed_parameters():
    """Tip-Adapter and GDA: the whole val split; LP++: k per class; AMU α 0.5 and CLIP-Adapter ratio 0.2 fixed."""
    assert load_recipe("tip_adapter").validation == "full" and load_recipe("gda").validation == "full"
    assert load_recipe("lp++").validation == "k_per_class"
    assert load_recipe("linear_probe").validation == "min_k_4"  # lpclip's val_shot_list
    amu, adapter = load_recipe("amu"), load_recipe("clip_adapter")
    assert amu.validation == "none" and amu.params["alpha"] == 0.5 and amu.params["lambda_"] == 0.35
    assert adapter.validation == "none" and adapter.params["ratio"] == 0.2


def test_tip_recipes_are_selected_by_dataset_and_are_the_official_configs():
    assert load_recipe("tip_adapter_f", dataset="coop:eurosat:root=/x").params["epochs"] == 100
    assert load_recipe("tip_adapter", dataset="shapes").name == "imagenet"  # other data: the default
    r = load_recipe("tip_adapter", "oxford_flowers")
    assert r.source == {"repository": "gaopengcuhk/Tip-Adapter", "file": "configs/oxford_flowers.yaml"}
    assert r.grid["beta"] == search_grid(50, 200) and len(r.grid["alpha"]) == 20
    from cliplab.adapt.tip_settings import TIP_SETTINGS

    assert TIP_SETTINGS["fgvc"].init_alpha == 5 and TIP_SETTINGS["fgvc"].search_scale == (30, 30)  # one truth


def test_user_recipe_file_and_bad_names(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "method: gda\nsource: {repository: me/mine, file: notes.md}\nvalidation: min_k_4\n"
        "params: {covariance: class_mean}\ngrid: {alpha: [0.5, 5.0]}\n"
    )
    r = load_recipe("gda", str(path))
    assert r.name == "mine" and r.params == {"covariance": "class_mean"} and r.grid == {"alpha": [0.5, 5.0]}
    with pytest.raises(ValueError, match="recipes: "):
        load_recipe("gda", "nope")
    with pytest.raises(ValueError, match="not 'amu'"):
        load_recipe("amu", str(path))
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: gda\nsource: {repository: a, file: b}\nvalidation: sometimes\n")
    with pytest.raises(ValueError, match="validation must be one of"):
        load_recipe("gda", str(bad))
    with pytest.raises(ValueError, match="validation"):
        FewShotProtocol(validation="sometimes")


@pytest.fixture(scope="module")
def small():
    t = make_task(C=4, D=16, shots=8, n_test=80, seed=2)
    v = make_task(C=4, D=16, shots=6, n_test=8, seed=2)
    train, val = Features(images=t["X"], labels=t["y"]), Features(images=v["X"], labels=v["y"])
    return train, Features(images=t["Xt"], labels=t["yt"]), t["W"], val


def test_protocol_runs_each_methods_recipe_and_records_it(small, monkeypatch):
    train, test, W, val = small
    seen: dict[str, list] = {}
    for name in ("clip_adapter", "gda"):
        cls = ADAPTERS[name]

        class Spy(cls):  # type: ignore[valid-type, misc]
            def _score_grid(self, features, settings, _n=name, **kw):
                seen.setdefault(_n, []).append(len(features))
                return super()._score_grid(features, settings, **kw)

        monkeypatch.setitem(ADAPTERS, name, Spy)
    res = run_few_shot(train, test, W, methods=["gda", "clip_adapter"], shots=(2,), seeds=(1,), val=val,
                       method_params={"clip_adapter": {"epochs": 1}}, progress=False)  # fmt: skip
    assert seen == {"gda": [len(val)]}  # GDA on the whole val split; CLIP-Adapter: no search
    assert res["params"]["clip_adapter"][2] == ["defaults"]
    rec = res["recipes"]
    assert rec["gda"]["recipe"] == "few_shots" and rec["gda"]["source"]["repository"] == "mrflogs/ICLR24"
    assert rec["clip_adapter"]["params"] == {"ratio": 0.2, "reduction": 4, "epochs": 1}  # method_params applied
    assert rec["clip_adapter"]["validation"] == "none"
    json.dumps(rec)  # goes into --json and results.json as is
    # today's rule as the named option: every method searched on min(k, 4) per class
    seen.clear()
    res = run_few_shot(train, test, W, methods=["gda", "clip_adapter"], shots=(2,), seeds=(1,), val=val,
                       method_params={"clip_adapter": {"epochs": 1}}, validation="min_k_4", progress=False)  # fmt: skip
    assert seen == {"gda": [2 * 4], "clip_adapter": [2 * 4] * 9}
    assert res["recipes"]["gda"]["validation"] == "min_k_4"


def test_base_to_new_runs_gdas_base2new_recipe():
    params, _ = method_settings("gda", None, recipes={"gda": "base2new"})
    assert params["covariance"] == "class_mean"


def test_cli_recipe_option_is_checked_before_any_work(tmp_path):
    from cliplab.cli.adapt import parse_recipes
    from cliplab.cli.common import UsageError

    assert parse_recipes("tip=caltech101,gda=base2new") == {
        "tip_adapter": "caltech101", "tip_adapter_f": "caltech101", "gda": "base2new"
    }  # fmt: skip
    path = tmp_path / "mine.yaml"
    path.write_text("method: amu\nsource: {repository: me/x, file: y}\nvalidation: none\nparams: {alpha: 1.0}\n")
    assert parse_recipes(str(path)) == {"amu": str(path)}
    with pytest.raises(UsageError, match="--recipe 'gda=nope'"):
        parse_recipes("gda=nope")


def test_docs_settings_table_is_generated_from_the_recipe_files():
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (ROOT / "docs" / "settings.md").read_text()
    assert module.replaced(text) == text, (
        "docs/settings.md is stale: run PYTHONPATH=src python scripts/settings_table.py"
    )
    assert "`tip_adapter_f` | `eurosat`" in text and "`epochs` 100" in text
