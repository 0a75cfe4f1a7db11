"""Embedding geometry: each formula against an independent NumPy computation; the default bench has the probes
and geometry sections."""

import numpy as np
import pytest
import torch


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(30, 6)) + np.array([2.0, 0, 0, 0, 0, 0])
    txt = rng.normal(size=(45, 6)) - np.array([0, 1.5, 0, 0, 0, 0])
    return img, txt


def test_modality_gap_matches_numpy(features):
    from cliplab.assess import modality_gap

    img, txt = features
    x, y = _unit(img), _unit(txt)
    gap_vec = x.mean(0) - y.mean(0)
    z = np.concatenate([x, y])
    zc = z - z.mean(0)
    direction = gap_vec / np.linalg.norm(gap_vec)
    share = np.var(zc @ direction) / np.trace(np.cov(zc.T, bias=True))
    out = modality_gap(img, txt)
    assert out["gap"] == pytest.approx(np.linalg.norm(gap_vec), rel=1e-9)
    assert out["gap_variance_share"] == pytest.approx(share, rel=1e-9)
    assert out["chance_share"] == pytest.approx(1 / 6)
    assert out["gap_variance_share"] > out["chance_share"]  # two cones apart: more variance along the gap
    with pytest.raises(ValueError, match="6-d but text features 5-d"):
        modality_gap(img, txt[:, :5])


def test_alignment_and_uniformity_match_numpy(features):
    from cliplab.assess import alignment, uniformity

    img, txt = features
    x, y = _unit(img), _unit(txt[:30])
    assert alignment(img, txt[:30]) == pytest.approx(np.mean(np.sum((x - y) ** 2, 1)), rel=1e-9)
    assert alignment(img, txt[:30], alpha=1) == pytest.approx(np.mean(np.linalg.norm(x - y, axis=1)), rel=1e-9)
    terms = [np.exp(-2 * np.sum((x[i] - x[j]) ** 2)) for i in range(30) for j in range(30) if i != j]
    assert uniformity(img) == pytest.approx(np.log(np.mean(terms)), rel=1e-9)
    # points spread over the sphere are more uniform (lower) than a tight cluster
    rng = np.random.default_rng(1)
    assert uniformity(rng.normal(size=(200, 6))) < uniformity(rng.normal(size=(200, 6)) * 0.05 + 1)


def test_effective_rank_matches_numpy_and_its_bounds():
    from cliplab.assess import effective_rank

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)) * np.array([5, 3, 1, 1, 0.5, 0.2, 0.1, 0.1])
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = s / s.sum()
    assert effective_rank(x) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    rank_one = np.outer(rng.normal(size=20), rng.normal(size=5))
    assert effective_rank(rank_one, center=False) == pytest.approx(1.0, abs=1e-9)
    assert effective_rank(np.eye(7), center=False) == pytest.approx(7.0, rel=1e-9)


def test_centring_closes_the_gap_and_geometry_report(features):
    from cliplab.assess import center_modalities, embedding_geometry, modality_gap
    from cliplab.metrics import retrieval

    img, txt = features
    xc, yc = center_modalities(img, txt)
    assert modality_gap(xc, yc)["gap"] < 0.2 * modality_gap(img, txt)["gap"]
    np.testing.assert_allclose(np.linalg.norm(xc.numpy(), axis=1), 1.0, atol=1e-6)
    t2i = np.arange(45) % 30
    out = embedding_geometry(img, txt, t2i)
    assert set(out) >= {"gap", "alignment", "uniformity", "effective_rank", "retrieval", "gap_after_centring"}
    before = retrieval(torch.tensor(_unit(img)).float(), torch.tensor(_unit(txt)).float(), torch.tensor(t2i))
    assert out["retrieval"]["raw"]["image_retrieval_recall@1"] == pytest.approx(before["image_retrieval_recall@1"])
    assert out["alignment"] == pytest.approx(np.mean(np.sum((_unit(img)[t2i] - _unit(txt)) ** 2, 1)), rel=1e-5)


def test_default_bench_has_probes_and_geometry_sections(tmp_path, tiny_model):
    from cliplab.bench import STAGES, run_bench

    assert {"probes", "geometry"} <= {name for name in STAGES if STAGES[name].default}
    # the default run is every registered stage; run just these (and retrieval) on the tiny model to stay fast
    results = run_bench(
        tiny_model, "shapes:image_size=32", tmp_path, n=48, only=["retrieval", "probes", "geometry"],
        cache_dir=tmp_path / "cache", progress=False,
    )  # fmt: skip
    probes, geometry = results["stages"]["probes"], results["stages"]["geometry"]
    assert set(probes["by_type"]) == {"swap_att", "swap_obj", "swap_rel", "replace_obj", "replace_att", "add_obj",
                                      "shuffle"}  # fmt: skip
    assert 0 <= probes["macro_accuracy"] <= 1 and geometry["gap"] >= 0
    html = (tmp_path / "report.html").read_text()
    assert 'id="probes"' in html and 'id="geometry"' in html
    assert "Compositional probes" in html and "Embedding geometry" in html


def test_probes_stage_on_a_caption_file(tmp_path, tiny_model):
    from cliplab.bench import run_bench
    from cliplab.data import shapes

    ds = shapes("test", n=12, image_size=32, objects=2)
    rows = ["image,caption"]
    for i in range(12):
        ds.image(i).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{ds.captions[3 * i]}")
    (tmp_path / "caps.csv").write_text("\n".join(rows) + "\n")
    results = run_bench(tiny_model, str(tmp_path / "caps.csv"), tmp_path / "out", only=["probes", "geometry"],
                        cache_dir=tmp_path / "cache", progress=False)  # fmt: skip
    r = results["stages"]["probes"]
    assert r["source"] == "rewritten captions" and "shuffle" in r["by_type"] and r["n_images"] == 12
    assert "gap" in results["stages"]["geometry"]
