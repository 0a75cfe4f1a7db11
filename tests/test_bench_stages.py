"""Bench stages as plug-ins: one ``register_stage`` call feeds the runner, the report and ``--compare``."""

import json
import re
from pathlib import Path

import pytest

from cliplab.bench import STAGES, Metric, Stage, StageResult, register_stage, unregister_stage
from cliplab.bench.comparison import compare

#: the built-in default stages, in the order they declare
BUILTIN_ORDER = (
    "zeroshot",
    "adapt",
    "linear_probe",
    "retrieval",
    "probes",
    "geometry",
    "ood",
    "calibration",
    "estimate",
)


class Note:
    """In-memory report data (not JSON-able): only the stage's own section may see it."""

    def __init__(self, text):
        self.text = text


def _toy_run(ctx):
    sets = ctx.data.main("toy")  # the main task's test set, whatever the data
    labels = sets.test.labels
    return StageResult({"n_test": len(labels), "majority": float((labels == 0).float().mean()), "errors": 3}, Note("x"))


def _toy_section(results, note):
    from cliplab.bench import html as H

    r = results["stages"]["toy"]
    text = note.text if note is not None else "no note"
    return H.section("toy", "Toy stage", f"{r['n_test']} test images; note: {text}", "")


@pytest.fixture
def toy_stage():
    stage = register_stage(
        Stage(
            "toy",
            _toy_run,
            title="toy stage",
            nav="Toy",
            section=_toy_section,
            headline=lambda r: [("toy majority share", r["majority"], f"{r['n_test']} images")],
            metrics=(Metric("majority", "majority"), Metric("errors", "errors", higher_is_better=False)),
        )
    )
    yield stage
    unregister_stage("toy")


def test_a_registered_stage_runs_reports_and_compares(toy_stage, tiny_model_dir, tmp_path, capsys):
    from cliplab.cli.commands import main

    assert list(STAGES)[-1] == "toy"
    out = tmp_path / "a"
    argv = ["bench", "--model", str(tiny_model_dir), "--data", "shapes:image_size=32", "--n", "16", "-q"]
    assert main([*argv, "--only", "toy", "-o", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["stages"] == ["toy"] and set(res["timings"]) >= {"toy", "report", "total"}
    toy = res["stages"]["toy"]
    assert toy["n_test"] == 16 and toy["errors"] == 3 and 0 <= toy["majority"] <= 1

    html = (out / "report.html").read_text()
    assert 'id="toy"' in html and "16 test images; note: x" in html  # its section, with its report data
    assert 'href="#toy"' in html and ">Toy<" in html  # navigation label
    assert "toy majority share" in html and "toy stage" in html  # overview card and time table

    b = json.loads((out / "results.json").read_text())
    b["stages"]["toy"]["majority"] += 0.5
    b["stages"]["toy"]["errors"] += 2
    (tmp_path / "b.json").write_text(json.dumps(b))
    capsys.readouterr()
    assert main(["bench", "--compare", str(out / "results.json"), str(tmp_path / "b.json"), "--json"]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["toy/majority"]["delta"] == pytest.approx(0.5) and rows["toy/majority"]["direction"] == "better"
    assert rows["toy/errors"]["delta"] == 2 and rows["toy/errors"]["direction"] == "worse"
    assert main(["bench", "--compare", str(out / "results.json"), str(tmp_path / "b.json")]) == 0
    table = capsys.readouterr().out
    assert re.search(r"toy/majority .*\b0\.5\d* +better", table) and re.search(r"toy/errors .* +worse", table)

    # a report drawn from the saved file has no report data: the section still renders, without it
    from cliplab.bench.report import write_report

    again = write_report(res, tmp_path / "again.html").read_text()
    assert "16 test images; note: no note" in again


def test_a_stage_without_a_section_gets_a_table_of_its_metrics(tmp_path):
    from cliplab.bench.report import write_report

    register_stage(Stage("plain", lambda ctx: {}, metrics=(Metric("{}/score", "*.score"),)))
    try:
        results = {
            "schema_version": 1,
            "cliplab_version": "0",
            "created": "2024-01-01T00:00:00+00:00",
            "model": {"spec": "m", "fingerprint": "f", "geometry": "cosine", "logit_scale": 100.0, "logit_bias": None},
            "data": {"spec": "shapes", "n": 16, "ood": []},
            "config": {"stages": ["plain"], "seeds": [1], "shots": [1]},
            "environment": {"python": "3", "platform": "p"},
            "stages": {"plain": {"left": {"score": 0.25}, "right": {"score": 0.75}}},
            "timings": {"plain": 1.0, "total": 1.0},
        }
        html = write_report(results, tmp_path / "r.html").read_text()
    finally:
        unregister_stage("plain")
    section = html.split('id="plain"')[1]
    assert "left/score" in section and "0.250" in section and "right/score" in section and "0.750" in section


def _run(**stages):
    return {"schema_version": 1, "stages": stages, "timings": {}}


def test_compare_marks_each_delta_by_its_metrics_direction():
    a = _run(
        calibration={"accuracy": 0.80, "ece": 0.10, "ece_scaled": 0.05, "aurc_msp": 0.2, "aurc_logit_norm": 0.2},
        ood={"shape": {"mean": {"msp": {"auroc": 0.70, "fpr95": 0.60}}}},
        estimate={"estimators": {"atc": {"spearman": 0.5, "mae": 0.10}}},
    )
    b = _run(
        calibration={"accuracy": 0.70, "ece": 0.04, "ece_scaled": 0.05, "aurc_msp": 0.3, "aurc_logit_norm": 0.1},
        ood={"shape": {"mean": {"msp": {"auroc": 0.75, "fpr95": 0.50}}}},
        estimate={"estimators": {"atc": {"spearman": 0.4, "mae": None}}},
    )
    rows = {r[0]: r for r in compare(a, b)}
    assert rows["calibration/ece"][3] == pytest.approx(-0.06) and rows["calibration/ece"][4] == "better"  # lower ECE
    assert rows["calibration/accuracy"][4] == "worse"
    assert rows["calibration/ece_scaled"][4] == "same"
    assert rows["calibration/aurc_msp"][4] == "worse" and rows["calibration/aurc_logit_norm"][4] == "better"
    assert rows["ood/shape/msp/auroc"][4] == "better" and rows["ood/shape/msp/fpr95"][4] == "better"
    assert rows["estimate/atc/spearman"][4] == "worse"
    assert rows["estimate/atc/mae"][3] is None and rows["estimate/atc/mae"][4] is None  # nothing to compare


def test_metric_paths_match_wildcards_in_result_order():
    m = Metric("{}/{}-shot", "results.*.*.mean")
    result = {"results": {"gda": {"1": {"mean": 0.5}, "2": {"mean": 0.6}}, "amu": {"1": {"mean": 0.4}}}, "x": 1}
    assert [(label, v) for label, v, _ in m.find(result)] == [
        ("gda/1-shot", 0.5),
        ("gda/2-shot", 0.6),
        ("amu/1-shot", 0.4),
    ]
    assert list(Metric("{}", "*recall@*").find({"skipped": "no captions"})) == []


def test_register_stage_rejects_reserved_and_bad_names():
    for bad in ("overview", "total", "a b", ""):
        with pytest.raises(ValueError):
            register_stage(Stage(bad, lambda ctx: {}))


def test_every_built_in_stage_and_metric_is_documented():
    """docs/bench-results.md has a section per built-in stage naming the last key of each of its metrics."""
    doc = (Path(__file__).parents[1] / "docs" / "bench-results.md").read_text()
    default = [name for name in STAGES if STAGES[name].default]
    assert default[:9] == list(BUILTIN_ORDER)  # the order each built-in stage declares (Stage.order)
    for name in default[:9]:
        part = doc.split(f"## `stages.{name}`", 1)
        assert len(part) == 2, f"no section for stage {name}"
        section = part[1].split("\n## ", 1)[0]
        for metric in STAGES[name].metrics:
            key = metric.path.split(".")[-1].replace("*", "")
            assert key in section, f"{name}: metric key {key!r} not documented"


def test_data_kinds_pick_by_data_spec(tiny_model):
    from cliplab.bench import BENCH_DATA, BenchContext, BenchData, register_bench_data
    from cliplab.bench.builtin_data import BuiltinWorldData, FilesData, SplitsData

    assert isinstance(BenchContext(tiny_model, "shapes:image_size=32", n=8).data, BuiltinWorldData)
    assert isinstance(BenchContext(tiny_model, "builtin:shapes", n=8).data, BuiltinWorldData)
    assert isinstance(BenchContext(tiny_model, "/data/photos", n=8).data, FilesData)
    assert isinstance(BenchContext(tiny_model, "coop:oxford_pets:root=/data", n=8).data, SplitsData)

    class Mine(BenchData):
        pass

    with BENCH_DATA.restoring():
        register_bench_data("mine", Mine, lambda spec: str(spec).startswith("mine:"))
        assert isinstance(BenchContext(tiny_model, "mine:x", n=8).data, Mine)
        assert isinstance(BenchContext(tiny_model, "shapes", n=8).data, BuiltinWorldData)
    assert "mine" not in BENCH_DATA


def test_data_kinds_are_asked_in_the_same_order_whatever_was_imported_first():
    """Data with a train split before files, even when the built-in kinds' module is imported first."""
    import subprocess
    import sys

    code = (
        "import cliplab.bench.builtin_data; from cliplab.bench.data_kinds import bench_data_factory; "
        "print(bench_data_factory('coop:oxford_pets:root=/data').__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "SplitsData"
