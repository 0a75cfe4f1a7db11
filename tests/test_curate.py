"""cliplab curate: every filter, the report lists every removed pair with its reason, idempotent on its own
output, nothing half-written; the noisy built-in world writer; the CLI."""

import csv
import json

import numpy as np
import pytest

from cliplab.data.shapes_world import SHAPES


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return [(r["image"], r["caption"]) for r in csv.DictReader(fh)]


@pytest.fixture
def noisy(tmp_path):
    from cliplab.curate import write_noisy_world

    path = write_noisy_world(tmp_path / "raw", n=40, seed=0, image_size=32, unreadable=0.05, short=0.05, foreign=0.05)
    return path, json.loads((tmp_path / "raw" / "noise.json").read_text())


def test_noisy_world_writer(noisy):
    path, noise = noisy
    rows = _rows(path)
    assert noise["n_pairs"] == len(rows) and noise["n_images"] == len({r[0] for r in rows})
    assert noise["concept_images"] == 20  # half of the 40 distinct images show the concept shape first
    for i in noise["rows"]["short"]:
        assert rows[i][1] == "image"
    assert all(rows[i][0].startswith("images/dup") for i in noise["rows"]["duplicate"])
    assert noise["rows"]["mismatched"] and noise["rows"]["unreadable"]


def test_rule_filters_report_every_removed_pair_and_are_idempotent(noisy, tmp_path):
    from cliplab.curate import CurateConfig, curate_dataset, report_path

    path, noise = noisy
    cfg = CurateConfig(min_words=2, min_latin=0.9, concepts=list(SHAPES), balance_t=10, seed=1)
    report = curate_dataset(path, tmp_path / "out.csv", cfg, progress=False)
    rows = _rows(path)
    removed = {r["row"]: r for r in report["removed"]}
    kept = _rows(tmp_path / "out.csv")
    # every input pair is either kept or listed with a filter and a reason
    assert len(kept) + len(removed) == len(rows) == report["counts"]["input_pairs"]
    assert all(r["reason"] and r["filter"] in ("unreadable", "length", "language", "balance") for r in removed.values())
    assert sum(report["counts"]["by_filter"].values()) == len(removed)
    for i in noise["rows"]["unreadable"]:
        assert removed[i]["filter"] == "unreadable"
    for i in noise["rows"]["short"]:
        assert i in removed  # one word: the length rule (or an earlier filter)
    for i in set(noise["rows"]["foreign"]) - set(noise["rows"]["unreadable"]):
        assert removed[i]["filter"] in ("language", "length")  # a Chinese caption is also one "word"
    assert "language" in report["counts"]["by_filter"]
    # kept rows are the input rows not removed, in order, with paths relative to the output folder
    expected = [rows[i] for i in range(len(rows)) if i not in removed]
    assert [c for _, c in kept] == [c for _, c in expected]
    assert all((tmp_path / p).resolve() == (path.parent / q).resolve() for (p, _), (q, _) in zip(kept, expected))
    assert json.loads(report_path(tmp_path / "out.csv").read_text())["counts"] == report["counts"]

    again = curate_dataset(tmp_path / "out.csv", tmp_path / "out2.csv", cfg, progress=False)
    assert again["counts"]["removed_pairs"] == 0
    assert (tmp_path / "out2.csv").read_text() == (tmp_path / "out.csv").read_text()
    # in place, too
    curate_dataset(tmp_path / "out.csv", tmp_path / "out.csv", cfg, progress=False)
    assert (tmp_path / "out.csv").read_text() == (tmp_path / "out2.csv").read_text()


def test_balancing_follows_metaclip_probabilities(tmp_path):
    from cliplab.curate.filters import balance

    captions = [f"a circle number {i}" for i in range(2000)] + [f"a square {i}" for i in range(30)] + ["a cat"]
    keys = [f"k{i}" for i in range(len(captions))]
    removed, counts = balance(captions, keys, ["circle", "square"], t=100, seed=0)
    assert counts == {"circle": 2000, "square": 30}
    kept_circles = sum(i not in removed for i in range(2000))
    # Binomial(2000, 100/2000): mean 100, sd ≈ 9.7
    assert 60 < kept_circles < 140
    assert all(i not in removed for i in range(2000, 2030))  # under t: always kept
    assert "no concept" in removed[2030]
    again, _ = balance(captions, keys, ["circle", "square"], t=100, seed=0)
    assert again == removed  # the draw depends on seed and content only


def test_model_filters_clip_score_and_dedup(noisy, tmp_path, tiny_model):
    from cliplab.curate import CurateConfig, curate_dataset

    path, noise = noisy
    cfg = CurateConfig(clip_top_fraction=0.8, dedup="images", dedup_threshold=0.995)
    report = curate_dataset(path, tmp_path / "out.jsonl", cfg, model=tiny_model, progress=False)
    removed = {r["row"]: r for r in report["removed"]}
    by = report["counts"]["by_filter"]
    alive = report["counts"]["input_pairs"] - by.get("unreadable", 0)
    # the top 80% of the readable pairs by CLIP score survive that filter
    assert by["clip_score"] == pytest.approx(0.2 * alive, abs=2)
    # near-identical copies of an image (±2 grey levels) come after their original: dedup (or an earlier filter)
    for i in noise["rows"]["duplicate"]:
        assert i in removed
    dup_reasons = [r["reason"] for r in removed.values() if r["filter"] == "dedup"]
    assert dup_reasons and all("near-duplicate image of row" in r for r in dup_reasons)
    assert report["resolved"]["clip_threshold"] < 1
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == report["counts"]["kept_pairs"] and set(json.loads(lines[0])) == {"image", "caption"}

    again = curate_dataset(tmp_path / "out.jsonl", tmp_path / "out2.jsonl", cfg, model=tiny_model, progress=False)
    assert again["counts"]["removed_pairs"] == 0  # the recorded threshold is reused: idempotent
    assert (tmp_path / "out2.jsonl").read_text() == (tmp_path / "out.jsonl").read_text()


def test_near_duplicates_finds_every_copy_beyond_k():
    from cliplab.curate.filters import near_duplicates

    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 8))
    feats = np.concatenate([base + 1e-4 * rng.normal(size=(40, 8)), rng.normal(size=(10, 8))])
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    found = near_duplicates(feats, 0.99, k=4)  # 40 copies, only 4 neighbours asked for at first
    sims = feats @ feats.T
    expected = {i for i in range(1, 50) if sims[i, 0] >= 0.99}
    assert set(found) == expected and all("row 0" in found[i] for i in expected)


def test_nothing_half_written(noisy, tmp_path, monkeypatch):
    from cliplab.curate import CurateConfig, curate_dataset, pipeline, report_path

    path, _ = noisy
    out = tmp_path / "out.csv"
    curate_dataset(path, out, CurateConfig(min_words=2), progress=False)
    before, report_before = out.read_text(), report_path(out).read_text()
    listing = sorted(p.name for p in tmp_path.iterdir())

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    # fails after the curated text went to its temporary file, while the report is being written
    monkeypatch.setattr("cliplab._io.to_jsonable", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        curate_dataset(path, out, CurateConfig(min_words=3), progress=False)
    monkeypatch.undo()
    assert out.read_text() == before and report_path(out).read_text() == report_before

    monkeypatch.setattr(pipeline, "_features", lambda *a, **k: boom())
    with pytest.raises(RuntimeError, match="disk full"):
        curate_dataset(path, tmp_path / "new.csv", CurateConfig(clip_threshold=0.1), model=object(), progress=False)
    assert not (tmp_path / "new.csv").exists() and not report_path(tmp_path / "new.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no temporary files left behind


def test_curate_errors(noisy, tmp_path):
    from cliplab.curate import CurateConfig, curate_dataset

    path, _ = noisy
    with pytest.raises(ValueError, match="must be .csv, .tsv or .jsonl"):
        curate_dataset(path, tmp_path / "out.txt", CurateConfig(), progress=False)
    with pytest.raises(FileNotFoundError, match="caption file not found"):
        curate_dataset(tmp_path / "nope.csv", tmp_path / "out.csv", CurateConfig(), progress=False)
    with pytest.raises(ValueError, match="need a model"):
        curate_dataset(path, tmp_path / "out.csv", CurateConfig(dedup="pairs"), progress=False)
    with pytest.raises(ValueError, match="not both"):
        CurateConfig(clip_threshold=0.2, clip_top_fraction=0.3)
    with pytest.raises(ValueError, match="concept list and its threshold"):
        CurateConfig(concepts=["cat"])


def test_cli_curate_json(noisy, tmp_path, tiny_model_dir, capsys):
    from cliplab.cli.commands import main

    path, _ = noisy
    out = tmp_path / "cli.csv"
    args = ["--min-words", "2", "--model", str(tiny_model_dir), "--clip-top", "0.9"]
    args += ["--concepts", ",".join(SHAPES), "--balance-t", "15", "--json", "--quiet"]
    code = main(["curate", str(path), "-o", str(out), *args])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kept_pairs"] == len(_rows(out)) and summary["report"].endswith("cli.report.json")
    assert set(summary["by_filter"]) <= {"unreadable", "length", "language", "clip_score", "balance"}
    assert main(["curate", str(path), "-o", str(out), "--dedup", "images", "--quiet"]) == 2  # needs --model


def _write_wds(root, n=12, seed=0):
    """A retrieval webdataset in CLIP_benchmark's layout: test/0.tar with sNNN.png + sNNN.txt, nshards.txt."""
    import io
    import tarfile

    from cliplab.data import shapes

    ds = shapes("test", n=n, seed=seed, image_size=32, objects="mixed")
    (root / "test").mkdir(parents=True)
    with tarfile.open(root / "test" / "0.tar", "w") as tf:
        for i in range(n):
            buf = io.BytesIO()
            ds.image(i).save(buf, format="PNG")
            caps = ds.captions[3 * i : 3 * i + 3] + (["x"] if i % 4 == 0 else [])  # some one-word captions
            for name, data in ((f"s{i:07d}.png", buf.getvalue()), (f"s{i:07d}.txt", "\n".join(caps).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    (root / "test" / "nshards.txt").write_text("1\n")
    (root / "dataset_type.txt").write_text("retrieval\n")
    return root


def test_webdataset_input_gives_shards_and_is_idempotent(tmp_path):
    from cliplab.curate import CurateConfig, curate_dataset, report_path
    from cliplab.data import load_dataset

    src = _write_wds(tmp_path / "wds")
    cfg = CurateConfig(min_words=2, concepts=list(SHAPES), balance_t=3, seed=0)
    report = curate_dataset(f"wds:{src}", tmp_path / "out", cfg, progress=False)
    assert report["counts"]["by_filter"]["length"] == 3  # the "x" captions
    out = load_dataset(f"wds:{tmp_path / 'out'}")
    assert len(out.captions) == report["counts"]["kept_pairs"] and len(out) == report["counts"]["kept_images"]
    assert report_path(tmp_path / "out").is_file()
    original = load_dataset(f"wds:{src}")
    first = original.keys.index(out.keys[0])
    assert np.array_equal(np.asarray(out.image(0)), np.asarray(original.image(first)))  # the image bytes, untouched
    again = curate_dataset(f"wds:{tmp_path / 'out'}", tmp_path / "out2", cfg, progress=False)
    assert again["counts"]["removed_pairs"] == 0
    assert (tmp_path / "out2" / "test" / "0.tar").read_bytes() == (tmp_path / "out" / "test" / "0.tar").read_bytes()
    with pytest.raises(ValueError, match="written as shards into a directory"):
        curate_dataset(f"wds:{src}", tmp_path / "out.csv", cfg, progress=False)


def test_balancing_with_caller_counts_of_zero_keeps_the_pairs():
    """Caller-supplied counts (re-applying the raw data's) may be 0 for a concept: p = t / max(0, t) = 1, never a
    division by zero (issue #26); negative counts are refused."""
    from cliplab.curate.filters import balance

    captions = ["a circle", "a square", "a circle and a square"]
    keys = ["a", "b", "c"]
    removed, counts = balance(captions, keys, ["circle", "square"], t=1, seed=0, counts={"circle": 0, "square": 0})
    assert removed == {} and counts == {"circle": 0, "square": 0}
    removed, _ = balance(captions, keys, ["circle", "square"], t=1, seed=0, counts={"square": 0})  # circle: absent
    assert removed == {}
    with pytest.raises(ValueError, match="counts"):
        balance(captions, keys, ["circle"], t=1, counts={"circle": -1})
