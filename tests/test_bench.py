import json

import pytest

from cliplab.bench import STAGES, run_bench
from helpers import make_tiny_model, write_shapes_folder


def test_bench_writes_results_with_every_stage(bench_run):
    out, results = bench_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["schema_version"] == 1
    default = {name for name, stage in STAGES.items() if stage.default}
    assert "robustness" not in default  # opt-in: fine-tunes the model
    assert set(on_disk["stages"]) == default
    timings = on_disk["timings"]
    assert set(timings) == default | {"report", "total"}
    assert timings["total"] >= sum(v for k, v in timings.items() if k != "total") - 0.01
    assert on_disk["model"]["fingerprint"] and on_disk["data"]["spec"] == "shapes:image_size=32"
    zs = on_disk["stages"]["zeroshot"]
    assert set(zs) == {"shape", "colour", "shape_colour", "pattern"} and 0 <= zs["shape"]["acc1"] <= 1
    assert zs["pattern"]["classnames"] == ["plain", "striped", "dotted", "checkered"]
    adapt = on_disk["stages"]["adapt"]
    assert set(adapt["shots"]) == {1, 2} and "gda" in adapt["results"]
    assert adapt["task"] == "pattern" and adapt["style"] == "solid"
    assert set(on_disk["stages"]["ood"]["shape"]["sets"]) == {"held-out shapes", "held-out shapes, sketch"}
    calibration = on_disk["stages"]["calibration"]
    assert "temperature" in calibration and (calibration["task"], calibration["style"]) == ("shape", "solid")
    assert {"style:outline", "style:sketch"} <= set(calibration["shifted"])  # in distribution first, then shifted
    accuracy = on_disk["stages"]["estimate"]["accuracy"]
    assert len(accuracy) == 44 and {"style:outline", "style:sketch"} <= set(accuracy)


def test_default_bench_separates_the_few_shot_methods(tmp_path):
    """builtin:shapes on its default few-shot task: zero-shot is weak, supervision helps, methods differ."""
    from cliplab import load_model

    model = load_model("builtin:shapes", device="cpu")
    res = run_bench(model, "shapes", tmp_path, n=600, only=["adapt"], seeds=(1,), shots=(16,), progress=False,
                    cache_dir=tmp_path / "c")  # fmt: skip
    adapt = res["stages"]["adapt"]
    zero = adapt["zeroshot"]
    at16 = {m: (r["16"] if "16" in r else r[16])["mean"] for m, r in adapt["results"].items() if m != "zeroshot"}
    assert zero < 0.35  # four patterns no caption names: about chance
    assert max(at16.values()) >= zero + 0.05, at16
    assert max(at16.values()) - min(at16.values()) >= 0.03, at16  # the methods do not all tie


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
    from cliplab.cli.commands import main

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


def test_bench_on_a_model_directory_and_an_image_folder(tmp_path, capsys):
    """The user path: --model DIR --data DIR (--ood-data DIR): OOD and estimation run on the folder too."""
    from cliplab.cli.commands import main

    model_dir = tmp_path / "model"
    make_tiny_model().save(model_dir)
    data = write_shapes_folder(tmp_path / "images", 60, seed=0)
    ood = write_shapes_folder(tmp_path / "novel", 20, seed=1, held_out="shapes")
    out = tmp_path / "out"
    argv = ["bench", "--model", str(model_dir), "--data", str(data), "--ood-data", str(ood), "-o", str(out)]
    assert main([*argv, "--seeds", "1", "--n", "80", "-q", "--cache-dir", str(tmp_path / "cache")]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["data"] == {"spec": str(data), "kind": "class folder", "n": 80, "ood": [str(ood)]}
    assert res["timings"]["load_model"] > 0 and res["timings"]["total"] >= res["timings"]["load_model"]
    stages = res["stages"]
    assert stages["zeroshot"]["classes"]["n"] == 60
    assert stages["retrieval"] == {"skipped": "dataset 'images' has no captions"}
    ood_sets = stages["ood"]["classes"]["sets"]
    assert list(ood_sets) == ["novel"] and "mahalanobis" in ood_sets["novel"]
    assert len(stages["estimate"]["accuracy"]) == 42  # 14 corruptions × severities 1, 3, 5 of the folder
    assert stages["calibration"]["n_val"] + stages["calibration"]["n_test"] == 60
    html = (out / "report.html").read_text()
    assert "Not run: dataset &#x27;images&#x27; has no captions" in html
    assert 'id="estimate"' in html and "novel" in html

    # without --ood-data the OOD stage says how to run it
    argv = [*argv[:-4], "-o", str(tmp_path / "o2"), "--only", "ood", "-q", "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    res = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert "--ood-data" in res["stages"]["ood"]["skipped"]


def test_corrupted_dataset_is_deterministic_and_keeps_labels(image_folder):
    import numpy as np

    from cliplab.data import Corrupted, ImageFolder

    ds = ImageFolder(image_folder)
    noisy = Corrupted(ds, "gaussian_noise", 5, size=16)
    again = Corrupted(ds, "gaussian_noise", 5, size=16)
    a, b, clean = np.asarray(noisy.image(2)), np.asarray(again.image(2)), ds.image(2)
    assert np.array_equal(a, b)
    assert min(a.shape[:2]) == 16 and min(clean.size) > 16  # down-scaled before corrupting
    resized = np.asarray(clean.resize((a.shape[1], a.shape[0]), 3), dtype=float)
    assert np.abs(a.astype(float) - resized).mean() > 10  # visibly noisy
    assert np.array_equal(noisy.labels, ds.labels) and noisy.classnames == ds.classnames
    assert noisy.fingerprint() == again.fingerprint() != Corrupted(ds, "gaussian_noise", 4).fingerprint()
    with pytest.raises(ValueError, match="unknown corruption"):
        Corrupted(ds, "rain", 3)


def test_every_results_key_is_documented(bench_run):
    """docs/bench-results.md names every key a run writes (top level, model/data/config, stage fields)."""
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "bench-results.md").read_text()
    _, results = bench_run
    names = set(results)
    for group in ("model", "data", "config", "environment", "timings"):
        names |= set(results[group])
    stages = results["stages"]
    names |= set(stages["adapt"]) | set(stages["retrieval"]) | set(stages["calibration"]) | set(stages["estimate"])
    names |= set(stages["ood"]["shape"]) | set(stages["zeroshot"]["shape"])
    names |= set(stages["estimate"]["estimators"]) | set(next(iter(stages["estimate"]["estimators"].values())))
    names |= set(stages["ood"]["shape"]["methods"]) | set(stages["adapt"]["base_to_new"])
    names -= set(STAGES)
    import re

    documented = set()
    for span in re.findall(r"`([^`]+)`", doc):
        for stem, options in re.findall(r"([\w@.]+)\{([\d,]+)\}", span):  # recall@{1,5,10}
            documented |= {stem.split(".")[-1] + o for o in options.split(",")}
        documented |= set(re.findall(r"[A-Za-z_][\w@+]*", span))
    undocumented = sorted(names - documented)
    assert not undocumented, f"keys missing from docs/bench-results.md: {undocumented}"


def test_report_thumbnails_are_small():
    """Sample thumbnails: small images stay lossless PNG; photos are shrunk to 192 px JPEGs."""
    import base64
    import io

    from PIL import Image

    from cliplab.bench.html import image_data_uri

    small = image_data_uri(Image.new("RGB", (64, 64), "red"))
    assert small.startswith("data:image/png;base64,")
    photo = image_data_uri(Image.new("RGBA", (1600, 1200), "blue"))
    assert photo.startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(photo.split(",", 1)[1])))
    assert decoded.size == (192, 144)


def _replace_floats(obj, value):
    """A copy of a results dict with every float (every metric, curve point, timing) replaced by ``value``."""
    if isinstance(obj, dict):
        return {k: _replace_floats(v, value) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_floats(v, value) for v in obj]
    return value if isinstance(obj, float) else obj


def _visible_text(html):
    import re

    html = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    html = re.sub(r'src="data:[^"]*"', "", html)
    return re.sub(r"<[^>]+>", " ", html)


@pytest.mark.parametrize("missing", [None, float("nan")], ids=["None", "NaN"])
def test_report_renders_missing_numbers_as_a_dash(bench_run, tmp_path, missing):
    """results.json stores NaN (e.g. Spearman ρ of constant accuracies) as null: every number the report formats
    (tables, cards, titles, legends, captions, figure limits) may be None, or NaN in memory, and renders as "–"."""
    import re

    from cliplab.bench.report import write_report

    out, _ = bench_run
    results = json.loads((out / "results.json").read_text())
    broken = _replace_floats(results, missing)
    html = write_report(broken, tmp_path / "report.html").read_text()
    for anchor in ("overview", "zeroshot", "adapt", "retrieval", "ood", "calibration", "estimate"):
        assert f'id="{anchor}"' in html
    text = _visible_text(html)
    assert not re.search(r"\b(nan|None|inf)\b", text, re.I)
    assert text.count("–") > 50
    assert html.count("data:image/png;base64,") >= 6  # the figures are still drawn


def test_report_with_constant_shifted_sets(bench_run, tmp_path):
    """The real case: every shifted set has the same accuracy, so R² and Spearman ρ are NaN (null in results.json)."""
    from cliplab.bench.report import write_report

    out, _ = bench_run
    results = json.loads((out / "results.json").read_text())
    est = results["stages"]["estimate"]
    est["accuracy"] = dict.fromkeys(est["accuracy"], 0.5)
    for e in est["estimators"].values():
        e["r2"] = e["spearman"] = None
    html = write_report(results, tmp_path / "report.html").read_text()
    section = _visible_text(html.split('id="estimate"')[1])
    assert "nan" not in section.lower()
    first = next(iter(est["estimators"]))
    from cliplab.bench.figures import name

    row = section.split(name(first), 1)[1].split()[:2]  # the R² and ρ cells of the first estimator
    assert row == ["–", "–"]


def test_compare_with_missing_numbers(bench_run):
    from cliplab.bench.comparison import compare

    out, _ = bench_run
    a = json.loads((out / "results.json").read_text())
    rows = {r[0]: r for r in compare(a, _replace_floats(a, None))}
    assert rows["zeroshot/shape/acc1"][2] is None and rows["zeroshot/shape/acc1"][3] is None
    rows = {r[0]: r for r in compare(a, _replace_floats(a, float("nan")))}
    assert rows["calibration/ece"][3] is None
