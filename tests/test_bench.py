import json

import pytest

from cliplab.bench import STAGES, run_bench
from conftest import make_tiny_model


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    model = make_tiny_model()
    # tiny everything: 32-px images, few shots and seeds
    results = run_bench(
        model, "shapes:image_size=32", out, n=96, cache_dir=out / "cache", progress=False, seeds=(1,), shots=(1, 2)
    )
    return out, results


def test_bench_writes_results_with_every_stage(bench_run):
    out, results = bench_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["schema_version"] == 1
    assert set(on_disk["stages"]) == set(STAGES)
    assert set(on_disk["timings"]) == set(STAGES) | {"total"}
    assert on_disk["model"]["fingerprint"] and on_disk["data"]["spec"] == "shapes:image_size=32"
    zs = on_disk["stages"]["zeroshot"]
    assert set(zs) == {"shape", "colour", "shape_colour"} and 0 <= zs["shape"]["acc1"] <= 1
    adapt = on_disk["stages"]["adapt"]
    assert set(adapt["shots"]) == {1, 2} and "gda" in adapt["results"]
    assert "held-out shapes" in on_disk["stages"]["ood"]["shape"]["sets"]
    assert "temperature" in on_disk["stages"]["calibration"]
    assert len(on_disk["stages"]["estimate"]["accuracy"]) >= 3


def test_report_has_every_section_and_embedded_figures(bench_run):
    out, _ = bench_run
    html = (out / "report.html").read_text()
    for anchor in ("overview", "zeroshot", "adapt", "retrieval", "ood", "calibration", "estimate"):
        assert f'id="{anchor}"' in html
    assert html.count("data:image/png;base64,") >= 6
    assert "http://" not in html and "https://" not in html  # self-contained


def test_bench_only_and_unknown_stage(tmp_path):
    model = make_tiny_model()
    res = run_bench(
        model, "shapes:image_size=32", tmp_path, n=40, only=["zeroshot"], progress=False, cache_dir=tmp_path / "c"
    )
    assert list(res["stages"]) == ["zeroshot"]
    with pytest.raises(ValueError, match="unknown bench stage"):
        run_bench(model, "shapes", tmp_path, only=["nope"])


def test_compare_two_runs(bench_run, tmp_path, capsys):
    from cliplab.cli.main import main

    out, results = bench_run
    b = json.loads((out / "results.json").read_text())
    b["stages"]["zeroshot"]["shape"]["acc1"] += 0.25
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert main(["bench", "--compare", str(out / "results.json"), str(tmp_path / "b.json"), "--json"]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["zeroshot/shape/acc1"]["delta"] == pytest.approx(0.25)
    (tmp_path / "bad.json").write_text("{}")
    assert main(["bench", "--compare", str(out / "results.json"), str(tmp_path / "bad.json")]) == 2
    assert "not a cliplab bench results.json" in capsys.readouterr().err
