"""Bench suites: models × datasets, resumable cells, leaderboard files, suite files, --compare over N runs."""

import csv
import json

import pytest

from cliplab.bench.suite import Suite, datasets_from_specs, load_suite, models_from_specs, parse_suite
from cliplab.bench.suite_runner import run_suite
from helpers import make_tiny_model, write_shapes_folder

SHAPES = "shapes:image_size=32"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny models saved as directories and a class folder of 32 px shapes."""
    root = tmp_path_factory.mktemp("suite")
    models = []
    for seed in (0, 1):
        make_tiny_model(seed=seed).save(root / f"model{seed}")
        models.append(str(root / f"model{seed}"))
    folder = write_shapes_folder(root / "folder", 12, seed=3)
    return root, models, str(folder)


class Counter:
    """Counts model loads and embeddings (``cliplab.features.embed``, which every stage's encoding goes through)."""

    def __init__(self, monkeypatch):
        import cliplab.features
        from cliplab.models import load_model

        self.loads, self.embeds = [], 0
        real_embed = cliplab.features.embed

        def embed(*args, **kwargs):
            self.embeds += 1
            return real_embed(*args, **kwargs)

        monkeypatch.setattr(cliplab.features, "embed", embed)

        def load(spec, device=None):
            self.loads.append(spec)
            return load_model(spec, device=device)

        self.load = load


def _suite(models, datasets, n=16):
    return Suite("t", models_from_specs(models), datasets_from_specs(datasets), stages=("zeroshot",), n=n, seeds=(1,))


def _run(suite, out, counter, tmp_path):
    return run_suite(suite, out, cache_dir=tmp_path / "cache", progress=False, load_model=counter.load)


def test_suite_runs_every_cell_and_resumes_without_reencoding(world, tmp_path, monkeypatch):
    root, models, folder = world
    counter = Counter(monkeypatch)
    out = tmp_path / "out"
    suite = _suite(models, [SHAPES, folder, str(root / "no-such-folder")])
    summary = _run(suite, out, counter, tmp_path)
    status = {(c["model"], c["data"]): c["status"] for c in summary["cells"]}
    assert len(status) == 6
    broken = [k for k, s in status.items() if s == "failed"]
    assert {d for _, d in broken} == {suite.datasets[2].name} and len(broken) == 2  # the others went on
    assert sorted(counter.loads) == sorted(models) and counter.embeds > 0  # each model loaded once
    for m in suite.models:
        for d in suite.datasets[:2]:
            res = json.loads((out / m.name / d.name / "results.json").read_text())
            assert res["model"]["spec"] == m.spec and res["data"]["spec"] == d.spec
            assert list(res["stages"]) == ["zeroshot"]
        err = json.loads((out / m.name / suite.datasets[2].name / "error.json").read_text())
        assert "no-such-folder" in err["error"]

    # rerun: finished cells are skipped (no model loaded, nothing embedded); the failed ones are retried
    counter.loads.clear()
    counter.embeds = 0
    again = _run(suite, out, counter, tmp_path)
    assert [c["status"] for c in again["cells"]] == ["cached", "cached", "failed"] * 2
    assert counter.embeds == 0 and sorted(counter.loads) == sorted(models)  # loaded only to retry the failures
    counter.loads.clear()
    again = _run(_suite(models, [SHAPES, folder]), out, counter, tmp_path)
    assert {c["status"] for c in again["cells"]} == {"cached"} and counter.loads == [] and counter.embeds == 0

    # a cell whose results are gone, or were made with other settings, runs again; only that one
    (out / suite.models[1].name / suite.datasets[1].name / "results.json").unlink()
    again = _run(_suite(models, [SHAPES, folder]), out, counter, tmp_path)
    assert [c["status"] for c in again["cells"]] == ["cached", "cached", "cached", "ran"]
    assert counter.loads == [models[1]]
    counter.loads.clear()
    again = _run(_suite(models[:1], [SHAPES], n=20), out, counter, tmp_path)  # other settings: run again
    assert [c["status"] for c in again["cells"]] == ["ran"] and counter.loads == [models[0]]


def test_leaderboard_files_hold_every_cell(world, tmp_path, monkeypatch):
    root, models, folder = world
    counter = Counter(monkeypatch)
    out = tmp_path / "out"
    suite = _suite(models, [SHAPES, folder])
    summary = _run(suite, out, counter, tmp_path)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ran"}
    for r in rows:
        res = json.loads((out / r["model"] / r["data"] / "results.json").read_text())
        task = "shape" if r["data"] == suite.datasets[0].name else "classes"
        assert float(r[f"zeroshot/{task}/acc1"]) == pytest.approx(res["stages"]["zeroshot"][task]["acc1"])
        acc5 = res["stages"]["zeroshot"][task]["acc5"]
        assert (r[f"zeroshot/{task}/acc5"] == "") == (acc5 is None)
    md = (out / "results.md").read_text()
    assert all(m.name in md for m in suite.models) and "zeroshot/shape/acc1" in md
    html = (out / "leaderboard.html").read_text()
    for c in summary["cells"]:
        assert f'href="{c["dir"]}/report.html"' in html
        report = (out / c["dir"] / "report.html").read_text()
        assert 'href="../../leaderboard.html"' in report
    assert json.loads((out / "suite.json").read_text())["cells"] == summary["cells"]
    assert summary["files"] == {"csv": "results.csv", "md": "results.md", "html": "leaderboard.html"}


def test_cli_suite_and_compare_many(world, tmp_path, capsys):
    from cliplab.cli.commands import main

    root, models, folder = world
    out = tmp_path / "cli"
    argv = ["bench", "--model", models[0], "--model", models[1], "--data", SHAPES, "--data", folder]
    argv += ["--only", "zeroshot", "--n", "16", "-o", str(out), "--cache-dir", str(tmp_path / "c"), "-q"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [c["status"] for c in summary["cells"]] == ["ran"] * 4
    assert main(argv) == 0  # the text table; everything cached now
    text = capsys.readouterr().out
    assert "cached" in text and "leaderboard.html" in text
    cells = [str(out / c["dir"]) for c in summary["cells"] if c["data"] == summary["cells"][0]["data"]]
    third = json.loads((out / summary["cells"][0]["dir"] / "results.json").read_text())
    third["stages"]["zeroshot"]["shape"]["acc1"] = 2.0  # clearly the best
    (tmp_path / "c.json").write_text(json.dumps(third))
    assert main(["bench", "--compare", *cells, str(tmp_path / "c.json"), "--json"]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert len(rows["zeroshot/shape/acc1"]["values"]) == 3 and rows["zeroshot/shape/acc1"]["best"] == "C"
    assert main(["bench", "--compare", *cells, str(tmp_path / "c.json")]) == 0
    assert "best" in capsys.readouterr().out
    assert main(["bench", "--compare", cells[0], "-q"]) == 2
    assert "at least two" in capsys.readouterr().err


def test_suite_file_tasks_templates_and_variables(world, tmp_path, monkeypatch):
    root, models, folder = world
    names = sorted(p.name for p in (root / "folder").iterdir())
    (tmp_path / "desc.json").write_text(json.dumps({n: [f"a {n} shape."] for n in names}))
    monkeypatch.setenv("SUITE_FOLDER", folder)
    (tmp_path / "s.yaml").write_text(
        f"name: mine\nmodels: [{models[0]}]\nstages: [zeroshot]\noptions: {{n: 16, seeds: [1]}}\n"
        "datasets:\n"
        "  - {name: folder, data: '${SUITE_FOLDER}', templates: [simple, desc.json]}\n"
        "  - {name: world, data: shapes, task: zeroshot_retrieval, options: {image_size: 32}}\n"
    )
    suite = load_suite(tmp_path / "s.yaml")
    assert [d.spec for d in suite.datasets] == [folder, SHAPES]
    assert suite.datasets[1].stages == ("retrieval",) and suite.stages_of(suite.datasets[0]) == ["zeroshot"]
    assert suite.datasets[0].templates[0] == "simple" and isinstance(suite.datasets[0].templates[1], dict)
    summary = run_suite(suite, tmp_path / "out", cache_dir=tmp_path / "c", progress=False)
    assert [c["status"] for c in summary["cells"]] == ["ran", "ran"], summary
    res = json.loads((tmp_path / "out" / suite.models[0].name / "folder" / "results.json").read_text())
    assert res["config"]["templates"].startswith("sha256:")
    world_res = json.loads((tmp_path / "out" / suite.models[0].name / "world" / "results.json").read_text())
    assert "image_retrieval_recall@5" in world_res["stages"]["retrieval"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("datasets: []", "non-empty list"),
        ("colour: red\ndatasets: [shapes]", "unknown key"),
        ("datasets: [{data: shapes, task: detect}]", "unknown task 'detect'"),
        ("datasets: [{data: shapes, stages: [fewshot]}]", "unknown stage"),
        ("datasets: [shapes, shapes]", "share the name"),
        ("datasets: [{data: 'coop:dtd:root=${NO_SUCH_VAR_H2}'}]", "NO_SUCH_VAR_H2 is not set"),
        ("datasets: [{data: shapes, templates: ['a photo']}]", "placeholder"),
        ("options: {n: many}\ndatasets: [shapes]", "options.n"),
    ],
)
def test_suite_file_errors_name_the_file(text, message, tmp_path):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_suite(tmp_path / "bad.yaml")
    assert "bad.yaml" in str(err.value)


def test_shipped_suites(monkeypatch):
    suite = load_suite("clip_benchmark")
    specs = {d.name: d.spec for d in suite.datasets}
    assert len(specs) >= 40 and specs["vtab_cifar10"] == "wds:clip-benchmark/wds_vtab-cifar10"
    for name in ("imagenet1k", "vtab_cifar100", "vtab_eurosat", "vtab_pcam"):
        assert suite.stages_of(next(d for d in suite.datasets if d.name == name)) == ["zeroshot"]
    for name in ("flickr30k", "mscoco_captions"):
        assert suite.stages_of(next(d for d in suite.datasets if d.name == name)) == ["retrieval"]
    monkeypatch.setenv("COOP_ROOT", "/data/coop")
    coop = load_suite("coop_fewshot")
    assert len(coop.datasets) == 11 and coop.shots == (1, 2, 4, 8, 16) and coop.seeds == (1, 2, 3)
    assert coop.datasets[0].spec == "coop:ImageNet:root=/data/coop"
    with pytest.raises(FileNotFoundError, match=r"unknown suite 'no_such_suite' \(registered: clip_benchmark, coop"):
        load_suite("no_such_suite")
    with pytest.raises(ValueError, match="a mapping"):
        parse_suite(["x"], "inline")


def test_cli_suite_checks_every_spec_first(world, tmp_path, capsys):
    from cliplab.cli.commands import main

    root, models, folder = world
    argv = ["bench", "--model", models[0], "--model", str(tmp_path / "nope"), "--data", folder]
    argv += ["-o", str(tmp_path / "o")]
    assert main([*argv, "-q"]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main(["bench", "--suite", "clip_benchmark", "--data", folder, "-q"]) == 2
    assert "--data" in capsys.readouterr().err
